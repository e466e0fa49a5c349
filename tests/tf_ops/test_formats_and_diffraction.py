"""Layout transforms (channel, flat, grid) and pad_and_diffract."""
import numpy as np
import pytest
import tensorflow as tf

from ptycho import physics
from ptycho.tf import ops as tf_ops

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_layout_round_trips_are_exact(gridsize):
    channels = gridsize**2
    x = RNG.random((3, 5, 5, channels)).astype(np.float32)
    flat = tf_ops.channels_to_flat(x)
    grid = tf_ops.channels_to_grid(x, gridsize)
    assert flat.shape == (3 * channels, 5, 5, 1)
    assert grid.shape == (3, gridsize, gridsize, 5, 5, 1)
    np.testing.assert_array_equal(tf_ops.flat_to_channels(flat, channels), x)
    np.testing.assert_array_equal(tf_ops.grid_to_channels(grid), x)


def test_flat_index_is_b_times_c_plus_c():
    x = RNG.random((2, 4, 4, 4)).astype(np.float32)
    flat = tf_ops.channels_to_flat(x).numpy()
    for b in range(2):
        for c in range(4):
            np.testing.assert_array_equal(flat[b * 4 + c, ..., 0], x[b, ..., c])


def test_layouts_work_with_dynamic_batch():
    spec = [tf.TensorSpec([None, 4, 4, 9])]
    def round_trip(x):
        channels = tf_ops.flat_to_channels(tf_ops.channels_to_flat(x), 9)
        return tf_ops.grid_to_channels(tf_ops.channels_to_grid(channels, 3))

    graph = tf.function(round_trip, input_signature=spec)
    x = RNG.random((2, 4, 4, 9)).astype(np.float32)
    np.testing.assert_array_equal(graph(x), x)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: tf_ops.channels_to_grid(np.zeros((1, 4, 4, 3)), 2), "2x2 grid"),
        (lambda: tf_ops.flat_to_channels(np.zeros((6, 4, 4, 1)), 4), "multiple of C=4"),
        (lambda: tf_ops.flat_to_channels(np.zeros((4, 4, 4, 2)), 4), r"\(B\*C, N, N, 1\)"),
        (lambda: tf_ops.channels_to_flat(np.zeros((4, 4, 4))), r"\(B, N, N, C\)"),
        (lambda: tf_ops.grid_to_channels(np.zeros((1, 2, 3, 4, 4, 1))), r"\(B, g, g, N, N, 1\)"),
    ],
)
def test_layout_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_pad_and_diffract_matches_reference_and_centres_zero_frequency():
    psi = (RNG.normal(size=(2, 8, 8, 3)) + 1j * RNG.normal(size=(2, 8, 8, 3))).astype(np.complex64)
    amplitude = tf_ops.pad_and_diffract(psi).numpy()
    assert amplitude.dtype == np.float32 and amplitude.shape == psi.shape
    reference = np.moveaxis(physics.far_field_amplitude(np.moveaxis(psi, -1, 1)), 1, -1)
    np.testing.assert_allclose(amplitude, reference, rtol=1e-6)

    flat_wave = np.ones((1, 8, 8, 1), np.complex64)
    spot = tf_ops.pad_and_diffract(flat_wave).numpy()[0, ..., 0]
    assert spot[4, 4] == pytest.approx(8.0)  # sqrt(|64|^2 / 64)
    assert np.count_nonzero(spot) == 1


def test_pad_and_diffract_gradient_is_finite_at_zero_field():
    psi = tf.Variable(np.zeros((1, 8, 8, 1), np.complex64))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf_ops.pad_and_diffract(psi) ** 2)
    assert np.all(np.isfinite(tape.gradient(loss, psi).numpy()))


def test_pad_and_diffract_compiles_under_jit():
    psi = (RNG.normal(size=(2, 8, 8, 4)) + 1j * RNG.normal(size=(2, 8, 8, 4))).astype(np.complex64)
    compiled = tf.function(tf_ops.pad_and_diffract, jit_compile=True)
    np.testing.assert_allclose(compiled(psi), tf_ops.pad_and_diffract(psi), rtol=1e-6)


def test_pad_and_diffract_rejects_real_input():
    with pytest.raises(ValueError, match="complex"):
        tf_ops.pad_and_diffract(np.ones((1, 8, 8, 1), np.float32))

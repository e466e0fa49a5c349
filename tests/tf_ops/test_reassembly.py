"""Patch extraction, reassembly inside the forward path, and global stitching."""
import numpy as np
import pytest
import tensorflow as tf

from ptycho import stitching
from ptycho.tf import ops as tf_ops, reassembly as tf_reassembly

RNG = np.random.default_rng(11)
N, M = 12, 28


def _complex(shape):
    return (RNG.random(shape) * np.exp(1j * RNG.uniform(-3, 3, shape))).astype(np.complex64)


@pytest.mark.parametrize("use_xla", [True, False])
def test_extract_integer_offsets_is_a_plain_crop(use_xla):
    canvas = _complex((2, M, M, 1))
    coords = RNG.integers(-5, 6, size=(2, 1, 2, 4)).astype(np.float32)
    patches = tf_reassembly.extract_patches_at_offsets(canvas, coords, N, use_xla=use_xla).numpy()
    start = (M - N) // 2
    for b in range(2):
        for c in range(4):
            dx, dy = coords[b, 0, :, c].astype(int)
            crop = canvas[b, start - dy : start - dy + N, start - dx : start - dx + N, 0]
            np.testing.assert_array_equal(patches[b, ..., c], crop)


@pytest.mark.parametrize("use_xla", [True, False])
def test_reassemble_places_patch_at_its_position(use_xla):
    patches = np.zeros((1, N, N, 1), np.complex64)
    patches[0, N // 2, N // 2, 0] = 2 + 1j
    coords = np.array([[[[-3.0], [4.0]]]], np.float32)  # coords_relative: patch sits at (+3, -4)
    canvas = tf_reassembly.reassemble_patches(patches, coords, M, use_xla=use_xla).numpy()[0, ..., 0]
    assert canvas.dtype == np.complex64
    assert np.argwhere(canvas != 0).tolist() == [[M // 2 - 4, M // 2 + 3]]
    assert canvas[M // 2 - 4, M // 2 + 3] == pytest.approx(2 + 1j)


def test_reassemble_normalises_by_overlap_and_leaves_uncovered_zero():
    patches = np.full((1, N, N, 4), 1.5 - 0.5j, np.complex64)
    coords = RNG.uniform(-4, 4, size=(1, 1, 2, 4)).astype(np.float32)
    canvas = tf_reassembly.reassemble_patches(patches, coords, M + 10).numpy()[0, ..., 0]
    count = tf_reassembly.reassemble_patches(np.ones((1, N, N, 4), np.float32), coords, M + 10)
    assert np.all(np.isfinite(canvas))
    covered = count.numpy()[0, ..., 0] > 0.999
    np.testing.assert_allclose(canvas[covered], 1.5 - 0.5j, atol=1e-5)
    assert canvas[0, 0] == 0 and canvas[-1, -1] == 0


def test_reassemble_and_extract_agree_between_paths_and_compile_with_dynamic_batch():
    patches = _complex((3, N, N, 4))
    coords = RNG.uniform(-4, 4, size=(3, 1, 2, 4)).astype(np.float32)
    spec = [tf.TensorSpec([None, N, N, 4], tf.complex64), tf.TensorSpec([None, 1, 2, 4])]

    def forward(use_xla):
        def step(p, c):
            canvas = tf_reassembly.reassemble_patches(p, c, M, use_xla=use_xla)
            return tf_reassembly.extract_patches_at_offsets(canvas, c, N, use_xla=use_xla)

        return tf.function(step, input_signature=spec, jit_compile=use_xla)

    xla, projective = forward(True)(patches, coords), forward(False)(patches, coords)
    assert xla.shape == (3, N, N, 4)
    np.testing.assert_allclose(xla.numpy(), projective.numpy(), atol=1e-5)


@pytest.mark.parametrize(
    ("call", "data_shape", "coords_shape", "size", "match"),
    [
        ("reassemble", (2, N, N, 4), (3, 1, 2, 4), M, "batch"),
        ("reassemble", (2, N, N, 4), (2, 2, 4), M, r"\(B, 1, 2, C\)"),
        ("reassemble", (2, N, N, 4), (2, 1, 2, 4), N - 1, "smaller"),
        ("extract", (2, M, M, 2), (2, 1, 2, 4), N, r"\(B, M, M, 1\)"),
        ("extract", (2, M, M, 1), (2, 1, 2, 4), M + 1, "smaller"),
    ],
)
def test_reassembly_errors(call, data_shape, coords_shape, size, match):
    function = {
        "reassemble": tf_reassembly.reassemble_patches,
        "extract": tf_reassembly.extract_patches_at_offsets,
    }[call]
    with pytest.raises(ValueError, match=match):
        function(_complex(data_shape), np.zeros(coords_shape, np.float32), size)


def test_required_canvas_size():
    assert stitching.required_canvas_size(64, np.array([[3.2, -7.0], [0.0, 1.0]])) == 78
    assert stitching.required_canvas_size(64, np.array([[0.5, 0.0]])) == 66
    assert stitching.required_canvas_size(63, np.zeros((1, 2))) == 64
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        stitching.required_canvas_size(64, np.zeros((3,)))


def _dense_stitch(patches, offsets, size):
    """Oracle: pad every patch to the canvas, translate it, sum, divide by the count."""
    start = (size - patches.shape[1]) // 2
    padded = np.zeros((len(patches), size, size, 2), np.complex64)
    padded[:, start : start + patches.shape[1], start : start + patches.shape[1], 0] = patches
    padded[:, start : start + patches.shape[1], start : start + patches.shape[1], 1] = 1
    moved = tf_ops.translate(padded, offsets.astype(np.float32), use_xla=False).numpy().sum(0)
    return moved[..., 0] / np.maximum(moved[..., 1].real, tf_reassembly.COUNT_FLOOR)


@pytest.mark.parametrize("use_xla", [True, False])
def test_reassemble_by_offsets_matches_dense_oracle_and_streams(use_xla):
    patches = _complex((40, N, N))
    offsets = RNG.uniform(-9, 9, size=(40, 2))
    offsets[:5] = np.round(offsets[:5])
    whole = tf_reassembly.reassemble_by_offsets(patches, offsets, use_xla=use_xla)
    streamed = tf_reassembly.reassemble_by_offsets(patches, offsets, chunk_size=7, use_xla=use_xla)
    size = stitching.required_canvas_size(N, offsets)
    assert whole.shape == (size, size) and whole.dtype == np.complex64
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    np.testing.assert_allclose(whole, _dense_stitch(patches, offsets, size), atol=1e-5)


def test_reassemble_by_offsets_reproduces_a_constant_object_over_the_scanned_area():
    patches = np.full((9, N, N), 0.5 + 0.25j, np.complex64)
    offsets = np.stack(np.meshgrid([-6.5, 0, 6.5], [-6.5, 0, 6.5]), -1).reshape(-1, 2)
    canvas = tf_reassembly.reassemble_by_offsets(patches, offsets, canvas_size=40)
    centre = 20
    inside = np.s_[centre - 11 : centre + 11, centre - 11 : centre + 11]
    np.testing.assert_allclose(canvas[inside], 0.5 + 0.25j, atol=1e-5)
    assert canvas[0, 0] == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"canvas_size": 20}, "too small.*need at least 32"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"offsets_xy": np.zeros((3, 2))}, "4 patches but 3 offsets"),
        ({"offsets_xy": np.full((4, 2), np.nan)}, "finite"),
        ({"patches": np.zeros((4, N, N + 1), np.complex64)}, r"\(n, N, N\)"),
    ],
)
def test_reassemble_by_offsets_errors(kwargs, match):
    arguments = {"patches": _complex((4, N, N)), "offsets_xy": np.full((4, 2), 9.5)}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        tf_reassembly.reassemble_by_offsets(**arguments)

"""Guard check of the TensorFlow phase: the non-XLA translation path (run by the phase runner in
a subprocess, runners/conf/guard/tf_translation.yaml; the suite collects it from tests/tf_ops).

Keep the imports light: only numpy, pytest, tensorflow and ptycho.tf.
"""
import numpy as np
import pytest
import tensorflow as tf

from ptycho.tf import ops as tf_ops, reassembly as tf_reassembly

GRIDSIZE = 2
N = 64
IMPULSES = [(20, 20), (30, 12), (40, 33), (25, 45)]  # (row, col) of the 1 in each image of a group


def _structured_images(count, size=N):
    """(count, size, size, 1) float32 with a different smooth pattern per image."""
    yy, xx = np.mgrid[:size, :size] / size
    frames = [np.sin(2 * np.pi * (k + 1) * xx) * np.cos(2 * np.pi * yy) + 1.5 for k in range(count)]
    return np.stack(frames)[..., None].astype(np.float32)


def _impulses(rows_cols, size=N):
    """(len(rows_cols), size, size, 1) float32: image k is 0 but for a 1 at rows_cols[k] (row, col)."""
    images = np.zeros((len(rows_cols), size, size, 1), np.float32)
    for k, (row, col) in enumerate(rows_cols):
        images[k, row, col, 0] = 1.0
    return images


def _assert_moved_by(result, images, dx, dy):
    """result (N, N, 1) is images (N, N, 1) moved dx columns right and dy rows down (integers), zero-filled."""
    inside = (slice(max(dy, 0), N + min(dy, 0)), slice(max(dx, 0), N + min(dx, 0)))
    np.testing.assert_array_equal(result[inside], np.roll(images, (dy, dx), axis=(0, 1))[inside])
    vacated = np.ones((N, N), bool)
    vacated[inside] = False
    assert not np.any(result[vacated]), "the edge the image moved away from is not zero"


def test_non_xla_translation_guard(monkeypatch):
    """Flattened (b*C, N, N, 1) images with (b, 2) translations [dx, dy]: each group's translation
    moves each of its C images dx columns right and dy rows down (out[y, x] = in[y - dy, x - dx]),
    exactly for whole pixels, by bilinear weights for fractions."""
    monkeypatch.setattr(tf_ops, "should_use_xla", lambda *args, **kwargs: False)
    channels = GRIDSIZE**2
    translations = np.array([[3.0, -2.0], [-5.0, 4.0]], dtype=np.float32)  # b = 2 groups
    images = _structured_images(len(translations) * channels)

    result = tf_ops.translate_core(tf.constant(images), tf.constant(translations)).numpy()

    assert result.shape == images.shape
    for k, (dx, dy) in enumerate(np.repeat(translations, channels, axis=0).astype(int)):
        _assert_moved_by(result[k], images[k], dx, dy)
    # A fractional shift (3.5, -2.25) spreads an impulse at (r, c) over rows r - 3, r - 2
    # (weights 1/4, 3/4) and columns c + 3, c + 4 (1/2 each).
    spread = tf_ops.translate_core(tf.constant(_impulses(IMPULSES)), tf.constant([[3.5, -2.25]])).numpy()
    for k, (row, col) in enumerate(IMPULSES):
        expected = np.zeros((N, N), np.float32)
        expected[row - 3:row - 1, col + 3:col + 5] = [[0.125, 0.125], [0.375, 0.375]]
        np.testing.assert_allclose(spread[k, :, :, 0], expected, atol=1e-6)


def test_non_xla_translation_matching_batch(monkeypatch):
    monkeypatch.setattr(tf_ops, "should_use_xla", lambda *args, **kwargs: False)
    images = _structured_images(GRIDSIZE**2)
    translations = np.array([[1, 0], [0, 2], [-3, 0], [0, -1]], dtype=np.float32)

    result = tf_ops.translate_core(images, translations).numpy()

    assert result.shape == images.shape
    # Integer shifts are exact: image 0 moved one column right.
    np.testing.assert_array_equal(result[0, :, 1:], images[0, :, :-1])
    np.testing.assert_array_equal(result[0, :, 0], 0.0)


def test_non_xla_translation_repeats_one_translation_per_group(monkeypatch):
    monkeypatch.setattr(tf_ops, "should_use_xla", lambda *args, **kwargs: False)
    images = _structured_images(2 * GRIDSIZE**2)
    translations = np.array([[2.0, 0.0], [0.0, -3.0]], dtype=np.float32)

    result = tf_ops.translate_core(images, translations).numpy()
    expected = tf_ops.translate_core(images, np.repeat(translations, GRIDSIZE**2, axis=0))

    np.testing.assert_array_equal(result, expected.numpy())


def test_non_xla_translation_batch_mismatch_raises(monkeypatch):
    monkeypatch.setattr(tf_ops, "should_use_xla", lambda *args, **kwargs: False)
    images = _structured_images(GRIDSIZE**2)
    translations = np.zeros((3, 2), dtype=np.float32)

    with pytest.raises(ValueError, match=r"images .*4, 64, 64, 1.*translations .*3, 2"):
        tf_ops.translate_core(images, translations)


@pytest.mark.parametrize("batch", [1, 3])
def test_gridsize2_reassembly_with_xla_off(monkeypatch, batch):
    monkeypatch.setenv("USE_XLA_TRANSLATE", "0")
    channels = GRIDSIZE**2
    rng = np.random.default_rng(0)
    frames = _structured_images(batch * channels)[..., 0].reshape(batch, channels, N, N)
    amplitude = np.moveaxis(frames, 1, -1)
    patches = (amplitude * np.exp(0.3j)).astype(np.complex64)
    coords = rng.uniform(-4.0, 4.0, size=(batch, 1, 2, channels)).astype(np.float32)
    canvas_size = N + 2 * 5

    canvas = tf_reassembly.reassemble_patches(patches, coords, canvas_size)
    extracted = tf_reassembly.extract_patches_at_offsets(canvas, coords, N)

    assert canvas.shape == (batch, canvas_size, canvas_size, 1)
    assert extracted.shape == (batch, N, N, channels)
    for result in (canvas.numpy(), extracted.numpy()):
        assert np.all(np.isfinite(result))
        assert np.any(np.abs(result) > 0.1)

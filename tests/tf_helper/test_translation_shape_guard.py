"""Guard selector for the non-XLA translation path (run by the phase runner in a subprocess).

Keep the imports light: only numpy, tensorflow and ptycho.tf_helper.
"""
import numpy as np
import pytest
import tensorflow as tf

from ptycho import tf_helper

GRIDSIZE = 2
N = 64


def _structured_images(count, size=N):
    """(count, size, size, 1) float32 with a different smooth pattern per image."""
    yy, xx = np.mgrid[:size, :size] / size
    frames = [np.sin(2 * np.pi * (k + 1) * xx) * np.cos(2 * np.pi * yy) + 1.5 for k in range(count)]
    return np.stack(frames)[..., None].astype(np.float32)


def test_non_xla_translation_guard(monkeypatch):
    monkeypatch.setattr(tf_helper, "should_use_xla", lambda *args, **kwargs: False)
    images = tf.constant(_structured_images(GRIDSIZE**2))
    translations = tf.constant([[3.5, -2.25]], dtype=tf.float32)

    result = tf_helper.translate_core(images, translations)

    assert result.shape == images.shape
    assert np.any(result.numpy() != 0.0)


def test_non_xla_translation_matching_batch(monkeypatch):
    monkeypatch.setattr(tf_helper, "should_use_xla", lambda *args, **kwargs: False)
    images = _structured_images(GRIDSIZE**2)
    translations = np.array([[1, 0], [0, 2], [-3, 0], [0, -1]], dtype=np.float32)

    result = tf_helper.translate_core(images, translations).numpy()

    assert result.shape == images.shape
    # Integer shifts are exact: image 0 moved one column right.
    np.testing.assert_array_equal(result[0, :, 1:], images[0, :, :-1])
    np.testing.assert_array_equal(result[0, :, 0], 0.0)


def test_non_xla_translation_repeats_one_translation_per_group(monkeypatch):
    monkeypatch.setattr(tf_helper, "should_use_xla", lambda *args, **kwargs: False)
    images = _structured_images(2 * GRIDSIZE**2)
    translations = np.array([[2.0, 0.0], [0.0, -3.0]], dtype=np.float32)

    result = tf_helper.translate_core(images, translations).numpy()
    expected = tf_helper.translate_core(images, np.repeat(translations, GRIDSIZE**2, axis=0))

    np.testing.assert_array_equal(result, expected.numpy())


def test_non_xla_translation_batch_mismatch_raises(monkeypatch):
    monkeypatch.setattr(tf_helper, "should_use_xla", lambda *args, **kwargs: False)
    images = _structured_images(GRIDSIZE**2)
    translations = np.zeros((3, 2), dtype=np.float32)

    with pytest.raises(ValueError, match=r"images .*4, 64, 64, 1.*translations .*3, 2"):
        tf_helper.translate_core(images, translations)


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

    canvas = tf_helper.reassemble_patches(patches, coords, canvas_size)
    extracted = tf_helper.extract_patches_at_offsets(canvas, coords, N)

    assert canvas.shape == (batch, canvas_size, canvas_size, 1)
    assert extracted.shape == (batch, N, N, channels)
    for result in (canvas.numpy(), extracted.numpy()):
        assert np.all(np.isfinite(result))
        assert np.any(np.abs(result) > 0.1)

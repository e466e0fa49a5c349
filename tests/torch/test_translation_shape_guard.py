"""Guard selector of the PyTorch phase (``backend=pytorch``), run by the runner in a subprocess.

The twin of tests/tf_helper/test_translation_shape_guard.py for ``ptycho.torch.ops``, with no
TensorFlow in it, so the guard of a PyTorch run starts in a second rather than after a
TensorFlow import. Agreement with the TensorFlow kernels is tests/torch/test_torch_ops_parity.py's.
"""
import numpy as np
import pytest
import torch

from ptycho.torch import ops, reassembly

GRIDSIZE = 2
N = 64


def _structured_images(count, size=N):
    """(count, size, size, 1) float32 with a different smooth pattern per image."""
    yy, xx = np.mgrid[:size, :size] / size
    frames = [np.sin(2 * np.pi * (k + 1) * xx) * np.cos(2 * np.pi * yy) + 1.5 for k in range(count)]
    return torch.from_numpy(np.stack(frames)[..., None].astype(np.float32))


def test_translation_guard():
    """Flattened (C, N, N, 1) images with one translation per group: no crash, content kept."""
    images = _structured_images(GRIDSIZE**2)
    result = ops.translate(images, torch.tensor([[3.5, -2.25]]))
    assert result.shape == images.shape
    assert bool(torch.any(result != 0.0))


def test_integer_shifts_are_exact():
    images = _structured_images(GRIDSIZE**2)
    translations = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, -1.0]])
    result = ops.translate(images, translations)
    assert torch.equal(result[0, :, 1:], images[0, :, :-1])  # image 0 moved one column right
    assert torch.equal(result[1, 2:], images[1, :-2])  # image 1 moved two rows down
    assert not bool(result[0, :, 0].any())


def test_one_translation_per_group_is_repeated_for_its_channels():
    images = _structured_images(2 * GRIDSIZE**2)
    translations = torch.tensor([[2.0, 0.0], [0.0, -3.0]])
    expected = ops.translate(images, translations.repeat_interleave(GRIDSIZE**2, dim=0))
    assert torch.equal(ops.translate(images, translations), expected)


def test_a_batch_that_is_no_multiple_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple"):
        ops.translate(_structured_images(GRIDSIZE**2), torch.zeros(3, 2))


@pytest.mark.parametrize("batch", [1, 3])
def test_gridsize2_reassembly_and_extraction(batch):
    channels = GRIDSIZE**2
    frames = _structured_images(batch * channels)[..., 0].reshape(batch, channels, N, N)
    patches = torch.polar(frames.permute(0, 2, 3, 1), torch.full((batch, N, N, channels), 0.3))
    coords = torch.from_numpy(np.random.default_rng(0).uniform(-4.0, 4.0, (batch, 1, 2, channels)))
    canvas = reassembly.reassemble_patches(patches, coords.float(), N + 2 * 5)
    extracted = reassembly.extract_patches_at_offsets(canvas, coords.float(), N)
    assert canvas.shape == (batch, N + 10, N + 10, 1) and extracted.shape == (batch, N, N, channels)
    for result in (canvas, extracted):
        assert bool(torch.all(torch.isfinite(torch.view_as_real(result))))
        assert bool(torch.any(result.abs() > 0.1))

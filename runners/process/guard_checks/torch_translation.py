"""Guard check of the PyTorch phase (``backend=pytorch``), run by the runner in a subprocess
(runners/conf/guard/torch_translation.yaml; the suite collects it from tests/torch).

The twin of tf_translation.py for ``ptycho.torch.ops``, with no
TensorFlow in it, so the guard of a PyTorch run starts in a second rather than after a
TensorFlow import. Agreement with the TensorFlow kernels is tests/torch/test_torch_ops_parity.py's.
"""
import numpy as np
import pytest
import torch

from ptycho.torch import ops, reassembly

GRIDSIZE = 2
N = 64
IMPULSES = [(20, 20), (30, 12), (40, 33), (25, 45)]  # (row, col) of the 1 in each image of a group


def _structured_images(count, size=N):
    """(count, size, size, 1) float32 with a different smooth pattern per image."""
    yy, xx = np.mgrid[:size, :size] / size
    frames = [np.sin(2 * np.pi * (k + 1) * xx) * np.cos(2 * np.pi * yy) + 1.5 for k in range(count)]
    return torch.from_numpy(np.stack(frames)[..., None].astype(np.float32))


def _impulses(rows_cols, size=N):
    """(len(rows_cols), size, size, 1) float32: image k is 0 but for a 1 at rows_cols[k] (row, col)."""
    images = torch.zeros((len(rows_cols), size, size, 1))
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


def test_translation_guard():
    """Flattened (b*C, N, N, 1) images with (b, 2) translations [dx, dy]: each group's translation
    moves each of its C images dx columns right and dy rows down (out[y, x] = in[y - dy, x - dx]),
    exactly for whole pixels, by bilinear weights for fractions."""
    channels = GRIDSIZE**2
    translations = torch.tensor([[3.0, -2.0], [-5.0, 4.0]])  # b = 2 groups
    images = _structured_images(len(translations) * channels)
    result = ops.translate(images, translations)
    assert result.shape == images.shape
    for k, (dx, dy) in enumerate(translations.repeat_interleave(channels, dim=0).int().tolist()):
        _assert_moved_by(result[k].numpy(), images[k].numpy(), dx, dy)
    # A fractional shift (3.5, -2.25) spreads an impulse at (r, c) over rows r - 3, r - 2
    # (weights 1/4, 3/4) and columns c + 3, c + 4 (1/2 each).
    spread = ops.translate(_impulses(IMPULSES), torch.tensor([[3.5, -2.25]])).numpy()
    for k, (row, col) in enumerate(IMPULSES):
        expected = np.zeros((N, N), np.float32)
        expected[row - 3:row - 1, col + 3:col + 5] = [[0.125, 0.125], [0.375, 0.375]]
        np.testing.assert_allclose(spread[k, :, :, 0], expected, atol=1e-6)


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

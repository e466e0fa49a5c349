"""Physics stages of the PyTorch port against ptycho.tf.ops / tf_reassembly.

Same inputs through both backends; the tolerance is the issue's 1e-6 max relative error
(max |tf - torch| / max |tf|). The torch kernels repeat TF's float32 coordinate arithmetic,
so in practice the per-patch stages agree exactly.
"""
import numpy as np
import pytest
import torch

from ptycho import stitching
from ptycho.tf import ops as tf_ops, reassembly as tf_reassembly
from ptycho.torch import ops, reassembly

PHYSICS_RTOL = 1e-6
N = 64


def max_relative_error(reference, other):
    reference, other = np.asarray(reference), np.asarray(other)
    assert reference.shape == other.shape
    return float(np.max(np.abs(reference - other)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(7)


def complex_patches(rng, batch, channels):
    shape = (batch, N, N, channels)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


@pytest.mark.parametrize("use_xla", [True, False])
def test_translation_matches_tf_for_flattened_batches(rng, use_xla):
    images = rng.normal(size=(8, N, N, 1)).astype(np.float32)
    shifts = rng.normal(scale=6.0, size=(2, 2))  # (b, 2) over (b*C, ...): repeated C=4 times
    expected = tf_ops.translate(images, shifts, use_xla=use_xla).numpy()
    got = ops.translate(torch.from_numpy(images), torch.from_numpy(shifts)).numpy()
    assert max_relative_error(expected, got) <= PHYSICS_RTOL


def test_translation_moves_content_by_plus_dx_columns_and_plus_dy_rows():
    image = torch.zeros(1, 8, 8, 1)
    image[0, 2, 3, 0] = 1.0
    moved = ops.translate(image, torch.tensor([[2.0, 1.0]]))
    assert moved[0, 3, 5, 0] == 1.0 and float(moved.sum()) == 1.0


def test_translation_batch_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple"):
        ops.translate(torch.zeros(3, 8, 8, 1), torch.zeros(2, 2))


@pytest.mark.parametrize("gridsize", [1, 2])
def test_reassembly_and_extraction_match_tf(rng, gridsize):
    channels = gridsize**2
    patches = complex_patches(rng, 3, channels)
    coords = rng.normal(scale=4.0, size=(3, 1, 2, channels))
    canvas_size = 78
    canvas_tf = tf_reassembly.reassemble_patches(patches, coords, canvas_size, use_xla=False)
    canvas_pt = reassembly.reassemble_patches(torch.from_numpy(patches),
                                              torch.from_numpy(coords), canvas_size)
    assert max_relative_error(canvas_tf.numpy(), canvas_pt.numpy()) <= PHYSICS_RTOL
    extracted_tf = tf_reassembly.extract_patches_at_offsets(canvas_tf, coords, N, use_xla=False)
    extracted_pt = reassembly.extract_patches_at_offsets(canvas_pt, torch.from_numpy(coords), N)
    assert extracted_pt.shape == (3, N, N, channels)
    assert max_relative_error(extracted_tf.numpy(), extracted_pt.numpy()) <= PHYSICS_RTOL


def test_pad_and_diffract_matches_tf_and_conserves_energy(rng):
    psi = complex_patches(rng, 2, 4)
    expected = tf_ops.pad_and_diffract(psi).numpy()
    got = ops.pad_and_diffract(torch.from_numpy(psi)).numpy()
    assert max_relative_error(expected, got) <= PHYSICS_RTOL
    energy_in = np.sum(np.abs(psi) ** 2, axis=(1, 2))
    np.testing.assert_allclose(np.sum(got.astype(np.float64) ** 2, axis=(1, 2)), energy_in,
                               rtol=1e-5)


def test_global_stitching_matches_tf(rng):
    patches = complex_patches(rng, 1, 6)[0].transpose(2, 0, 1)  # (6, N, N)
    offsets = rng.normal(scale=15.0, size=(6, 2))
    expected = tf_reassembly.reassemble_by_offsets(patches, offsets, chunk_size=4)
    got = reassembly.reassemble_by_offsets(patches, offsets, chunk_size=4)
    assert got.shape == expected.shape == (stitching.required_canvas_size(N, offsets),) * 2
    assert max_relative_error(expected, got) <= PHYSICS_RTOL


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_layout_transforms_match_tf_row_major(gridsize):
    channels = gridsize**2
    x = np.arange(2 * 4 * 4 * channels, dtype=np.float32).reshape(2, 4, 4, channels)
    xt = torch.from_numpy(x)
    np.testing.assert_array_equal(ops.channels_to_flat(xt).numpy(),
                                  tf_ops.channels_to_flat(x).numpy())
    np.testing.assert_array_equal(ops.channels_to_grid(xt, gridsize).numpy(),
                                  tf_ops.channels_to_grid(x, gridsize).numpy())
    assert torch.equal(ops.flat_to_channels(ops.channels_to_flat(xt), channels), xt)
    assert torch.equal(ops.grid_to_channels(ops.channels_to_grid(xt, gridsize)), xt)


def test_stitching_of_predicted_patches_matches_tf(rng, small_dataset):
    from ptycho.tf import inference as tf_inference
    from ptycho.torch import inference as pt_inference

    test = small_dataset[1]
    groups = stitching.inference_groups(test, 2, 7, seed=0)
    patches = complex_patches(rng, groups.n_groups, 4)
    expected = tf_inference.stitch_patches(patches, groups)
    got = pt_inference.stitch_patches(patches, groups)
    assert max_relative_error(expected.canvas, got.canvas) <= PHYSICS_RTOL
    np.testing.assert_array_equal(expected.covered, got.covered)
    np.testing.assert_array_equal(expected.offsets_xy, got.offsets_xy)

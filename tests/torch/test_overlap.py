"""The overlap constraint of gridsize > 1 (issue 22): the physics checks that need no training.

At gridsize 2 each pattern sees its group's patches averaged (``ModelSpec.overlap``). These tests
hold the forward path to the physics: fed the TRUE patches it must score better than blurred or flat
ones; a patch reaches its own position without interpolation; TF (both translation paths) and PyTorch
agree; and, the cause of issue 22, a neighbour's outer ring (the decoders' low-capacity side branch)
must not decide the object a pattern sees where a neighbour's full-resolution centre covers it.
"""
import numpy as np
import pytest
import tensorflow as tf
import torch
from scipy import ndimage

from ptycho import architecture
from ptycho.tf import ops as tf_ops, reassembly as tf_reassembly
from ptycho.architecture import border_mask, overlap_weights
from ptycho.data.batches import group_data
from ptycho.data.grouping import group_positions
from ptycho.tf.model import build_model
from ptycho.pipeline import poisson_nll_floor
from ptycho.spec import ModelSpec
from ptycho.stitching import canvas_size_for
from ptycho.torch import model as pt_model
from ptycho.torch import reassembly

N = 64


def random_group(seed, batch=3, channels=4, spread=9.0):
    rng = np.random.default_rng(seed)
    patches = (rng.normal(size=(batch, N, N, channels)) + 1j * rng.normal(size=(batch, N, N, channels)))
    coords = rng.uniform(-spread, spread, size=(batch, 1, 2, channels))
    return patches.astype(np.complex64), coords.astype(np.float32)


def test_tf_paths_and_torch_agree_at_sub_pixel_offsets():
    patches, coords = random_group(0)
    weights = overlap_weights(N)
    projective = tf_reassembly.overlap_patches(patches, coords, weights, use_xla=False).numpy()
    gathered = tf_reassembly.overlap_patches(patches, coords, weights, use_xla=True).numpy()
    ported = reassembly.overlap_patches(torch.from_numpy(patches), torch.from_numpy(coords), weights).numpy()
    scale = np.abs(projective).max()
    assert np.abs(gathered - projective).max() / scale < 1e-6
    assert np.abs(ported - projective).max() / scale < 1e-6


def test_uniform_weights_at_whole_pixel_offsets_equal_the_canvas_round_trip():
    patches, coords = random_group(1)
    coords = np.round(coords)
    direct = tf_reassembly.overlap_patches(patches, coords, np.ones((N, N), np.float32), use_xla=False)
    canvas = tf_reassembly.reassemble_patches(patches, coords, 120, use_xla=False)
    round_trip = tf_reassembly.extract_patches_at_offsets(canvas, coords, N, use_xla=False)
    np.testing.assert_allclose(direct.numpy(), round_trip.numpy(), atol=1e-5)


@pytest.mark.parametrize("backend", ["tensorflow", "pytorch"])
def test_a_patch_reaches_its_own_position_without_interpolation(backend):
    """Neighbours out of reach (offsets > N): each position sees exactly its own patch, at any
    sub-pixel offset (the canvas round trip interpolated it twice)."""
    patches, _ = random_group(2, batch=1)
    coords = np.array([[[[0.3, 80.6, -90.2, 200.5], [0.7, -85.4, 95.1, 0.25]]]], np.float32)
    weights = overlap_weights(N)
    if backend == "tensorflow":
        seen = tf_reassembly.overlap_patches(patches, coords, weights, use_xla=False).numpy()
    else:
        seen = reassembly.overlap_patches(torch.from_numpy(patches), torch.from_numpy(coords), weights).numpy()
    np.testing.assert_allclose(seen, patches, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def true_groups(small_dataset, intensity_scale):
    """The train split's true patches in gridsize-2 groups (K = 7), their data and a model of each overlap."""
    train = small_dataset[0]
    groups = group_positions(train.xcoords, train.ycoords, 2, 7, 32, seed=0)
    data = group_data(train, groups, intensity_scale)
    canvas = canvas_size_for(N, groups.coords_relative)
    models = {mode: build_model(ModelSpec(gridsize=2, intensity_scale=intensity_scale, canvas_size=canvas,
                                          use_xla_translate=False, overlap=mode), train.probe)
              for mode in architecture.OVERLAP_MODES}
    return data, models


def blurred(patches, sigma):
    smooth = lambda part: ndimage.gaussian_filter(part, (0, sigma, sigma, 0))
    return (smooth(patches.real) + 1j * smooth(patches.imag)).astype(np.complex64)


def nll_over_floor(model, data, patches):
    seen = model.illuminated_patches(tf.constant(patches), tf.constant(data.coords_relative))
    amplitude = tf_ops.pad_and_diffract(seen * model.probe).numpy().astype(np.float64) * model.intensity_scale
    intensity = amplitude**2 + 1e-6
    return float(np.mean(intensity - data.intensity * np.log(intensity))) - poisson_nll_floor(data.intensity)


@pytest.mark.parametrize("mode", architecture.OVERLAP_MODES)
def test_the_true_object_scores_better_than_a_blurred_or_flat_one(true_groups, mode):
    data, models = true_groups
    truth = data.object
    flat = np.full_like(truth, np.mean(np.abs(truth)))
    scores = [nll_over_floor(models[mode], data, patches)
              for patches in (truth, blurred(truth, 0.5), blurred(truth, 1.0), flat)]
    assert scores == sorted(scores), f"{mode}: NLL over the floor of truth, blur 0.5, blur 1, flat: {scores}"
    assert scores[1] > 1.5 * scores[0], f"{mode}: a half-pixel blur barely costs: {scores}"


def test_neighbours_rings_do_not_decide_what_a_pattern_sees(true_groups):
    """True centres with a flat outer ring: with the uniform average the neighbours' rings pull the
    object each pattern sees away from the truth inside its own centre; weighted, they do not."""
    data, models = true_groups
    truth = data.object
    ring = border_mask(N)[None, :, :, None].astype(bool)
    flat_rings = np.where(ring, np.mean(np.abs(truth)), truth).astype(np.complex64)
    centre = ~ring[0, :, :, 0]
    errors = {}
    for mode, model in models.items():
        coords = tf.constant(data.coords_relative)
        with_truth = model.illuminated_patches(tf.constant(truth), coords).numpy()
        with_flat = model.illuminated_patches(tf.constant(flat_rings), coords).numpy()
        errors[mode] = float(np.mean(np.abs(with_flat - with_truth)[:, centre]))
    assert errors["weighted"] < 0.1 * errors["uniform"], errors
    assert errors["weighted"] < 0.01 * np.mean(np.abs(truth)), errors


@pytest.mark.parametrize("mode", architecture.OVERLAP_MODES)
def test_both_backends_models_see_the_same_object_and_canvas(true_groups, probe, mode):
    data, models = true_groups
    keras_model = models[mode]
    twin = pt_model.build_model(keras_model.spec, probe)
    patches, coords = data.object, data.coords_relative
    seen = keras_model.illuminated_patches(tf.constant(patches), tf.constant(coords)).numpy()
    canvas = keras_model.object_canvas(tf.constant(patches), tf.constant(coords)).numpy()
    with torch.no_grad():
        seen_twin = twin.illuminated_patches(torch.from_numpy(patches), torch.from_numpy(coords)).numpy()
        canvas_twin = twin.object_canvas(torch.from_numpy(patches), torch.from_numpy(coords)).numpy()
    assert np.abs(seen_twin - seen).max() < 1e-5 * np.abs(seen).max()
    assert np.abs(canvas_twin - canvas).max() < 1e-5 * np.abs(canvas).max()

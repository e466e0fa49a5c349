"""Conformance of the model, training and stitching: PTY-AT-020, 021, 031, 032, 040, 041."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from ptycho.data import grouping
from ptycho.tf import inference, ops as tf_ops, reassembly as tf_reassembly
from ptycho import stitching
from ptycho.data.batches import group_data
from ptycho.tf.model import build_model
from ptycho.data.normalization import dataset_intensity_scale
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.tf.training import PinnLoss, guarded_intensity, poisson_nll
from ptycho.tf.workflow import run_phase_job

K = 3.0  # data rescaling factor for the symmetry test


@pytest.fixture(scope="module")
def data():
    return simulate_dataset(SimulationSpec(n_images=96, seed=11))


@pytest.fixture(scope="module")
def groups(data):
    return grouping.group_positions(data[0].xcoords, data[0].ycoords, 1, 1, 4, seed=0)


def _spec(scale, **overrides):
    return ModelSpec(gridsize=1, n_filters_scale=1, intensity_scale=float(scale), **overrides)


@pytest.fixture(scope="module")
def twin_models(data):
    """Two fresh builds of the same spec and seed."""
    scale = dataset_intensity_scale(data[0].diffraction)
    return [build_model(_spec(scale), data[0].probe) for _ in range(2)]


def _rescaled(dataset, factor):
    return dataclasses.replace(dataset, diffraction=dataset.diffraction * np.float32(factor))


def test_PTY_AT_020_intensity_scale_symmetry(data, groups, twin_models):
    train = data[0]
    scale = dataset_intensity_scale(train.diffraction)
    # Inputs and labels carry the same scale: X = s * A, labels = X**2 = (s * A)**2.
    grouped = group_data(train, groups, scale)
    amplitudes = train.diffraction[groups.nn_indices[:, 0]][..., None]
    np.testing.assert_allclose(grouped.diffraction, scale * amplitudes, rtol=1e-6)
    np.testing.assert_allclose(grouped.intensity, (scale * amplitudes.astype(np.float64)) ** 2, rtol=1e-5)
    # Data scaled by K: the dataset scale drops by K, so model inputs and labels are unchanged.
    rescaled = _rescaled(train, K)
    assert dataset_intensity_scale(rescaled.diffraction) == pytest.approx(scale / K, rel=1e-6)
    regrouped = group_data(rescaled, groups, dataset_intensity_scale(rescaled.diffraction))
    np.testing.assert_allclose(regrouped.diffraction, grouped.diffraction, rtol=1e-5)
    np.testing.assert_allclose(regrouped.intensity, grouped.intensity, rtol=1e-5)
    # The network sees X / exp(log_scale): a model whose scale is K times larger, fed K times
    # larger inputs, predicts the same object and K**2 times the intensity, so the Poisson NLL
    # changes by a factor K**2 and a constant only: the same minimiser.
    base = twin_models[0]
    bigger = build_model(_spec(K * scale), train.probe)
    out = base(grouped.inputs())
    out_k = bigger({"diffraction": grouped.diffraction * K, "coords_relative": grouped.coords_relative})
    np.testing.assert_allclose(out_k["object"].numpy(), out["object"].numpy(), rtol=1e-4, atol=1e-5)
    expected = K**2 * out["intensity"].numpy()
    np.testing.assert_allclose(out_k["intensity"].numpy(), expected, rtol=1e-4, atol=1e-6 * expected.max())
    observed = tf.constant(grouped.intensity)
    nll, nll_k = poisson_nll(observed, out["intensity"]), poisson_nll(K**2 * observed, out_k["intensity"])
    constant = -K**2 * np.log(K**2) * float(tf.reduce_mean(observed))
    assert float(nll_k) == pytest.approx(K**2 * float(nll) + constant, rel=1e-4)


def test_PTY_AT_021_predicted_intensity_strictly_positive_before_the_log(data, groups):
    """A patch with zero illumination predicts exactly zero intensity; the loss stays finite."""
    train = data[0]
    scale = dataset_intensity_scale(train.diffraction)
    dark = build_model(_spec(scale), np.zeros_like(train.probe))
    grouped = group_data(train, groups, scale)
    with tf.GradientTape() as tape:
        outputs = dark(grouped.inputs(), training=True)
        terms = PinnLoss()(grouped.targets(), outputs)
    assert float(tf.reduce_max(outputs["intensity"])) == 0.0
    assert float(tf.reduce_min(guarded_intensity(outputs["intensity"]))) > 0.0
    assert np.isfinite(float(terms["loss"]))
    gradients = tape.gradient(terms["loss"], dark.trainable_weights)
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients if g is not None)


@pytest.mark.slow
def test_PTY_AT_031_inference_determinism(data, groups, twin_models):
    grouped = group_data(data[0], groups, twin_models[0].intensity_scale)
    first, second = twin_models
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    once = inference.predict_patches(first, grouped.inputs())
    np.testing.assert_array_equal(once, inference.predict_patches(first, grouped.inputs()))
    np.testing.assert_array_equal(once, inference.predict_patches(second, grouped.inputs()))


@pytest.mark.slow
def test_PTY_AT_032_training_without_ground_truth(data, tmp_path):
    """No objectGuess / Y: the job trains on the Poisson NLL alone (MAE switched off)."""
    train, test = (dataclasses.replace(d, object_guess=None, Y=None) for d in data)
    assert not train.has_ground_truth and train.Y is None
    result = run_phase_job(
        train, test.subset(np.arange(8)), grouping=GroupingSpec(gridsize=1, neighbor_count=1, n_groups=4, n_images=16),
        model_spec=_spec(1.0, mae_weight=1.0), train_spec=TrainSpec(max_epochs=1, batch_size=4, validation_split=0.0),
        run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle",
    )
    assert result.model_spec.mae_weight == 0.0
    assert "amplitude_mae" not in result.history and np.isfinite(result.history["loss"][0])
    assert result.quality == {}
    assert (tmp_path / "bundle" / "stats.json").is_file()


@pytest.mark.parametrize("gridsize", [1, 2])
def test_PTY_AT_040_stitching_canvas_size(data, gridsize):
    test = data[1]
    test_groups = stitching.inference_groups(test, gridsize, 7, seed=0)
    stitched = inference.stitch_patches(group_data(test, test_groups, 1.0).object, test_groups)
    size, crop = stitched.canvas.shape[0], stitched.crop
    assert stitched.canvas.shape == (size, size)
    assert size == stitching.required_canvas_size(crop, stitched.offsets_xy)
    assert size >= crop + 2 * np.max(np.abs(stitched.offsets_xy)) and size % 2 == 0
    corners = size // 2 + np.round(stitched.offsets_xy) - crop // 2
    assert corners.min() >= 0 and corners.max() + crop <= size
    positions = np.transpose(test_groups.coords_nn[:, 0], (0, 2, 1)).reshape(-1, 2)
    np.testing.assert_allclose(stitched.offsets_xy + stitched.centre_xy, positions)


def test_PTY_AT_041_missing_parameters_and_inconsistent_shapes_raise(data, groups, tmp_path):
    patches = np.zeros((groups.n_groups, 64, 64, 1), np.complex64)
    with pytest.raises(ValueError, match="groups.coords_nn must be"):
        inference.stitch_patches(patches, None)
    with pytest.raises(ValueError, match="groups.coords_nn must be"):
        inference.stitch_patches(patches[:2], groups)
    with pytest.raises(ValueError, match=r"patches must be \(B, N, N, C\)"):
        inference.stitch_patches(patches[..., 0], groups)
    with pytest.raises(ValueError, match="too small for offsets"):
        tf_reassembly.reassemble_by_offsets(patches[:, :, :, 0], np.full((4, 2), 30.0), canvas_size=64)
    with pytest.raises(ValueError, match="canvas_size is required"):
        build_model(ModelSpec(gridsize=2, canvas_size=None), data[0].probe)
    with pytest.raises(TypeError, match="grouping"):
        run_phase_job(data[0], data[1], model_spec=ModelSpec(), train_spec=TrainSpec(),
                      run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle")
    with pytest.raises(ValueError, match="differs from model_spec.gridsize"):
        run_phase_job(data[0], data[1], grouping=GroupingSpec(gridsize=1), model_spec=ModelSpec(gridsize=2),
                      train_spec=TrainSpec(), run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()

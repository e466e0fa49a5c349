"""Probe refinement (``ModelSpec.refine_probe``): the probe trains with the network on both backends.

The refined probe is a weight ``probe_field`` (N, N, 2) rescaled to the given probe's total energy at
every call (``ptycho.architecture.probe_from_field``). Checked here: the spec's fields, the field's
round trip, both backends starting at the given probe, one training step moving the probe alike on
both from the same weights and batch, the weight transfer and the saved files (weights, the network
card's probe.npy, the bundle's probe.png and arrays), and, in a tiny fully known setting, that refining
a probe with a wrong defocus brings it closer to the true one and fits the data better than holding it.
"""
import dataclasses

import keras
import numpy as np
import pytest

from ptycho import architecture, network
from ptycho.data.batches import group_data, prepare_job_data
from ptycho.evaluation.bundle import PROBE_FIGURE, read_bundle_arrays, read_bundle_stats
from ptycho.pipeline import poisson_nll_floor
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.stitching import canvas_size_for
from ptycho.tf import model as tf_model, training as tf_training
from ptycho.torch import model as pt_model, training as pt_training, weights, workflow as pt_workflow

# One Adam step from the same weights on the same batch: measured gap 1.3e-4 of the probe's move (float32
# rounding of two frameworks' FFTs and convolutions); a probe moved by another rule (no energy rescaling,
# another learning-rate factor, the gradient of another loss) is off by order 1.
STEP_RTOL = 2e-3
DEFOCUS_RAD = 1.0  # the wrong probe's extra quadratic phase at radius N/4


def defocused(probe: np.ndarray, phase_rad: float) -> np.ndarray:
    """``probe`` times exp(i phase_rad (r / (N/4))**2): a probe off by a defocus."""
    N = probe.shape[0]
    grid = np.arange(N) - N / 2
    r2 = (grid[None, :] ** 2 + grid[:, None] ** 2) / (N / 4) ** 2
    return (probe * np.exp(1j * phase_rad * r2)).astype(np.complex64)


def probe_error(probe: np.ndarray, truth: np.ndarray) -> float:
    """min_c ||c P - P_true|| / ||P_true|| over complex c (a probe is known up to a global factor)."""
    probe, truth = probe.astype(np.complex128), truth.astype(np.complex128)
    c = np.vdot(probe, truth) / np.vdot(probe, probe)
    return float(np.linalg.norm(c * probe - truth) / np.linalg.norm(truth))


@pytest.fixture(scope="module")
def refined(small_dataset, groups_by_gridsize, intensity_scale):
    groups = groups_by_gridsize[2]
    spec = ModelSpec(gridsize=2, intensity_scale=intensity_scale, seed=2, refine_probe=True,
                     canvas_size=canvas_size_for(64, groups.coords_relative))
    return spec, group_data(small_dataset[0], groups, intensity_scale)


@pytest.mark.parametrize("field, value", [("refine_probe", "yes"), ("probe_learning_rate_factor", 0.0),
                                          ("probe_learning_rate_factor", float("inf"))])
def test_the_spec_names_a_wrong_refinement_setting(field, value):
    with pytest.raises(ValueError, match=f"ModelSpec.{field}"):
        ModelSpec(**{field: value})


def test_the_field_gives_back_the_given_probe_at_its_energy_whatever_its_norm(probe):
    energy = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
    field = architecture.probe_field_start(probe, 10.0)
    assert field.shape == (64, 64, 2) and np.abs(field).max() == pytest.approx(0.1, rel=1e-6)
    for scale in (1.0, 7.0):
        np.testing.assert_allclose(architecture.probe_from_field(scale * field, energy), probe, atol=1e-6)
    disk = architecture.probe_disk(64)
    masked = architecture.probe_from_field(field, energy, disk)
    assert np.all(masked[disk == 0] == 0) and np.sum(np.abs(masked) ** 2) == pytest.approx(energy, rel=1e-5)


def test_one_step_moves_the_probe_alike_on_both_backends_at_a_fixed_energy(refined, probe):
    spec, data = refined
    keras_model = tf_model.build_model(spec, probe)
    torch_model = weights.tf_to_torch(keras_model, pt_model.build_model(spec, probe))
    start = architecture.prepare_probe(probe, spec.N, spec.probe_mask)
    for model in (keras_model, torch_model):
        np.testing.assert_allclose(model.probe_array, start, atol=1e-6)
    batch = data.take(slice(0, 2))
    keras_model.compile(keras.optimizers.Adam(spec.learning_rate), tf_training.PinnLoss.of(spec))
    keras_model.train_step((batch.inputs(), batch.targets()))
    inputs, targets = pt_training.batch_tensors(data, slice(0, 2))
    pt_training.train_step(torch_model, pt_training.make_optimizer(torch_model), pt_training.loss_for(torch_model),
                           inputs, targets)
    tf_move, torch_move = keras_model.probe_array - start, torch_model.probe_array - start
    # the signal: about learning_rate * factor of the peak per pixel, 3e-3 of the probe's norm
    assert np.linalg.norm(tf_move) > 1e-3 * np.linalg.norm(start)
    assert np.linalg.norm(torch_move - tf_move) <= STEP_RTOL * np.linalg.norm(tf_move)
    energy = np.sum(np.abs(start) ** 2)
    for model in (keras_model, torch_model):
        assert np.sum(np.abs(model.probe_array) ** 2) == pytest.approx(energy, rel=1e-5)
    # and back: Keras takes the torch model's probe with the rest of its weights
    tf_again = weights.torch_to_tf(torch_model, tf_model.build_model(spec, probe))
    np.testing.assert_allclose(tf_again.probe_array, torch_model.probe_array, atol=1e-6)


def test_weight_transfer_refuses_a_probe_refined_on_one_side_only(refined, probe):
    spec, _ = refined
    keras_model = tf_model.build_model(spec, probe)
    fixed = pt_model.build_model(dataclasses.replace(spec, refine_probe=False), probe)
    with pytest.raises(weights.WeightTransferError, match="refine_probe"):
        weights.tf_to_torch(keras_model, fixed)


def test_keras_weights_keep_the_refined_probe(refined, probe, tmp_path):
    spec, _ = refined
    model = tf_model.build_model(spec, probe)
    model.probe_field.assign(architecture.probe_field_start(defocused(probe, DEFOCUS_RAD), 10.0))
    path = tf_model.save_weights(model, tmp_path)
    again = tf_model.load_model(spec, probe, path)
    np.testing.assert_allclose(again.probe_array, model.probe_array, atol=1e-6)
    assert probe_error(again.probe_array, probe) > 0.1


def test_a_refined_network_saves_its_probe_and_reconstructs_with_it(small_dataset, probe, tmp_path):
    train, test = small_dataset
    result = pt_workflow.run_phase_job(
        train, test, grouping=GroupingSpec(gridsize=2, neighbor_count=7, n_groups=8, seed=0),
        model_spec=ModelSpec(gridsize=2, refine_probe=True), train_spec=TrainSpec(max_epochs=1, batch_size=4),
        run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle")
    trained = network.load_network(tmp_path / "run")
    assert trained.spec.refine_probe
    assert 0 < probe_error(trained.probe, probe) < 0.1  # refined: moved, a little, after 2 steps
    assert read_bundle_stats(result.bundle_dir)["probe"]["change_relative"] > 0
    np.testing.assert_array_equal(read_bundle_arrays(result.bundle_dir)["probe"], trained.probe)
    assert (result.bundle_dir / PROBE_FIGURE).stat().st_size > 0
    reconstruction = pt_workflow.reconstruct(trained, test, run_dir=tmp_path / "again",
                                             bundle_dir=tmp_path / "again_bundle")
    np.testing.assert_array_equal(read_bundle_arrays(reconstruction.bundle_dir)["probe"], trained.probe)
    with np.load(tmp_path / "run" / "reconstruction.npz") as first, \
            np.load(tmp_path / "again" / "reconstruction.npz") as second:
        np.testing.assert_allclose(second["canvas"], first["canvas"], atol=1e-5)


def test_a_fixed_probe_network_keeps_its_bundle_as_before(small_dataset, tmp_path):
    train, test = small_dataset
    result = pt_workflow.run_phase_job(
        train, test, grouping=GroupingSpec(gridsize=1, neighbor_count=7, n_groups=4, seed=0),
        model_spec=ModelSpec(gridsize=1), train_spec=TrainSpec(max_epochs=1, batch_size=4),
        run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle")
    assert "probe" not in read_bundle_stats(result.bundle_dir)
    assert set(read_bundle_arrays(result.bundle_dir)) == {"patches", "canvas"}
    assert not (result.bundle_dir / PROBE_FIGURE).exists()
    np.testing.assert_array_equal(np.load(tmp_path / "run" / network.PROBE_FILE), train.probe)


def test_refining_a_defocused_probe_recovers_it_and_fits_better_than_holding_it(small_dataset):
    """The data are simulated with the default probe; the network is handed it with an extra defocus of
    DEFOCUS_RAD at radius N/4 (error 0.34). Eight epochs of 4 steps at gridsize 2 (about 10 s each way):
    measured, the refined probe's error falls to 0.31 and the training NLL over its floor ends at 1.8e4
    against 2.5e4 with the probe held."""
    train, test = small_dataset
    wrong = defocused(train.probe, DEFOCUS_RAD)
    given = dataclasses.replace(train, probe=wrong)
    outcome = {}
    for refine in (False, True):
        spec, grouped, _, _ = prepare_job_data(
            given, test, GroupingSpec(gridsize=2, neighbor_count=7, n_groups=16, seed=0),
            ModelSpec(gridsize=2, learning_rate=1e-3, refine_probe=refine, probe_learning_rate_factor=30.0))
        model = pt_model.build_model(spec, wrong)
        pt_training.train(model, grouped, TrainSpec(max_epochs=8, batch_size=4, validation_split=0))
        fit = pt_training.evaluate(model, pt_training.loss_for(model), grouped, 4)["poisson_nll"]
        outcome[refine] = (probe_error(model.probe_array, train.probe), fit - poisson_nll_floor(grouped.intensity))
    start = probe_error(wrong, train.probe)
    assert outcome[False][0] == pytest.approx(start, rel=1e-5)
    assert outcome[True][0] < start - 0.02, (start, outcome)
    assert outcome[True][1] < 0.9 * outcome[False][1], outcome

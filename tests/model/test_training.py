"""Training: grouped inputs, the loss, history, callbacks, determinism, the trainable scale."""
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from ptycho.data import grouping
from ptycho.tf.model import build_model
from ptycho.data.batches import GroupedData, group_data, split_validation
from ptycho.spec import INTENSITY_EPSILON, NonFiniteLossError, TrainSpec
from ptycho.tf.training import FusedAdam, PinnLoss, poisson_nll, train

TINY = TrainSpec(max_epochs=2, batch_size=2, seed=5, validation_split=0.25)


@pytest.fixture(scope="module")
def tiny(sim, sim_scale):
    """8 gridsize-1 groups of the small dataset (6 train, 2 validation under TINY)."""
    groups = grouping.group_positions(sim[0].xcoords, sim[0].ycoords, 1, 1, 8, seed=2)
    return group_data(sim[0], groups, sim_scale)


@pytest.fixture(scope="module")
def tiny_history(tiny, make_spec, sim):
    return train(build_model(make_spec(1), sim[0].probe), tiny, TINY)


def test_group_data_gathers_channels_by_scan_index(sim, sim_scale):
    groups = grouping.group_positions(sim[0].xcoords, sim[0].ycoords, 2, 7, 5, seed=0)
    data = group_data(sim[0], groups, sim_scale)
    assert data.diffraction.shape == (5, 64, 64, 4) and data.diffraction.dtype == np.float32
    assert data.coords_relative.shape == (5, 1, 2, 4) and data.coords_relative.dtype == np.float32
    assert data.object.shape == (5, 64, 64, 4) and data.object.dtype == np.complex64
    b, c = 3, 2
    k = groups.nn_indices[b, c]
    np.testing.assert_allclose(data.diffraction[b, :, :, c], sim_scale * sim[0].diffraction[k], rtol=1e-6)
    np.testing.assert_array_equal(data.object[b, :, :, c], sim[0].Y[k])
    np.testing.assert_allclose(data.intensity, data.diffraction.astype(np.float64) ** 2, rtol=1e-6)
    assert group_data(sim[0], groups, sim_scale, with_object=False).object is None


def test_poisson_nll_matches_numpy_and_guards_zero_intensity():
    observed = np.array([0.0, 3.0, 10.0], np.float32)
    predicted = np.array([0.0, 2.0, 12.0], np.float32)
    guarded = predicted.astype(np.float64) + INTENSITY_EPSILON
    expected = np.mean(guarded - observed * np.log(guarded))
    assert float(poisson_nll(observed, predicted)) == pytest.approx(expected, rel=1e-6)


def test_loss_terms_and_weights():
    ones, zeros = tf.ones((1, 4, 4, 1)), tf.zeros((1, 4, 4, 1))
    targets = {"intensity": ones * 4.0, "object": tf.complex(ones, zeros)}
    outputs = {"intensity": ones * 2.0, "object": tf.complex(ones * 0.5, zeros)}
    terms = PinnLoss(nll_weight=1.0, mae_weight=2.0, realspace_weight=3.0)(targets, outputs)
    assert float(terms["amplitude_mae"]) == pytest.approx(0.5, rel=1e-5)
    assert float(terms["realspace_mse"]) == pytest.approx(0.25, rel=1e-5)
    nll = 2.0 - 4.0 * math.log(2.0)
    assert float(terms["loss"]) == pytest.approx(nll + 2 * 0.5 + 3 * 0.25, rel=1e-5)
    assert PinnLoss().term_names == ["loss", "poisson_nll"]
    with pytest.raises(ValueError, match="at least one loss weight"):
        PinnLoss(nll_weight=0.0)


def test_diffraction_mae_compares_amplitudes_and_needs_no_ground_truth():
    ones = tf.ones((1, 4, 4, 1))
    targets = {"intensity": ones * 9.0}  # observed amplitude 3; no object
    outputs = {"amplitude": ones * 1.5, "intensity": ones * 2.25, "object": tf.complex(ones, ones * 0)}
    loss = PinnLoss(nll_weight=0.0, diffraction_mae_weight=2.0)
    terms = loss(targets, outputs)
    assert loss.term_names == ["loss", "diffraction_mae"] and not loss.needs_ground_truth
    assert float(terms["diffraction_mae"]) == pytest.approx(1.5, rel=1e-6)
    assert float(terms["loss"]) == pytest.approx(3.0, rel=1e-6)


def test_history_has_the_documented_metrics(tiny_history):
    expected = {"loss", "poisson_nll", "val_loss", "val_poisson_nll", "intensity_scale", "learning_rate",
                "epoch_time_s"}
    assert set(tiny_history) == expected | {"step_loss"}
    assert all(len(tiny_history[name]) == TINY.max_epochs for name in expected)
    assert tiny_history["loss"] == tiny_history["poisson_nll"]
    assert all(t > 0 for t in tiny_history["epoch_time_s"])


def test_step_loss_is_the_loss_of_each_batch(tiny_history):
    """6 training groups in batches of 2: 3 steps per epoch; each epoch's loss (Keras' running
    mean at the epoch's end) is the mean of its steps, the steps themselves differ."""
    steps = np.asarray(tiny_history["step_loss"]).reshape(TINY.max_epochs, 3)
    np.testing.assert_allclose(steps.mean(axis=1), tiny_history["loss"], rtol=1e-6)
    assert len(set(steps.ravel())) == steps.size


@pytest.mark.slow
def test_same_seed_gives_the_same_losses(tiny, tiny_history, make_spec, sim):
    again = train(build_model(make_spec(1), sim[0].probe), tiny, TINY)
    for name in ("loss", "val_loss", "intensity_scale"):
        assert again[name] == tiny_history[name]


def test_intensity_scale_trains(smoke_runs, make_spec):
    """The reference's Keras-3 defect: its log-scale never changed. Ours moves."""
    run = smoke_runs(1, True)
    scales = run.history["intensity_scale"]
    assert run.model.intensity_scale == scales[-1]
    assert abs(scales[-1] / run.spec.intensity_scale - 1) > 1e-4
    assert len(set(scales)) > 1


@pytest.mark.slow
def test_frozen_intensity_scale_stays_put(tiny, make_spec, sim):
    spec = make_spec(1, intensity_scale_trainable=False)
    history = train(build_model(spec, sim[0].probe), tiny.take(slice(0, 2)),
                    TrainSpec(max_epochs=1, batch_size=2, validation_split=0.0))
    assert history["intensity_scale"] == [pytest.approx(spec.intensity_scale, rel=1e-6)]


@pytest.mark.slow
def test_non_finite_loss_raises(tiny, make_spec, sim):
    broken = tiny.take(slice(0, 2))
    broken.diffraction[0, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteLossError, match="loss = nan"):
        train(build_model(make_spec(1), sim[0].probe), broken,
              TrainSpec(max_epochs=1, batch_size=2, validation_split=0.0))


class _RefuseToStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise RuntimeError("runner says no")


class _CountBatches(keras.callbacks.Callback):
    batches = 0

    def on_train_batch_end(self, batch, logs=None):
        type(self).batches += 1


def test_callback_error_in_on_train_begin_aborts_before_any_step(tiny, make_spec, sim):
    model = build_model(make_spec(1), sim[0].probe)
    before = [w.numpy().copy() for w in model.trainable_weights]
    with pytest.raises(RuntimeError, match="runner says no"):
        train(model, tiny, TINY, callbacks=[_CountBatches(), _RefuseToStart()])
    assert _CountBatches.batches == 0
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_ground_truth_terms_without_ground_truth_are_refused(tiny, make_spec, sim):
    no_truth = GroupedData(tiny.diffraction, tiny.coords_relative, None)
    with pytest.raises(ValueError, match="need ground-truth object patches"):
        train(build_model(make_spec(1, mae_weight=1.0), sim[0].probe), no_truth, TINY)


@pytest.mark.slow
def test_offsets_beyond_the_canvas_are_refused(smoke_runs):
    run = smoke_runs(2, True)
    far = GroupedData(run.data.diffraction, run.data.coords_relative * 10)
    with pytest.raises(ValueError, match="too small for these groups"):
        train(run.model, far, TINY)


@pytest.mark.parametrize("n, split, n_train", [(32, 0.05, 31), (8, 0.25, 6), (5, 0.0, 5), (1, 0.5, 1)])
def test_validation_split_follows_keras_rule(tiny, n, split, n_train):
    data = GroupedData(*(np.zeros((n, 1)) for _ in range(2)))
    fitted, held_out = split_validation(data, split)
    assert fitted.n_groups == n_train
    assert (held_out is None) == (n_train == n)


@pytest.mark.parametrize("field, value", [("max_epochs", 0), ("batch_size", 1.5), ("validation_split", 1.0),
                                          ("seed", -1), ("quiet", "no")])
def test_train_spec_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=f"TrainSpec.{field}"):
        TrainSpec(**{field: value})


def test_fused_adam_follows_keras_adam():
    """Same updates as keras.optimizers.Adam, also after the learning rate is changed."""
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(5, 3)).astype(np.float32), np.float32(0.5)]
    gradients = [[rng.normal(size=(5, 3)).astype(np.float32), np.float32(rng.normal())] for _ in range(6)]
    finals = []
    for optimizer in (keras.optimizers.Adam(1e-2), FusedAdam(1e-2)):
        weights = [keras.Variable(value) for value in start]
        optimizer.build(weights)
        for step, grads in enumerate(gradients):
            if step == 4:
                optimizer.learning_rate.assign(1e-3)
            optimizer.apply([tf.constant(g) for g in grads], weights)
        finals.append([w.numpy() for w in weights])
    for keras_value, fused_value in zip(*finals):
        np.testing.assert_allclose(fused_value, keras_value, rtol=1e-5, atol=1e-6)

"""The scaled phase settings end to end, and the reference's NaN defect (20 seeds)."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from ptycho.evaluation import bundle
from ptycho.data.grouping import compact_subset
from ptycho.data.batches import prepare_job_data
from ptycho.tf.model import build_model
from ptycho.pipeline import RECONSTRUCTION_FILE, TIMING_KEYS
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.stitching import check_offsets_fit
from ptycho.tf.training import PinnLoss, guarded_intensity, train
from ptycho.tf.workflow import run_phase_job

SCALED = GroupingSpec(gridsize=2, neighbor_count=7, n_groups=32, n_images=64, seed=0)
SCALED_TRAINING = TrainSpec(max_epochs=1, batch_size=4)
pytestmark = pytest.mark.slow  # a 512-position dataset and the full network


@pytest.fixture(scope="module")
def default_data():
    """The default simulated dataset at 512 positions; the test split cut to a compact 32 positions for speed."""
    train_data, test_data = simulate_dataset(SimulationSpec(n_images=512))
    return train_data, test_data.subset(compact_subset(test_data.xcoords, test_data.ycoords, 32, seed=0))


@pytest.fixture(scope="module")
def scaled_job(default_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("scaled")
    result = run_phase_job(*default_data, grouping=SCALED, model_spec=ModelSpec(), train_spec=SCALED_TRAINING,
                           run_dir=root / "run", bundle_dir=root / "bundle")
    return result, root


def test_twenty_seeds_give_finite_forward_passes_and_losses(default_data):
    """Forward pass + loss on every group of 20 seeds at the scaled settings: no NaN, no Inf.

    A narrow network (n_filters_scale 1) keeps it cheap; grouping, scaling, canvas sizing,
    reassembly, diffraction and the loss are the real ones.
    """
    prepared = [prepare_job_data(*default_data, dataclasses.replace(SCALED, seed=seed), ModelSpec(n_filters_scale=1))
                for seed in range(20)]
    largest = max(spec.canvas_size for spec, *_ in prepared)
    model = build_model(dataclasses.replace(prepared[0][0], canvas_size=largest), default_data[0].probe)
    loss = PinnLoss()
    for spec, train_data, _, _ in prepared:
        check_offsets_fit(spec, train_data.coords_relative)
        assert spec.canvas_size < 120  # compact groups: offsets of a few scan steps, not the whole field
        model.log_scale.assign(np.log(spec.intensity_scale))
        outputs = model(train_data.inputs())
        terms = loss(train_data.targets(), outputs)
        assert np.all(np.isfinite(outputs["intensity"].numpy()))
        assert np.all(np.isfinite(outputs["object"].numpy()))
        assert float(tf.reduce_min(guarded_intensity(outputs["intensity"]))) > 0
        assert np.isfinite(float(terms["loss"]))


def test_scaled_run_trains_without_nan(scaled_job):
    result, _ = scaled_job
    for name, values in result.history.items():
        assert np.all(np.isfinite(values)), name
    assert result.n_groups_train == 32


def test_second_seed_scaled_training_is_finite(default_data):
    spec, train_data, _, _ = prepare_job_data(*default_data, dataclasses.replace(SCALED, seed=7),
                                              ModelSpec(n_filters_scale=1))
    history = train(build_model(spec, default_data[0].probe), train_data, SCALED_TRAINING)
    assert all(np.all(np.isfinite(values)) for values in history.values())


def test_job_result_and_files(scaled_job):
    result, root = scaled_job
    assert result.bundle_dir == root / "bundle"
    assert result.stats_sha1 == bundle.stats_sha1(root / "bundle")
    assert result.bundle_stats == bundle.read_bundle_stats(root / "bundle")
    assert result.bundle_stats["quality"] == pytest.approx(result.quality)
    assert {"amp_mae", "phase_mae", "amp_ssim", "phase_ssim", "frc50"} <= set(result.quality)
    assert result.weights_path == root / "run" / "model.weights.h5" and result.weights_path.is_file()
    assert (root / "run" / "history.json").is_file() and (root / "run" / RECONSTRUCTION_FILE).is_file()
    assert set(result.timings_s) == set(TIMING_KEYS) and all(t >= 0 for t in result.timings_s.values())
    assert result.throughput_groups_per_s > 0
    assert result.intensity_scale == pytest.approx(result.history["intensity_scale"][-1])
    assert result.model_spec.canvas_size >= 64 and result.model_spec.intensity_scale > 0


def test_stitched_reconstruction_in_the_bundle_covers_the_test_scan(scaled_job, default_data):
    _, root = scaled_job
    with np.load(root / "run" / RECONSTRUCTION_FILE) as saved:
        canvas, covered = saved["canvas"], saved["covered"]
        assert len(saved["offsets_xy"]) == default_data[1].n_images * 4
    assert np.all(np.isfinite(canvas))
    assert np.mean(np.abs(canvas[covered]) > 0.05) > 0.95


class _Refuse(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        raise RuntimeError("blocked by the runner")


def test_failing_job_writes_no_bundle(default_data, tmp_path):
    with pytest.raises(RuntimeError, match="blocked by the runner"):
        run_phase_job(*default_data, grouping=dataclasses.replace(SCALED, gridsize=1, n_groups=4),
                      model_spec=ModelSpec(gridsize=1, n_filters_scale=1), train_spec=SCALED_TRAINING,
                      run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle", callbacks=[_Refuse()])
    assert not (tmp_path / "bundle").exists()


def test_gridsize_mismatch_is_a_clear_error(default_data, tmp_path):
    with pytest.raises(ValueError, match="grouping.gridsize=2 differs from model_spec.gridsize=1"):
        run_phase_job(*default_data, grouping=SCALED, model_spec=ModelSpec(gridsize=1), train_spec=SCALED_TRAINING,
                      run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle")


def test_job_without_stitching_bundles_the_models_own_canvas(default_data, tmp_path):
    result = run_phase_job(
        default_data[0], default_data[1].subset(np.arange(8)),
        grouping=dataclasses.replace(SCALED, n_groups=4, n_images=16),
        model_spec=ModelSpec(n_filters_scale=1), train_spec=TrainSpec(max_epochs=1, batch_size=4, validation_split=0.0),
        run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle", do_stitching=False,
    )
    assert result.quality == {}
    with np.load(tmp_path / "run" / RECONSTRUCTION_FILE) as saved:
        assert saved["canvas"].shape == (result.model_spec.canvas_size,) * 2
    canvas_doc = bundle.read_bundle_stats(tmp_path / "bundle")
    assert canvas_doc["training"]["model_canvas_size"] == result.model_spec.canvas_size

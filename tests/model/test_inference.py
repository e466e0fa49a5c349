"""Inference, global stitching and quality: every test position contributes, canvases fit."""
import numpy as np
import pytest

from ptycho.tf import inference
from ptycho import stitching
from ptycho.data.batches import group_data


def _footprint(stitched, radius):
    """(M, M) bool: canvas pixels within ``radius`` px (box) of a patch centre."""
    size = stitched.canvas.shape[0]
    footprint = np.zeros((size, size), bool)
    for dx, dy in np.round(stitched.offsets_xy).astype(int):
        row, col = size // 2 + dy, size // 2 + dx
        footprint[row - radius:row + radius + 1, col - radius:col + radius + 1] = True
    return footprint


@pytest.mark.parametrize("gridsize", [1, 2])
def test_every_test_position_seeds_one_group(sim, gridsize):
    test = sim[1]
    groups = stitching.inference_groups(test, gridsize, 7, seed=0)
    assert groups.n_groups == test.n_images
    assert set(np.unique(groups.nn_indices)) == set(range(test.n_images))


@pytest.mark.parametrize("gridsize", [1, 2])
def test_stitched_ground_truth_patches_reproduce_the_object(sim, gridsize):
    """Stitching the true patches at their global offsets gives back objectGuess (coordinates right)."""
    test = sim[1]
    groups = stitching.inference_groups(test, gridsize, 7, seed=0)
    stitched = inference.stitch_patches(group_data(test, groups, 1.0).object, groups)
    truth, inside = stitching.ground_truth_window(test.object_guess, stitched)
    mask = stitched.covered & inside
    assert mask.sum() > 0.9 * stitched.covered.sum()
    assert np.mean(np.abs(stitched.canvas - truth)[mask]) < 0.02
    scores = stitching.stitched_quality(stitched, test.object_guess)
    assert scores["amp_mae"] < 0.01 and scores["phase_mae"] < 0.02


@pytest.mark.slow
@pytest.mark.parametrize("gridsize", [1, 2])
def test_stitched_prediction_covers_the_whole_scanned_area(smoke_runs, sim, sim_scale, gridsize):
    """The reference's gridsize-2 defect showed a single tile; ours covers the scan footprint."""
    run, test = smoke_runs(gridsize, True), sim[1]
    groups = stitching.inference_groups(test, gridsize, 7, seed=0)
    data = group_data(test, groups, sim_scale)
    patches = inference.predict_patches(run.model, data.inputs(), batch_size=16)
    assert patches.shape == (test.n_images, 64, 64, gridsize**2)
    stitched = inference.stitch_patches(patches, groups)
    footprint = _footprint(stitched, radius=8)
    filled = np.abs(stitched.canvas) > 0.05
    assert filled[footprint].mean() > 0.95
    assert np.all(np.isfinite(stitched.canvas))


def test_predictions_are_deterministic(smoke_runs):
    run = smoke_runs(2, True)
    first = inference.predict_patches(run.model, run.data.inputs())
    second = inference.predict_patches(run.model, run.data.inputs())
    np.testing.assert_array_equal(first, second)


def test_canvas_is_the_required_size_for_the_offsets(sim):
    test = sim[1]
    groups = stitching.inference_groups(test, 2, 7, seed=0)
    stitched = inference.stitch_patches(group_data(test, groups, 1.0).object, groups, crop=24)
    assert stitched.crop == 24
    assert stitched.canvas.shape[0] == stitching.required_canvas_size(24, stitched.offsets_xy)
    assert stitched.canvas.shape[0] >= 24 + 2 * np.abs(stitched.offsets_xy).max()
    positions = np.transpose(groups.coords_nn[:, 0], (0, 2, 1)).reshape(-1, 2)
    np.testing.assert_allclose(stitched.centre_xy, np.round(positions.mean(axis=0)))


def test_ground_truth_window_outside_the_object_is_masked(sim):
    test = sim[1]
    groups = stitching.inference_groups(test, 1, 1, seed=0)
    stitched = inference.stitch_patches(group_data(test, groups, 1.0).object, groups)
    tiny_object = test.object_guess[:40, :40]
    truth, inside = stitching.ground_truth_window(tiny_object, stitched)
    assert truth.shape == stitched.canvas.shape and inside.sum() <= 40 * 40
    assert np.all(truth[~inside] == 0)


@pytest.mark.parametrize("crop", [3, 0, 80])
def test_bad_crop_is_a_clear_error(sim, crop):
    groups = stitching.inference_groups(sim[1], 1, 1, seed=0)
    patches = np.zeros((groups.n_groups, 64, 64, 1), np.complex64)
    with pytest.raises(ValueError, match="crop must be"):
        inference.stitch_patches(patches, groups, crop=crop)


def test_the_canvas_pass_gives_the_same_patches_at_any_batch(smoke_runs):
    # diffracted_patches runs one traced graph over batches of any size, the last one partial
    run = smoke_runs(2, True)
    inputs = {key: np.concatenate([value] * 3) for key, value in run.data.inputs().items()}  # 6 groups
    patches = inference.predict_patches(run.model, inputs, batch_size=4)
    whole = inference.diffracted_patches(run.model, patches, inputs["coords_relative"], batch_size=6)
    chunked = inference.diffracted_patches(run.model, patches, inputs["coords_relative"], batch_size=4)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    assert not np.allclose(whole, patches, atol=1e-3)  # the group average changed them


@pytest.mark.slow
def test_a_job_infers_at_its_own_batch_not_trainings(sim, tmp_path, monkeypatch):
    from ptycho.tf import workflow
    from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec

    seen = []

    def recording(name):
        original = getattr(workflow.BACKEND, name)
        return lambda model, first, *rest: seen.append((name, rest[-1])) or original(model, first, *rest)

    monkeypatch.setattr(workflow, "BACKEND", workflow.pipeline.JobBackend(**{
        **{field: getattr(workflow.BACKEND, field) for field in workflow.pipeline.JobBackend.__dataclass_fields__},
        "predict_patches": recording("predict_patches"), "diffracted_patches": recording("diffracted_patches")}))
    workflow.run_phase_job(
        *sim, grouping=GroupingSpec(gridsize=2, neighbor_count=7, n_groups=2, n_images=16),
        model_spec=ModelSpec(gridsize=2, n_filters_scale=1), train_spec=TrainSpec(max_epochs=1, batch_size=2),
        run_dir=tmp_path / "run", bundle_dir=tmp_path / "bundle", phase_offsets="none", inference_batch_size=8)
    assert seen == [("predict_patches", 8), ("diffracted_patches", 8)]

"""Issue 10: a runner that tells the user what it is doing, and records named for what they hold.

Fast unit tests of the pieces (no TensorFlow); the CLI tests check them in a real run.
"""
import json
import os
import pty

import pytest

from ptycho.evaluation.compare import compare_stats
from ptycho.evaluation.quality import floor_comparison
from ptycho.pipeline import poisson_nll_floor
from runners.evidence import hub
from runners import sweep
from runners.phases.callbacks import CLEAR_LINE, EpochLogger, epoch_line, epoch_metrics, progress_bar
from runners.evidence import PhaseRecord, inventory_section, summary_entry
from runners.evidence.outcome import blocker_label
from runners.process.tee import FdTee

FIT = {"n_groups_train": 28, "n_groups_val": 4, "n_batches": 7, "max_epochs": 3,
       "nll_floor": -3_250_012.5, "val_nll_floor": -3_200_001.0}


def test_the_nll_floor_is_the_data_against_itself():
    intensity = [[0.0, 1.0], [4.0, 9.0]]
    expected = sum(i - i * __import__("math").log(i) for i in (1.0, 4.0, 9.0)) / 4
    assert poisson_nll_floor(intensity) == pytest.approx(expected)


def test_epoch_metrics_add_the_nll_above_the_floor_and_groups_per_second():
    logs = {"loss": -3.25e6, "poisson_nll": -3.25e6, "val_loss": -3.2e6, "val_poisson_nll": -3.2e6,
            "epoch_time_s": 2.0}
    metrics = epoch_metrics(logs, FIT)
    assert metrics["nll_excess"] == pytest.approx(12.5) and metrics["val_nll_excess"] == pytest.approx(1.0)
    assert metrics["groups_per_s"] == pytest.approx(14.0)
    assert epoch_line(0, metrics, FIT) == (
        "epoch 1/3: loss -3250000 (NLL +12.5/px over the data's floor); "
        "val_loss -3200000 (NLL +1/px over the data's floor); 2.0 s, 14.0 groups/s")


def test_epoch_metrics_without_a_validation_split_or_a_fit_size():
    metrics = epoch_metrics({"loss": 1.5, "poisson_nll": 1.5}, {"nll_floor": 1.0, "val_nll_floor": None})
    assert metrics == {"loss": 1.5, "poisson_nll": 1.5, "nll_excess": 0.5}
    assert epoch_line(4, metrics, {}) == "epoch 5/?: loss 1.5 (NLL +0.5/px over the data's floor)"


def test_the_progress_bar_goes_to_the_terminal_writer_and_is_cleared_before_the_epoch_line():
    shown, said, logged, marks = [], [], [], []
    logger = EpochLogger(lambda epoch, metrics: logged.append((epoch, metrics)), marks.append, said.append,
                         progress=shown.append)
    logger.on_fit_data(FIT)
    logger.on_train_begin()
    logger.on_epoch_begin(0)
    for batch in range(7):
        logger.on_train_batch_end(batch)
    logger.on_epoch_end(0, {"loss": 2.0, "epoch_time_s": 1.0})
    logger.on_train_end()
    assert shown[0] == progress_bar(0, 0, FIT) and shown[6].endswith("[" + "#" * 24 + "] 7/7 batches")
    assert shown[-1] == CLEAR_LINE and all(not text.endswith("\n") for text in shown)
    assert said == ["epoch 1/3: loss 2; 1.0 s, 28.0 groups/s"]
    assert logged == [(0, {"loss": 2.0, "epoch_time_s": 1.0, "groups_per_s": 28.0})]
    assert marks == ["train_begin", "first_epoch_end", "train_end"]


def test_without_a_terminal_there_is_no_progress_writer(tmp_path):
    with FdTee(tmp_path / "cli.log", "# banner") as tee:
        assert tee.terminal() is None  # pytest's captured stdout is not a terminal


def test_on_a_terminal_the_progress_bypasses_the_log(tmp_path):
    leader, follower = pty.openpty()
    saved = os.dup(1)
    os.dup2(follower, 1)
    try:
        with FdTee(tmp_path / "cli.log", "# banner") as tee:
            write = tee.terminal()
            assert write is not None
            write("\r  epoch 1/1 [####] 1/1 batches")
            print("a plain line", flush=True)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(follower)
    seen = os.read(leader, 4096).decode()
    os.close(leader)
    assert "1/1 batches" in seen and "a plain line" in seen
    assert (tmp_path / "cli.log").read_text() == "# banner\na plain line\n"


def _slot(tmp_path):
    return hub.resolve_slot(tmp_path / "hub", "tf_baseline/phase_c1_scaled", tag="tf", phase_stem="phase_c1_scaled",
                            variant="scaled", guard_name="tf_translation_guard")


def _record(**changes):
    record = PhaseRecord(slot="s", title="T", utc_time="t", command="c", env={}, versions={}, git_commit="g",
                         parameters={}, paths={})
    for key, value in changes.items():
        setattr(record, key, value)
    return record


@pytest.mark.parametrize("step, label", [
    ("guard wait", "tf_translation_guard"), ("data", "data"), ("training", "training"),
    ("model build and grouping", "model_build_and_grouping"),
    ("inference, stitching and bundle", "inference_stitching_and_bundle"), ("", "unknown_step"),
])
def test_a_blocker_is_named_after_what_failed(tmp_path, step, label):
    slot = _slot(tmp_path)
    assert blocker_label(_record(step=step), slot) == label
    path = hub.write_blocker(slot, "# BLOCKED", 5.0, label=label)
    assert path.name.endswith(f"Z_{label}.md")


def test_a_comparison_section_names_its_digest_and_its_inputs():
    record = _record(status="GREEN", stats_sha1="abc", output_file="comparison.json",
                     inputs={"tf_bundle": "a/stats.json", "torch_bundle": "b"})
    section = inventory_section(record)
    assert "comparison.json sha1: abc" in section and "stats.json sha1" not in section
    assert "Inputs: tf_bundle=a/stats.json torch_bundle=b" in section and "Dataset:" not in section
    assert "comparison.json sha1 `abc`" in summary_entry(record)


def test_the_parity_summary_of_a_comparison():
    a = {"patch_amplitude": {"mean": 1.0, "std": 0.1, "min": 0.5, "max": 2.0, "var_zero_mean": 0.01},
         "canvas_amplitude": {"mean": 1.0, "std": 0.1, "min": 0.5, "max": 2.0}}
    b = json.loads(json.dumps(a))
    b["patch_amplitude"]["max"] = 2.5
    b["canvas_amplitude"]["std"] = 0.102
    parity = compare_stats(a, b, tolerance=0.1).parity()
    assert parity == {"worst_rel_diff": pytest.approx(0.25), "worst_statistic": "patch_amplitude.max",
                      "n_outside_tolerance": 1, "n_compared": 9}


def test_the_floor_comparison_leaves_out_a_ratio_to_a_zero_floor():
    compared = floor_comparison({"amp_mae": 0.03, "phase_mae": 0.1}, {"amp_mae": 0.06, "phase_mae": 0.0})
    assert compared == {"floor_amp_mae": 0.06, "amp_mae_to_floor": pytest.approx(0.5), "floor_phase_mae": 0.0}


def test_the_sweep_summary_counts_names_and_points_to_the_evidence(tmp_path):
    sweep.write_context(tmp_path, sweep.SweepContext(["gridsize"], 3, "parent123", "sqlite:///x", "E",
                                                     parent_ui="http://127.0.0.1:5000/#/experiments/1/runs/parent123"))
    sweep.record_job_end(tmp_path, 0, True, slot="tf_baseline/phase_c1_scaled__gridsize=1", run_id="r0")
    sweep.record_job_end(tmp_path, 2, False, slot="tf_baseline/phase_c1_scaled__gridsize=3", blocker="hub/x.md")
    text, all_green = sweep.summary(tmp_path)
    lines = text.splitlines()
    assert lines[0] == f"== Sweep {tmp_path}: 1 GREEN / 1 BLOCKED of 3 jobs, 1 without a report =="
    assert lines[1] == "  MLflow parent run parent123: http://127.0.0.1:5000/#/experiments/1/runs/parent123"
    assert lines[2] == "  job 0  GREEN    tf_baseline/phase_c1_scaled__gridsize=1  run r0"
    assert lines[3].startswith("  job 1  NO REPORT")
    assert lines[4] == "  job 2  BLOCKED  tf_baseline/phase_c1_scaled__gridsize=3  blocker: hub/x.md"
    assert not all_green


def test_the_tracker_writes_no_empty_tag_a_description_a_series_and_a_link(tmp_path):
    from runners.tracking import EMPTY, MAX_SERIES_POINTS, Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "E")
    run_id = tracker.start("slot", {"env.TF_XLA_FLAGS": "", "backend": "tensorflow"})
    tracker.set_tags({"other": ""})
    tracker.describe("**T**: GREEN")
    tracker.log_series("step_loss", [float(i) for i in range(2 * MAX_SERIES_POINTS)])
    tracker.rename("slot [BLOCKED]")
    run = tracker.client.get_run(run_id)
    assert run.data.tags["env.TF_XLA_FLAGS"] == EMPTY and run.data.tags["other"] == EMPTY
    assert run.data.tags["mlflow.note.content"] == "**T**: GREEN" and run.info.run_name == "slot [BLOCKED]"
    steps = [m.step for m in tracker.client.get_metric_history(run_id, "step_loss")]
    assert len(steps) == MAX_SERIES_POINTS and steps[:3] == [0, 2, 4]  # every 2nd step, at its index
    assert tracker.run_link() == f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs/{run_id}"
    tracker.uri = "http://mlflow.example:5000/"
    assert tracker.run_link().startswith("http://mlflow.example:5000/#/experiments/")

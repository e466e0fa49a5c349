"""The commands of issue 3 run as subprocesses on the real core, at small sizes through overrides:
one plain run (``xla=off``), one on real files with XLA on, one on a broken data file.

The sweeps of issues 4 and 9 are in test_runner_cli_sweeps.py and test_runner_cli_joblib.py (files
of their own, so that ``--dist loadfile`` can run them on other workers). Every run has cwd = a tmp
folder, and hub.root, tracking.uri and the dataset cache there (conftest.cli_run). One run per
command (module-scoped fixtures), read back by several tests.
"""
import hashlib
import json
import re

import pytest

from ptycho.determinism import available_cpus
from runners import tracking

from .conftest import CLI_EXPERIMENT, CLI_SLOT, CLI_SMALL

pytestmark = pytest.mark.slow
SMALL, EXPERIMENT, SLOT = CLI_SMALL, CLI_EXPERIMENT, CLI_SLOT


@pytest.fixture(scope="module")
def xla_off(cli_run):
    return cli_run("xla_off", "c1=scaled", "xla=off", *SMALL)


def test_green_run_exits_0_and_says_so_last(xla_off):
    assert xla_off.done.returncode == 0, xla_off.done.stdout[-3000:]
    assert xla_off.last_line.startswith("GREEN: Phase C1 — TF scaled baseline; stats.json sha1 ")


def test_cli_log_holds_everything_the_job_printed_including_tensorflow_native_lines(xla_off):
    log = (xla_off.hub / SLOT / "cli" / "train_tf_phase_c1_scaled.log").read_text()
    assert log.startswith("# Phase C1 — TF scaled baseline")
    assert "step: guard" in log and "step: data" in log and "GREEN: Phase C1" in log
    assert re.search(r"^[IWE]0000 .*\.cc:\d+\]", log, re.M), "no TensorFlow C++ log line captured"


def test_the_run_talks_an_epoch_line_and_a_closing_block(xla_off):
    """Issue 10: one line per epoch (loss, the NLL above the data's floor, val loss, groups/s) and a
    closing block (status, quality against the floor, MLflow run and link, bundle, section)."""
    out = xla_off.done.stdout
    log = (xla_off.hub / SLOT / "cli" / "train_tf_phase_c1_scaled.log").read_text()
    epoch = re.search(r"epoch 1/1: loss (\S+) \(NLL ([-+]\S+)/px over the data's floor\); val_loss \S+ "
                      r"\(NLL \S+/px over the data's floor\); [\d.]+ s, ([\d.]+) groups/s", log)
    assert epoch, log[-3000:]
    assert float(epoch.group(2)) > 0 and float(epoch.group(3)) > 0
    assert "\r" not in log  # no progress bar in the log (nor without a terminal)
    block = out[out.index("== Phase C1 — TF scaled baseline: GREEN =="):].splitlines()
    run = xla_off.run_of()
    fields = {line.split()[0]: line.split(None, 1)[1] for line in block[1:-1] if line.startswith("  ") and
              not line.startswith("   ")}
    assert re.match(r"amp_mae [\d.]+ \([\d.]+x the constant-object floor\), phase_mae [\d.]+ rad", fields["quality"])
    assert fields["training"].startswith("1 epoch, final loss ")
    experiment = run.info.experiment_id
    assert fields["MLflow"] == (f"run {run.info.run_id}: http://127.0.0.1:5000/#/experiments/{experiment}/runs/"
                                f"{run.info.run_id}")
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    assert fields["bundle"] == f"hub/{SLOT}/analysis/forward_parity_debug_tf"
    assert fields["section"] == '"Phase C1 — TF scaled baseline" in hub/analysis/artifact_inventory.txt'
    assert block[-1].startswith("GREEN: ")
    ratios = run.data.metrics["quality.amp_mae_to_floor"], run.data.metrics["quality.phase_mae_to_floor"]
    assert ("WARNING" in fields) == (max(ratios) >= 1), (ratios, fields.get("WARNING"))  # issue 22


def test_the_mlflow_run_answers_at_a_glance(xla_off):
    """A readable loss beside the raw one, the loss per step, a description, no empty tag."""
    run = xla_off.run_of()
    metrics, tags = run.data.metrics, run.data.tags
    assert metrics["nll_excess"] > 0 and metrics["val_nll_excess"] > 0 and metrics["groups_per_s"] > 0
    # One epoch on 32 groups leaves the network's output close to a constant object: this run
    # measured amp 1.049x and phase 0.759x the floor, an untrained network 1.012x and 0.758x (the
    # phase comes from the centre-of-mass anchoring, phase_offsets=com). So the bounds cannot ask
    # for learning; they catch an output worse than a constant object (a network emitting noise
    # amplitudes: 1.28x) and stitching that loses the anchoring (phase_offsets=none: 1.00x).
    assert 0 < metrics["quality.amp_mae_to_floor"] < 1.15 and metrics["quality.floor_amp_mae"] > 0
    assert 0 < metrics["quality.phase_mae_to_floor"] < 0.85
    steps = xla_off.client.get_metric_history(run.info.run_id, "step_loss")
    history = json.loads((xla_off.hub / SLOT / "run_scaled" / "history.json").read_text())
    assert [m.step for m in steps] == list(range(len(history["step_loss"]))) and len(steps) > 1
    note = tags["mlflow.note.content"]
    assert "**Phase C1 — TF scaled baseline**: GREEN" in note and "artifact_inventory.txt" in note
    assert f"hub/{SLOT}/analysis/forward_parity_debug_tf" in note
    assert "blocker" not in tags and all(value != "" for value in tags.values())
    assert run.info.run_name == SLOT
    warned = max(metrics["quality.amp_mae_to_floor"], metrics["quality.phase_mae_to_floor"]) >= 1
    assert ("quality_warning" in tags) == warned and ("**Quality warning**" in note) == warned


def test_timings_name_what_they_time(xla_off):
    timings = json.loads((xla_off.hub / SLOT / "run_scaled" / "timings.json").read_text())
    assert timings["training_s"] >= timings["first_epoch_s"] > 0
    assert abs(timings["training_s"] - timings["first_epoch_s"] - timings["later_epochs_s"]) < 1e-3
    stats = json.loads((xla_off.hub / SLOT / "analysis/forward_parity_debug_tf/stats.json").read_text())
    canvas = json.loads((xla_off.hub / SLOT / "analysis/forward_parity_debug_tf/canvas.json").read_text())
    assert "canvas_size" not in stats["training"]  # the model's canvas is not the stitched one
    assert stats["training"]["model_canvas_size"] != canvas["canvas_size"]


def test_the_mlflow_copy_of_the_cli_log_is_complete(xla_off, tmp_path):
    """Issue 9: the CLI log was copied into MLflow before its last lines (the GREEN line) were written."""
    run = xla_off.run_of()
    copy = xla_off.client.download_artifacts(run.info.run_id, "logs/train_tf_phase_c1_scaled.log", str(tmp_path))
    text = open(copy).read()
    assert text == (xla_off.hub / SLOT / "cli" / "train_tf_phase_c1_scaled.log").read_text()
    assert text.rstrip().splitlines()[-1].startswith("GREEN: Phase C1 — TF scaled baseline")


def test_guard_logs_have_a_header_and_the_pytest_output(xla_off):
    slot_log = (xla_off.hub / SLOT / "green" / "pytest_tf_translation_guard.log").read_text()
    assert slot_log == (xla_off.hub / "green" / "pytest_tf_translation_guard.log").read_text()
    assert "# command: python -m pytest runners/process/guard_checks/tf_translation.py::" in slot_log
    assert "# env: TF_XLA_FLAGS=--tf_xla_auto_jit=0 USE_XLA_TRANSLATE=0" in slot_log
    assert "# result: GREEN (exit 0)" in slot_log and "test_non_xla_translation_guard PASSED" in slot_log


def test_bundle_and_run_outputs_are_in_the_slot(xla_off):
    bundle = xla_off.hub / SLOT / "analysis" / "forward_parity_debug_tf"
    for name in ("stats.json", "offsets.json", "canvas.json", "patch_amplitude_grid.png", "canvas_amplitude.png",
                 "loss_curve.png"):
        assert (bundle / name).is_file(), name
    run_dir = xla_off.hub / SLOT / "run_scaled"
    timings = json.loads((run_dir / "timings.json").read_text())
    assert {"imports_s", "data_s", "first_epoch_s", "guard_s", "mlflow_s", "hub_s", "job_s"} <= set(timings)
    assert (run_dir / "history.json").is_file()


def test_inventory_section_carries_the_design_fields_and_the_recomputed_sha1(xla_off):
    sha1 = hashlib.sha1((xla_off.hub / SLOT / "analysis/forward_parity_debug_tf/stats.json").read_bytes()).hexdigest()
    lines = xla_off.section().splitlines()
    assert lines[0] == "Phase C1 — TF scaled baseline"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Status"] == "GREEN" and fields["stats.json sha1"] == sha1
    assert fields["Command"].startswith("python -m runners.phase c1=scaled xla=off dataset.simulation.n_images=96")
    assert fields["Env"] == "TF_XLA_FLAGS=--tf_xla_auto_jit=0 USE_XLA_TRANSLATE=0"
    threads = available_cpus()  # threads=null: every CPU of the job's affinity mask, fixed for the run
    assert fields["Compute"] == f"threads={threads} inter_op_threads=1 op_determinism=on"
    assert "tensorflow-cpu=" in fields["Versions"] and "mlflow=" in fields["Versions"]
    assert re.fullmatch(r"[0-9a-f]{40}( \(dirty\))?", fields["Git commit"])
    assert "n_images=64 n_groups=32" in fields["Parameters"] and "stitching=true" in fields["Parameters"]
    assert fields["Bundle"] == f"hub/{SLOT}/analysis/forward_parity_debug_tf"
    assert fields["CLI log"] == f"hub/{SLOT}/cli/train_tf_phase_c1_scaled.log"
    assert fields["Guard"] == f"GREEN; log hub/{SLOT}/green/pytest_tf_translation_guard.log"
    run = xla_off.run_of()
    assert f"run_id={run.info.run_id}" in fields["MLflow"] and "tracking_uri=sqlite:///" in fields["MLflow"]
    summary = (xla_off.hub / "summary.md").read_text()
    assert f"`{SLOT}`" in summary and sha1 in summary and run.info.run_id in summary


def test_mlflow_run_has_params_metrics_tags_inputs_and_artifacts(xla_off):
    run = xla_off.run_of()
    sha1 = hashlib.sha1((xla_off.hub / SLOT / "analysis/forward_parity_debug_tf/stats.json").read_bytes()).hexdigest()
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["c1.gridsize"] == "2" and params["xla.mode"] == "off" and params["c1.n_groups"] == "32"
    assert tags["backend"] == "tensorflow" and tags["phase"] == "c1" and tags["xla_mode"] == "off"
    assert tags["guard_status"] == "GREEN" and tags["stats_sha1"] == sha1 and tags["status"] == "GREEN"
    assert tags["xla.tf_import.TF_XLA_FLAGS"] == "--tf_xla_auto_jit=0" and tags["xla.isolated"] == "no"
    assert tags["compute.op_determinism"] == "on" and tags["compute.threads"] == str(available_cpus())
    inputs = {i.dataset.digest: i for i in run.inputs.dataset_inputs}
    assert len(inputs) == 2 and all(len(digest) == 36 for digest in inputs)
    train_sha1 = tags["dataset.train_sha1"]
    assert train_sha1[:36] in inputs and len(train_sha1) == 40
    assert tags["parity_key"] == tracking.parity_key(train_sha1, tags["dataset.test_sha1"], {
        "N": 64, "gridsize": 2, "n_images": 64, "n_groups": 32, "neighbor_count": 7, "batch_size": 4,
        "max_epochs": 1, "seed": 0})
    history = xla_off.client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == [0]
    assert "bundle.patch_amplitude.mean" in metrics and "quality.amp_ssim" in metrics
    assert "timing.first_epoch_s" in metrics and metrics["throughput_groups_per_s"] > 0
    artifacts = {f.path for folder in ("bundle", "logs", "hydra")
                 for f in xla_off.client.list_artifacts(run.info.run_id, folder)}
    assert {"bundle/stats.json", "logs/train_tf_phase_c1_scaled.log", "logs/pytest_tf_translation_guard.log",
            "hydra/config.yaml", "hydra/overrides.yaml"} <= artifacts


def _fly001_files(workdir):
    """Real files in the NPZ contract at the paths dataset=fly001 expects (made by the simulator)."""
    from ptycho.data.npz import save_npz
    from ptycho.data.simulate import SimulationSpec, simulate_dataset

    folder = workdir / "datasets" / "fly001_reconstructed_prepared"
    train, test = simulate_dataset(SimulationSpec(n_images=96, seed=3))
    save_npz(folder / "fly001_reconstructed_final_downsampled_data_train.npz", train)
    save_npz(folder / "fly001_reconstructed_final_downsampled_data_test.npz", test)


@pytest.fixture(scope="module")
def fly001_xla_on(cli_run):
    return cli_run("fly001", "c1=scaled", "dataset=fly001", prepare=_fly001_files)


def test_xla_on_run_on_real_files(fly001_xla_on):
    run = fly001_xla_on
    assert run.done.returncode == 0, run.done.stdout[-3000:]
    fields = dict(line.split(": ", 1) for line in run.section().splitlines()[1:])
    assert fields["Env"] == "TF_XLA_FLAGS= USE_XLA_TRANSLATE=1"
    train = run.workdir / "datasets/fly001_reconstructed_prepared/fly001_reconstructed_final_downsampled_data_train.npz"
    assert f"train_sha1={hashlib.sha1(train.read_bytes()).hexdigest()}" in fields["Dataset"]
    assert "name=fly001" in fields["Dataset"]
    tags = run.run_of().data.tags
    assert tags["xla_mode"] == "on" and tags["xla.tf_import.TF_XLA_FLAGS"] == "<empty>"
    assert tags["env.USE_XLA_TRANSLATE"] == "1"


def test_broken_data_file_blocks_with_the_blocker_path_last(cli_run, write_guard, tmp_path):
    def broken(workdir):
        folder = workdir / "datasets" / "fly001_reconstructed_prepared"
        folder.mkdir(parents=True)
        for split in ("train", "test"):
            (folder / f"fly001_reconstructed_final_downsampled_data_{split}.npz").write_bytes(b"not an npz")

    run = cli_run("broken", "c1=scaled", "dataset=fly001", f"guard.selector={write_guard(tmp_path, True)}",
                  prepare=broken)
    assert run.done.returncode == 1
    path = run.last_line.removeprefix("blocker: ")
    blocker = run.workdir / path
    assert blocker.is_file() and "DataContractError" in blocker.read_text() and blocker.name.endswith("Z_data.md")
    assert run.done.stdout.count("blocker: ") == 1 and "HYDRA_FULL_ERROR" not in run.done.stdout
    assert "Status: BLOCKED" in run.section()
    (failed,) = run.runs()
    assert failed.info.status == "FAILED" and failed.data.tags["status"] == "BLOCKED"
    assert failed.info.run_name == f"{SLOT} [BLOCKED]" and failed.data.tags["blocker"] == path
    assert "**Phase C1 — TF scaled baseline**: BLOCKED at step 'data'" in failed.data.tags["mlflow.note.content"]

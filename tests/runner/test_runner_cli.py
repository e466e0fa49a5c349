"""The commands of issues 3 and 4 run as subprocesses on the real core, at small sizes through overrides.

Issue 4: a joblib sweep over both backends and two gridsizes, then ``c2=tf_vs_torch`` in the
same folder and MLflow store (one comparison per gridsize).

Every run has cwd = a tmp folder, and hub.root, tracking.uri and the dataset cache there.
One run per command (module-scoped fixtures), read back by several tests.
"""
import hashlib
import json
import re

import pytest
from mlflow.tracking import MlflowClient

from ptycho.determinism import available_cpus
from runners import hub, tracking

from ..png_checks import assert_comparison_figure

pytestmark = pytest.mark.slow
SMALL = ["dataset.simulation.n_images=96"]  # 72 train / 24 test positions; c1 stays at 'scaled'
EXPERIMENT = "FIX-PYTORCH-FORWARD-PARITY-001"
SLOT = "tf_baseline/phase_c1_scaled"


class Run:
    """A finished CLI run: its folder, completed process and MLflow client."""

    def __init__(self, workdir, done):
        self.workdir, self.done = workdir, done
        self.hub = workdir / "hub"
        self.client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")

    @property
    def last_line(self):
        return self.done.stdout.strip().splitlines()[-1]

    def section(self, slot=SLOT):
        return hub.read_section((self.hub / "analysis" / "artifact_inventory.txt").read_text(), slot)

    def runs(self):
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        return self.client.search_runs([experiment.experiment_id])

    def run_of(self, slot=SLOT):
        (found,) = [r for r in self.runs() if r.info.run_name == slot]
        return found


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, isolated_overrides, run_cli):
    """cli_run(name, *args, prepare=None) -> Run of ``python -m runners.phase *args`` in a new folder."""
    def start(name, *args, prepare=None):
        workdir = tmp_path_factory.mktemp(name)
        if prepare:
            prepare(workdir)
        return Run(workdir, run_cli([*args, *isolated_overrides(workdir)], cwd=workdir, timeout=600))

    return start


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
    assert "# command: python -m pytest tests/tf_helper/test_translation_shape_guard.py::" in slot_log
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
    from ptycho.data import save_npz
    from ptycho.simulate import SimulationSpec, simulate_dataset

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


@pytest.fixture(scope="module")
def mixed_xla_sweep(cli_run, isolated_overrides, run_cli):
    """A plain ``xla=off`` run, then the sweep ``xla=on,off`` in the same folder (``.plain``: the first)."""
    plain = {}

    def plain_run_first(workdir):
        plain["done"] = run_cli(["c1=scaled", "xla=off", *SMALL, *isolated_overrides(workdir)], cwd=workdir,
                                timeout=600)

    run = cli_run("mixed", "-m", "c1=scaled", "xla=on,off", *SMALL, prepare=plain_run_first)
    run.plain = plain["done"]
    return run


def test_a_sweep_leaves_the_plain_runs_slot_alone(mixed_xla_sweep):
    """Issue 9: the sweep's isolated job (a fresh process) filed its record under the plain slot."""
    run = mixed_xla_sweep
    assert run.plain.returncode == 0, run.plain.stdout[-3000:]
    section = run.section()
    assert section.splitlines()[0] == "Phase C1 — TF scaled baseline"
    assert "Command: python -m runners.phase c1=scaled xla=off dataset.simulation.n_images=96" in section
    command = section.split("Command: ")[1].splitlines()[0]
    assert "xla=on,off" not in command and "of the multirun" not in command, command
    summary = (run.hub / "summary.md").read_text()
    entry = hub.read_section(summary, SLOT, markdown=True)
    assert entry.startswith(f"### Phase C1 — TF scaled baseline (`{SLOT}`)") and "xla=on,off" not in entry


def test_a_mixed_xla_sweep_runs_each_job_in_a_process_of_its_own_mode(mixed_xla_sweep):
    run = mixed_xla_sweep
    assert run.done.returncode == 0, run.done.stdout[-3000:]
    on, off = run.run_of(f"{SLOT}__xla=on"), run.run_of(f"{SLOT}__xla=off")
    assert on.data.tags["xla.tf_import.TF_XLA_FLAGS"] == "<empty>"
    assert on.data.tags["xla.tf_import.USE_XLA_TRANSLATE"] == "1"
    assert off.data.tags["xla.tf_import.TF_XLA_FLAGS"] == "--tf_xla_auto_jit=0"
    assert off.data.tags["xla.tf_import.USE_XLA_TRANSLATE"] == "0"
    assert off.data.tags["xla.isolated"] == "yes" and on.data.tags["xla.isolated"] == "no"
    assert on.data.tags["xla.pid"] != off.data.tags["xla.pid"]
    for slot, env in ((f"{SLOT}__xla=on", "TF_XLA_FLAGS= USE_XLA_TRANSLATE=1"),
                      (f"{SLOT}__xla=off", "TF_XLA_FLAGS=--tf_xla_auto_jit=0 USE_XLA_TRANSLATE=0")):
        section = run.section(slot)
        assert "Status: GREEN" in section and f"Env: {env}" in section
        assert section.splitlines()[0] == f"Phase C1 — TF scaled baseline [{slot.split('__')[1]}]"
        guard_log = (run.hub / slot / "green" / "pytest_tf_translation_guard.log").read_text()
        assert f"# env: {env}" in guard_log


def test_a_sweep_gets_one_parent_run_with_each_job_as_a_child(mixed_xla_sweep):
    runs = mixed_xla_sweep.runs()
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.info.status == "FINISHED"
    # the sweep's closing block: the count, the parent run, each member's slot and run
    out = mixed_xla_sweep.done.stdout
    summary = out[out.index("== Sweep "):].splitlines()
    assert summary[0].endswith(": 2 GREEN / 0 BLOCKED of 2 jobs ==")
    assert summary[1].startswith(f"  MLflow parent run {parent.info.run_id}: http://127.0.0.1:5000/#/experiments/")
    by_slot = {child.info.run_name: child.info.run_id for child in children}
    for line in summary[2:4]:
        _, job, status, slot, _, run_id = line.split()
        assert status == "GREEN" and by_slot[slot] == run_id
    assert parent.info.run_name.startswith("sweep: c1=scaled xla=on,off dataset.simulation.n_images=96")


TORCH_SLOT = "torch_baseline/phase_c1_scaled"


def _sweep_slot(backend, gridsize):
    base = SLOT if backend == "tensorflow" else TORCH_SLOT
    return f"{base}__backend={backend},gridsize={gridsize}"


def _banner_pid(slot_dir):
    """The pid in the banner of the slot's CLI log (``# <UTC time> pid <pid>``)."""
    [log] = (slot_dir / "cli").glob("*.log")
    return re.search(r"^# \S+ pid (\d+)$", log.read_text(), re.M).group(1)


def _key_structure(value):
    """Nested keys of a JSON value (leaves as None), to compare two bundles' layouts."""
    if isinstance(value, dict):
        return {key: _key_structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_key_structure(item) for item in value]
    return None


@pytest.fixture(scope="module")
def joblib_sweep(cli_run, tmp_path_factory, write_guard):
    guard = write_guard(tmp_path_factory.mktemp("guard"), True)  # for both backends' guard
    return cli_run(
        "joblib", "-m", "c1=scaled", "xla=off", "backend=tensorflow,pytorch", "gridsize=1,2",
        "hydra/launcher=parallel", f"guard.selector={guard}", "c1.model.n_filters_scale=1", *SMALL,
    )


@pytest.fixture(scope="module")
def sweep_then_c2(joblib_sweep, isolated_overrides, run_cli):
    """``c2=tf_vs_torch`` in the folder and MLflow store of the joblib sweep."""
    workdir = joblib_sweep.workdir
    return Run(workdir, run_cli(["c2=tf_vs_torch", *isolated_overrides(workdir)], cwd=workdir, timeout=300))


def test_a_joblib_sweep_of_four_jobs_gives_four_sections_and_one_parent_with_four_children(joblib_sweep):
    run = joblib_sweep
    assert run.done.returncode == 0, run.done.stdout[-3000:]
    inventory = (run.hub / "analysis" / "artifact_inventory.txt").read_text()
    slots = re.findall(r"^>>> BEGIN SECTION (\S+)$", inventory, re.M)
    assert sorted(slots) == sorted(_sweep_slot(b, g) for b in ("tensorflow", "pytorch") for g in (1, 2))
    assert inventory.count("Status: GREEN") == 4
    runs = run.client.search_runs(
        [run.client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.sweep = 'parent'")
    (parent,) = runs
    children = run.client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4 and {c.data.tags["slot"] for c in children} == set(slots)
    assert len({_banner_pid(run.hub / slot) for slot in slots}) >= 2  # joblib worker processes
    assert parent.info.status == "FINISHED"


def test_the_sweep_runs_the_pytorch_phase_with_the_same_evidence_as_tensorflow(joblib_sweep):
    run = joblib_sweep
    keys = set()
    for gridsize in (1, 2):
        tf_slot, torch_slot = _sweep_slot("tensorflow", gridsize), _sweep_slot("pytorch", gridsize)
        assert run.section(torch_slot).splitlines()[0].startswith("Phase C1 — PyTorch scaled baseline")
        tf_bundle = run.hub / tf_slot / "analysis" / "forward_parity_debug_tf"
        torch_bundle = run.hub / torch_slot / "analysis" / "forward_parity_debug_torch"
        files = {p.name for p in torch_bundle.iterdir()}
        assert files == {p.name for p in tf_bundle.iterdir()}
        assert {"stats.json", "offsets.json", "canvas.json"} <= files
        assert len([name for name in files if name.endswith(".png")]) >= 5
        for name in ("stats.json", "offsets.json", "canvas.json"):
            tf_json, torch_json = (json.loads((bundle / name).read_text()) for bundle in (tf_bundle, torch_bundle))
            assert _key_structure(torch_json) == _key_structure(tf_json), name
        tf_run, torch_run = run.run_of(tf_slot), run.run_of(torch_slot)
        assert torch_run.data.tags["backend"] == "pytorch" and torch_run.info.status == "FINISHED"
        assert set(torch_run.data.metrics) == set(tf_run.data.metrics)
        assert torch_run.data.tags["parity_key"] == tf_run.data.tags["parity_key"]
        keys.add(tf_run.data.tags["parity_key"])
    assert len(keys) == 2  # one per gridsize


def test_c2_after_the_sweep_leaves_one_green_comparison_per_gridsize(sweep_then_c2):
    run = sweep_then_c2
    assert run.done.returncode == 0, run.done.stdout[-3000:]
    c2_runs = {r.data.tags["slot"]: r for r in run.runs()
               if r.data.tags.get("phase") == "c2" and r.data.tags.get("c2") != "parent"}
    assert set(c2_runs) == {f"tf_vs_torch/phase_c2__gridsize={g}" for g in (1, 2)}
    [parent] = [r for r in run.runs() if r.data.tags.get("c2") == "parent"]
    assert parent.info.status == "FINISHED"
    inventory = (run.hub / "analysis" / "artifact_inventory.txt").read_text()
    assert inventory.count(">>> BEGIN SECTION tf_vs_torch/") == 2
    for gridsize in (1, 2):
        slot = f"tf_vs_torch/phase_c2__gridsize={gridsize}"
        result = json.loads((run.hub / slot / "analysis" / "comparison.json").read_text())
        tf_run, torch_run = (run.run_of(_sweep_slot(backend, gridsize)) for backend in ("tensorflow", "pytorch"))
        assert (result["tf_run_id"], result["torch_run_id"]) == (tf_run.info.run_id, torch_run.info.run_id)
        assert result["parity_key"] == tf_run.data.tags["parity_key"]
        assert result["figure_from"] == "arrays.npz"
        assert_comparison_figure(run.hub / slot / "analysis")
        assert run.section(slot).splitlines()[0] == f"Phase C2 — TF vs PyTorch comparison [gridsize={gridsize}]"
        assert c2_runs[slot].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert c2_runs[slot].data.tags["tf_run_id"] == tf_run.info.run_id
        assert result["verdict"] == "GREEN", result["failures"]
        assert "Status: GREEN" in run.section(slot)

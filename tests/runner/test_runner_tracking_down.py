"""A phase job whose MLflow is down still leaves its evidence, and ``runners.tracking.sync`` logs it later;
jobs started at once on a new SQLite store are all tracked.

The jobs run in this (pytest) process on the PyTorch backend at tiny sizes (the concurrent ones
as CLI subprocesses); MLflow is a loopback port with nothing listening, or a loopback socket
that never answers.
"""
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from runners.evidence import hub
from runners.tracking import sync
from runners.process import xla

from .conftest import run_in_process
from .test_tracking_faults import http_env_restored, refused_uri, silent_uri  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # runner runs against a dead or silent server


TINY = ["c1=scaled", "xla=off", "backend=pytorch", "c1.n_images=32", "c1.n_groups=8", "c1.batch_size=4",
        "c1.model.n_filters_scale=1"]
SMALL_SIMULATION = "dataset.simulation.n_images=96"
SLOT = "torch_baseline/phase_c1_scaled"
EXPERIMENT = "FIX-PYTORCH-FORWARD-PARITY-001"


@pytest.fixture
def phase_run(tmp_path, monkeypatch, capfd, isolated_overrides, write_guard):
    """phase_run(*overrides) -> (exit status, stdout + stderr, hub root, seconds), run in this process."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(xla, "needs_isolation", lambda: False)
    guard = write_guard(tmp_path, passing=True)

    def run(*overrides):
        files = any(o.startswith("dataset=") for o in overrides)
        t0 = time.monotonic()
        status, out, err = run_in_process([*TINY, *([] if files else [SMALL_SIMULATION]),
                                           *isolated_overrides(tmp_path), f"guard.selector={guard}", *overrides],
                                          capfd, monkeypatch)
        return status, out + err, tmp_path / "hub", time.monotonic() - t0

    return run


def _texts(root):
    return (root / "analysis" / "artifact_inventory.txt").read_text(), (root / "summary.md").read_text()


def _tracking_line(root, slot=SLOT):
    inventory, summary = _texts(root)
    section = hub.read_section(inventory, slot)
    entry = hub.read_section(summary, slot, markdown=True)
    (line,) = [text for text in section.splitlines() if text.startswith("Tracking: ")]
    assert line[len("Tracking: "):] in entry, entry
    return section, line


def test_with_the_server_down_the_run_is_green_on_disk_and_sync_logs_it_later(phase_run, tmp_path, capfd):
    status, console, root, seconds = phase_run(f"tracking.uri={refused_uri()}", "tracking.timeout_s=3")
    assert status == 0, console[-3000:]
    slot = root / SLOT
    stats = slot / "analysis" / "forward_parity_debug_torch" / "stats.json"
    sha1 = hashlib.sha1(stats.read_bytes()).hexdigest()
    section, line = _tracking_line(root)
    assert "Status: GREEN" in section and f"stats.json sha1: {sha1}" in section
    assert line.startswith("Tracking: FAILED at set-up (step ") and "python -m runners.tracking.sync" in line
    assert "  tracking  FAILED at set-up" in console and console.strip().splitlines()[-1].startswith("GREEN: ")
    timings = json.loads((slot / "run_scaled" / "timings.json").read_text())
    assert timings["mlflow_s"] < 3 + 2, timings

    store = f"sqlite:///{tmp_path / 'later.db'}"
    texts_before = _texts(root)
    assert sync.main([f"hub.root={root}", f"tracking.uri={store}"]) == 0
    assert f"synced {SLOT}" in capfd.readouterr().out
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == SLOT and run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["stats_sha1"] == sha1 and tags["status"] == "GREEN" and tags["backend"] == "pytorch"
    assert tags["slot"] == SLOT and len(tags["parity_key"]) == 40 and tags["sync_key"]
    assert "loss" in metrics and "timing.job_s" in metrics and any(key.startswith("bundle.") for key in metrics)
    assert run.data.params["c1.n_groups"] == "8"
    assert "bundle/stats.json" in {f.path for f in client.list_artifacts(run.info.run_id, "bundle")}
    section, line = _tracking_line(root)
    assert line.startswith("Tracking: SYNCED at ") and f"run_id={run.info.run_id}" in section

    # idempotent: again after success, and again after a sync that died before rewriting the hub
    assert sync.main([f"hub.root={root}", f"tracking.uri={store}"]) == 0
    for path, text in zip((root / "analysis" / "artifact_inventory.txt", root / "summary.md"), texts_before):
        path.write_text(text)
    assert sync.main([f"hub.root={root}", f"tracking.uri={store}"]) == 0
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [run.info.run_id]
    section, line = _tracking_line(root)
    assert line.startswith("Tracking: SYNCED at ") and f"run_id={run.info.run_id}" in section


def test_a_sync_while_the_server_is_still_down_changes_nothing(phase_run, tmp_path, capfd):
    uri = refused_uri()
    status, console, root, _ = phase_run(f"tracking.uri={uri}", "tracking.timeout_s=2")
    assert status == 0, console[-3000:]
    before = _texts(root)
    assert sync.main([f"hub.root={root}", "tracking.timeout_s=2"]) == 1
    assert f"{SLOT}: not synced" in capfd.readouterr().out
    assert _texts(root) == before


def test_with_a_server_that_never_answers_the_run_waits_timeout_s_once(phase_run, silent_uri):
    status, console, root, seconds = phase_run(f"tracking.uri={silent_uri}", "tracking.timeout_s=2")
    assert status == 0, console[-3000:]
    section, line = _tracking_line(root)
    assert "Status: GREEN" in section and "tracking.timeout_s=2" in line
    timings = json.loads((root / SLOT / "run_scaled" / "timings.json").read_text())
    assert timings["mlflow_s"] < 2 + 2, timings


def test_a_blocked_run_with_the_server_down_has_one_blocker_and_says_tracking_failed(phase_run, tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an npz")
    status, console, root, _ = phase_run(f"tracking.uri={refused_uri()}", "tracking.timeout_s=2", "dataset=fly001",
                                         f"dataset.train_data_file={broken}", f"dataset.test_data_file={broken}")
    assert status == 1, console[-3000:]
    assert len(list((root / SLOT / "red").glob("blocked_*_data.md"))) == 1
    section, line = _tracking_line(root)
    assert "Status: BLOCKED" in section and line.startswith("Tracking: FAILED at set-up")


@pytest.mark.slow
def test_three_jobs_started_at_once_on_a_new_store_are_green_and_tracked(tmp_path, run_cli, write_guard, sim_cache):
    """The first sweep of a new user: separate invocations open one new mlflow.db at the same moment."""
    guard = write_guard(tmp_path, passing=True)
    common = [*TINY, SMALL_SIMULATION, f"dataset.cache_dir={sim_cache}", f"guard.selector={guard}",
              f"hub.root={tmp_path / 'hub'}", "tracking.uri=sqlite:///mlflow.db",
              "tracking.timeout_s=60"]  # a loaded machine must not turn this into a timeout test

    def job(i):
        return run_cli([*common, f"hub.slot=torch_baseline/job{i}", f"hydra.run.dir=outputs/job{i}"], cwd=tmp_path)

    with ThreadPoolExecutor(max_workers=3) as pool:
        done = list(pool.map(job, range(3)))
    for finished in done:
        assert finished.returncode == 0, finished.stdout[-3000:]
    inventory, _ = _texts(tmp_path / "hub")
    assert inventory.count("Status: GREEN") == 3 and "Tracking: " not in inventory
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert sorted(run.info.run_name for run in runs) == [f"torch_baseline/job{i}" for i in range(3)]
    assert {run.info.status for run in runs} == {"FINISHED"}


def _bundle(folder):
    from ptycho.evaluation.bundle import write_debug_bundle

    rng = np.random.default_rng(0)
    patches = (1 + 0.1 * rng.random((4, 8, 8))) * np.exp(1j * 0.1 * rng.random((4, 8, 8)))
    canvas = (1 + 0.1 * rng.random((16, 16))) * np.exp(1j * 0.1 * rng.random((16, 16)))
    return write_debug_bundle(folder, patches, rng.random((4, 2)) * 4, canvas, intensity_scale=1.0)


def test_c2_with_the_server_down_compares_given_bundles_and_blocks_only_an_mlflow_lookup(tmp_path, run_cli,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # sync runs from the launch folder: a new store's artifacts go to its mlruns/
    down = refused_uri()
    tf, torch = _bundle(tmp_path / "tf"), _bundle(tmp_path / "torch")
    common = [f"hub.root={tmp_path / 'hub'}", f"tracking.uri={down}", "tracking.timeout_s=2"]
    done = run_cli(["c2=tf_vs_torch", f"c2.tf_bundle={tf}", f"c2.torch_bundle={torch}", *common], cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    section, line = _tracking_line(tmp_path / "hub", "tf_vs_torch/phase_c2")
    assert "Status: GREEN" in section and line.startswith("Tracking: FAILED at set-up")

    store = f"sqlite:///{tmp_path / 'later.db'}"
    assert sync.main([f"hub.root={tmp_path / 'hub'}", f"tracking.uri={store}"]) == 0
    client = MlflowClient(tracking_uri=store)
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.data.tags["verdict"] == "GREEN" and run.data.tags["status"] == "GREEN"

    lookup = run_cli(["c2=tf_vs_torch", f"hub.root={tmp_path / 'hub2'}", f"tracking.uri={down}",
                      "tracking.timeout_s=2"], cwd=tmp_path)
    assert lookup.returncode == 1
    assert "C2 finds the runs to compare in MLflow (c2.tf_bundle and c2.torch_bundle" in lookup.stdout

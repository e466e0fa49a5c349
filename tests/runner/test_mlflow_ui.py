"""Issue 26, parts 4 and 5: MLflow that answers at a glance, and no lock file left beside the store.

The store is a real SQLite store in a tmp folder; no phase runs here (the CLI tests of
test_disk_full.py and the browser check below use real runs or the UI).
"""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from runners.tracking import mlflow_ui, store
from runners import tracking

from .conftest import REPO

EXPERIMENT = "FIX-PYTORCH-FORWARD-PARITY-001"


def _tracker(tmp_path, experiment=EXPERIMENT):
    return tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment, 30)


def test_a_new_store_leaves_no_lock_file_and_an_existing_one_is_opened_without_one(tmp_path, monkeypatch):
    first = _tracker(tmp_path)
    assert first.failure is None and (tmp_path / "mlflow.db").is_file()
    assert not (tmp_path / "mlflow.db.lock").exists()
    taken = []
    monkeypatch.setattr(store, "FileLock", lambda *a, **k: taken.append(a) or pytest.fail("locked"))
    second = _tracker(tmp_path)
    assert second.failure is None and second.experiment_id == first.experiment_id and not taken
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mlflow.db"]


def test_the_experiment_is_a_model_training_experiment_with_the_runs_view(tmp_path):
    tracker = _tracker(tmp_path)
    tags = MlflowClient(tracker.uri).get_experiment(tracker.experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags[f"mlflow.sharedViewState.{tracking.RUNS_VIEW_KEY}"])
    assert view["selectedColumns"][:4] == ["tags.`status`", "tags.`phase`", "tags.`backend`", "tags.`gridsize`"]
    assert "metrics.`quality.amp_mae_to_floor`" in view["selectedColumns"]
    assert tracker.runs_link() == (f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs?"
                                   f"viewStateShareKey={tracking.RUNS_VIEW_KEY}&workflowType=machine_learning")


def test_an_experiment_made_before_gets_the_tags_it_lacks(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    old = client.create_experiment(EXPERIMENT)  # as an earlier version of the runner made it
    tracker = _tracker(tmp_path)
    assert tracker.experiment_id == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_quality_ratios_are_the_runs_first_metrics_and_hold_the_measured_values(tmp_path):
    tracker = _tracker(tmp_path)
    tracker.start("slot", {"status": "RUNNING"})
    tracker.reserve_metrics(tracking.QUALITY_FIRST)
    tracker.log_metrics({"loss": -3.3e6, "poisson_nll": -3.3e6}, step=0)
    time.sleep(0.01)  # a later timestamp than the reservation's
    tracker.log_metrics({"quality.amp_mae_to_floor": 0.8, "quality.phase_mae_to_floor": 0.6}, step=0)
    tracker.end(True)
    # the order MLflow's compare view reads (the REST API's list; the client keeps it)
    metrics = MlflowClient(tracker.uri).get_run(tracker.run_id).data.metrics
    assert list(metrics)[:2] == list(tracking.QUALITY_FIRST)
    assert metrics["quality.amp_mae_to_floor"] == 0.8 and metrics["quality.phase_mae_to_floor"] == 0.6


def test_an_unmeasured_quality_stays_nan_not_a_made_up_number(tmp_path):
    tracker = _tracker(tmp_path)
    tracker.start("slot", {"status": "RUNNING"})
    tracker.reserve_metrics(tracking.QUALITY_FIRST)
    metrics = MlflowClient(tracker.uri).get_run(tracker.run_id).data.metrics
    assert all(math.isnan(metrics[name]) for name in tracking.QUALITY_FIRST)


def test_the_ui_wrapper_starts_mlflow_ui_without_the_job_runners(tmp_path):
    args, extra = mlflow_ui.parse(["--port", "5077", "--workers", "1"])
    argv, env = mlflow_ui.command(args, extra, tmp_path)
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert argv[1:] == ["ui", "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--host", "127.0.0.1",
                        "--port", "5077", "--workers", "1"]
    assert mlflow_ui.runs_address(argv[3], EXPERIMENT, "127.0.0.1", 5077).startswith("no store at ")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium) for the browser check")
def test_the_runs_address_opens_the_runs_table_with_quality_and_status_columns(tmp_path):
    """The UI itself, in headless Chromium: the printed address shows the runs, not the GenAI page."""
    tracker = _tracker(tmp_path)
    for backend, ratio in (("tensorflow", 0.91), ("pytorch", 0.92)):
        tracker.start(f"{backend}_slot", {"status": "GREEN", "backend": backend, "phase": "c1", "gridsize": "2"})
        tracker.reserve_metrics(tracking.QUALITY_FIRST)
        tracker.log_metrics({"loss": -3345846.0, "quality.amp_mae_to_floor": ratio,
                             "quality.phase_mae_to_floor": 0.5})
        tracker.end(True)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "runners.tracking.mlflow_ui", "--port", str(port)], cwd=tmp_path,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        address = server.stdout.readline().split("runs: ", 1)[1].strip()
        assert address == tracking.runs_view_url(f"http://127.0.0.1:{port}", tracker.experiment_id)
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow ui did not start"
                time.sleep(0.5)
        page = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1600,900",
             "--virtual-time-budget=20000", "--dump-dom", address],
            capture_output=True, text=True, timeout=180).stdout
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)
    assert "tensorflow_slot" in page and "pytorch_slot" in page, page[-2000:]
    assert "Send your first trace" not in page
    for column in ("quality.amp_mae_to_floor", "status", "backend", "gridsize"):
        assert column in page, column


@pytest.fixture(scope="module")
def quiet_run(tmp_path_factory, sim_cache):
    """One tiny TF run from the command line, the environment setting no TF log level (as a user's)."""
    workdir = tmp_path_factory.mktemp("quiet_run")
    guard = workdir / "test_guard_green.py"
    guard.write_text("def test_guard_passes():\n    assert True\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key in ("TF_CPP_MIN_LOG_LEVEL", "TF_XLA_FLAGS", "USE_XLA_TRANSLATE"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "runners.phase", "c1=scaled", "xla=off", "c1.n_images=32", "c1.n_groups=8",
         "c1.model.n_filters_scale=1", "dataset.simulation.n_images=96", f"hub.root={workdir / 'hub'}",
         "tracking.uri=sqlite:///mlflow.db", f"dataset.cache_dir={sim_cache}", f"guard.selector={guard} -q",
         f"hydra.run.dir={workdir / 'outputs'}"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    return workdir, done


@pytest.mark.slow
def test_a_run_leaves_no_chatter_no_lock_and_a_run_that_reads_at_a_glance(quiet_run):
    workdir, done = quiet_run
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = (workdir / "hub" / "tf_baseline" / "phase_c1_scaled" / "cli" / "train_tf_phase_c1_scaled.log").read_text()
    for text in (done.stdout + done.stderr, log):
        assert "oneDNN" not in text and "absl::InitializeLog" not in text and "cpu_feature_guard" not in text
        assert "step: data" in text
    assert not (workdir / "mlflow.db.lock").exists() and (workdir / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert list(run.data.metrics)[:2] == list(tracking.QUALITY_FIRST)
    assert all(not math.isnan(run.data.metrics[name]) for name in tracking.QUALITY_FIRST)
    assert run.data.tags["gridsize"] == "2" and run.data.tags["status"] == "GREEN"
    assert run.data.tags["mlflow.note.content"].startswith("**Phase C1 — TF scaled baseline**: GREEN")
    runs_line = next(line for line in done.stdout.splitlines() if "runs table: " in line)
    assert runs_line.split("runs table: ")[1] == tracking.runs_view_url(tracking.LOCAL_UI, run.info.experiment_id)
    assert "python -m runners.tracking.mlflow_ui --backend-store-uri sqlite:///" in done.stdout


@pytest.mark.slow
def test_a_c2_run_has_a_description_and_its_parity_figures_first(tmp_path, monkeypatch, capfd, isolated_overrides):
    from .conftest import run_in_process
    from .test_runner_c2 import _bundle

    monkeypatch.chdir(tmp_path)
    tf, torch = _bundle(tmp_path / "tf"), _bundle(tmp_path / "torch")
    status, out, err = run_in_process(["c2=tf_vs_torch", f"c2.tf_bundle={tf}", f"c2.torch_bundle={torch}",
                                       *isolated_overrides(tmp_path)], capfd, monkeypatch)
    assert status == 0, out[-2000:] + err[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert run.data.tags["mlflow.note.content"].startswith("**Phase C2 — TF vs PyTorch comparison**: GREEN")
    assert "comparison.json" in run.data.tags["mlflow.note.content"]
    assert list(run.data.metrics)[0] == "parity.worst_rel_diff"

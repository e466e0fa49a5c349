"""The team tracking server (``python -m runners.services.tracking_server``) on a real PostgreSQL.

A throwaway PostgreSQL cluster of this machine's binaries runs on loopback for the module;
the server runs in a subprocess against it, with its artifact store in a tmp folder. Against
it: a parallel sweep of 4 phase jobs (both backends, gridsize 1 and 2, tiny sizes) and 8
concurrent plain clients, all read back through the server's REST API with plain HTTP (as a
colleague's browser or script would), then SIGTERM, which must leave no process behind.
``--init-postgres`` (the cluster made and stopped by the server command) has its own test.
"""
import hashlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from runners.services.local_postgres import LocalPostgres, find_bin_dir

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "FIX-PYTORCH-FORWARD-PARITY-001"
CLIENTS = 8
CLIENT_EXPERIMENT = "concurrent-clients"
SLOTS = {f"{'tf_baseline' if b == 'tensorflow' else 'torch_baseline'}/phase_c1_scaled__backend={b},gridsize={g}"
         for b in ("tensorflow", "pytorch") for g in (1, 2)}
CLIENT = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient  # imported before the start signal: the clients hit the server together
from runners.tracking import Tracker

uri, index, folder = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
(folder / f"ready_{index}").touch()
deadline = time.monotonic() + 120
while not (folder / "go").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
tracker = Tracker(uri, "concurrent-clients")
run_id = tracker.start(f"client {index}", {"status": "RUNNING", "client": index})
tracker.log_params({f"p{i}": i for i in range(150)})
tracker.log_dataset("shared", folder / "note.txt", "b" * 40, "train", 1)  # the same new dataset in all 8 at once
for step in range(5):
    tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
tracker.log_artifacts(folder / "note.txt", "logs")
tracker.set_tags({"status": "GREEN"})
tracker.end(green=True)
failure = getattr(tracker, "failure", None)  # a Tracker does not raise: it keeps its first failure
if failure is not None:
    sys.exit(f"tracking failed: {failure}")
print(run_id)
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A ``python -m runners.services.tracking_server`` subprocess, once it printed its tracking URI."""

    def __init__(self, args, env, workdir: Path, timeout_s: float = 180):
        self.workdir = workdir
        t0 = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runners.services.tracking_server", *args, "--log-file", str(workdir / "server.log")],
            cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        self.output, self.uri = [], None
        while self.uri is None:
            try:
                line = self.lines.get(timeout=max(0.1, t0 + timeout_s - time.monotonic()))
            except queue.Empty:
                self.stop()
                pytest.fail(f"no tracking.uri within {timeout_s} s: {self.output}\n{self.log_tail()}")
            if line is None:
                pytest.fail(f"the server command exited ({self.process.wait()}): {self.output}\n{self.log_tail()}")
            self.output.append(line)
            if line.startswith("tracking.uri="):
                self.uri = line.split("=", 1)[1]
        self.start_s = time.monotonic() - t0

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # end of output: the command exited

    def log_tail(self) -> str:
        log = self.workdir / "server.log"
        return log.read_text(errors="replace")[-3000:] if log.is_file() else ""

    def stop(self, signum=signal.SIGTERM, timeout_s: float = 60) -> int:
        """Send ``signum`` to the server command (not to its group) and wait for its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    child.kill()
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _get(uri: str, endpoint: str, **params) -> dict:
    with urllib.request.urlopen(f"{uri}{endpoint}?{urllib.parse.urlencode(params)}", timeout=30) as reply:
        return json.loads(reply.read())


def _post(uri: str, endpoint: str, body: dict) -> dict:
    request = urllib.request.Request(f"{uri}{endpoint}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def _search(uri: str, experiment: str, filter_string: str = "") -> list[dict]:
    """Runs of ``experiment`` through ``runs/search``; each run's tags as a dict under ``"tags"``."""
    experiment_id = _get(uri, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=experiment)["experiment"]["experiment_id"]
    runs = _post(uri, "/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment_id], "filter": filter_string, "max_results": 1000}).get("runs", [])
    for run in runs:
        run["tags"] = {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}
    return runs


def _artifact_path(run: dict, path: str) -> str:
    """The served-artifact path of a run's artifact: ``<experiment>/<run>/artifacts/<path>``."""
    root = run["info"]["artifact_uri"]
    assert root.startswith("mlflow-artifacts:/"), root  # proxied by the server, not a client-side path
    return f"{root[len('mlflow-artifacts:/'):].strip('/')}/{path}"


def _artifact_names(uri: str, run: dict, folder: str) -> set[str]:
    reply = _get(uri, "/api/2.0/mlflow-artifacts/artifacts", path=_artifact_path(run, folder))
    return {entry["path"] for entry in reply.get("files", [])}


def _download(uri: str, run: dict, path: str) -> bytes:
    with urllib.request.urlopen(f"{uri}/api/2.0/mlflow-artifacts/artifacts/{_artifact_path(run, path)}", timeout=30) as reply:
        return reply.read()


@pytest.fixture(scope="module")
def postgres_installed():
    if find_bin_dir() is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin")


@pytest.fixture(scope="module")
def postgres(postgres_installed):
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the module, in a folder of /tmp's own rather
    than pytest's (closed to others): started by root, PostgreSQL runs as the 'postgres' user."""
    root = Path(tempfile.mkdtemp(prefix="ptycho-pg-"))
    cluster = LocalPostgres(root, _free_port())
    t0 = time.monotonic()
    try:
        cluster.start()
        cluster.start_s = time.monotonic() - t0
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory):
    """The server command against the module's cluster (the URI in the environment, as the
    README advises for a password), 2 workers, artifacts in a tmp folder."""
    workdir = tmp_path_factory.mktemp("tracking_server")
    running = Server(["--artifacts-destination", str(workdir / "artifacts"), "--port", str(_free_port()),
                      "--workers", "2"], {"MLFLOW_BACKEND_STORE_URI": postgres.uri}, workdir)
    print(f"\ncluster start {postgres.start_s:.1f} s, server start {running.start_s:.1f} s")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def sweep(server, tmp_path_factory, isolated_overrides, write_guard, run_cli):
    """The sweep's completed process, with ``inventory`` (its hub's artifact_inventory.txt) added."""
    workdir = tmp_path_factory.mktemp("sweep_on_postgres")
    guard = write_guard(workdir, True)
    own = [o for o in isolated_overrides(workdir) if not o.startswith("tracking.uri=")]
    t0 = time.monotonic()
    done = run_cli(["-m", "c1=scaled", "xla=off", "gridsize=1,2", "backend=tensorflow,pytorch",
                    "hydra/launcher=parallel", f"tracking.uri={server.uri}", f"guard.selector={guard}",
                    "c1.model.n_filters_scale=1", "dataset.simulation.n_images=96", *own],
                   cwd=workdir, timeout=600)
    print(f"\nsweep of 4 against the server: {time.monotonic() - t0:.1f} s")
    inventory = workdir / "hub" / "analysis" / "artifact_inventory.txt"
    done.inventory = inventory.read_text() if inventory.is_file() else ""
    return done


def test_a_parallel_sweep_of_four_leaves_four_green_runs_with_artifacts_under_one_parent(server, sweep):
    assert sweep.returncode == 0, sweep.stdout[-3000:]
    assert sweep.inventory.count("Status: GREEN") == 4 and "Tracking: FAILED" not in sweep.inventory, sweep.inventory
    parents = _search(server.uri, EXPERIMENT, "tags.sweep = 'parent'")
    assert len(parents) == 1, sweep.stdout[:3000]
    (parent,) = parents
    assert parent["info"]["status"] == "FINISHED"
    # a sweep's name (all its overrides) passes runs.name's 250 characters, which PostgreSQL enforces
    assert parent["info"]["run_name"].startswith("sweep: c1=scaled xla=off gridsize=1,2") and len(parent["info"]["run_name"]) == 250
    assert f"MLflow parent run {parent['info']['run_id']}: {server.uri}/#/experiments/" in sweep.stdout
    children = _search(server.uri, EXPERIMENT, f"tags.`mlflow.parentRunId` = '{parent['info']['run_id']}'")
    assert {child["tags"]["slot"] for child in children} == SLOTS and len(children) == 4
    for child in children:
        assert child["info"]["status"] == "FINISHED" and child["tags"]["status"] == "GREEN", child["tags"]["slot"]
        assert len(child["inputs"]["dataset_inputs"]) == 2  # train and test; paired jobs log them at once
        assert {"stats.json", "offsets.json", "canvas.json", "arrays.npz"} <= _artifact_names(server.uri, child, "bundle")
        stats = _download(server.uri, child, "bundle/stats.json")
        assert hashlib.sha1(stats).hexdigest() == child["tags"]["stats_sha1"]
        assert "quality" in json.loads(stats)
        assert any(name.endswith(".log") for name in _artifact_names(server.uri, child, "logs"))


def test_run_metadata_lives_in_postgresql_and_artifacts_in_the_servers_folder(postgres, server, sweep):
    import psycopg2

    connection = psycopg2.connect(postgres.uri.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT r.run_uuid FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                           "WHERE e.name = %s", (EXPERIMENT,))
            run_ids = {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()
    assert len(run_ids) == 5  # the parent and its 4 children
    stats_files = list((server.workdir / "artifacts").glob("*/*/artifacts/bundle/stats.json"))
    assert {path.parts[-4] for path in stats_files} <= run_ids and len(stats_files) == 4


def test_eight_concurrent_clients_create_eight_runs_without_an_error(server, tmp_path):
    (tmp_path / "note.txt").write_text("one line\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    clients = [subprocess.Popen([sys.executable, "-c", CLIENT, server.uri, str(index), str(tmp_path)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(CLIENTS)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready_*"))) < CLIENTS and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    (tmp_path / "go").touch()
    results = [client.communicate(timeout=180) for client in clients]
    print(f"\n{CLIENTS} concurrent clients: {time.monotonic() - t0:.1f} s after the start signal")
    errors = [err for client, (_, err) in zip(clients, results) if client.returncode != 0]
    assert errors == [], errors[0][-2000:]
    run_ids = {out.split()[-1] for out, _ in results}  # the last line (MLflow prints "View run" lines before)
    runs = _search(server.uri, CLIENT_EXPERIMENT)
    assert {run["info"]["run_id"] for run in runs} == run_ids and len(runs) == CLIENTS
    for run in runs:
        assert run["info"]["status"] == "FINISHED" and run["tags"]["status"] == "GREEN"
        assert len(run["data"]["params"]) == 150 and len(run["inputs"]["dataset_inputs"]) == 1
        assert _artifact_names(server.uri, run, "logs") == {"note.txt"}


def test_sigterm_stops_the_server_and_every_process_it_started_but_not_the_database(postgres, server):
    """Runs last: it stops the module's server."""
    import psycopg2

    started = psutil.Process(server.process.pid).children(recursive=True)
    assert any("uvicorn" in " ".join(p.cmdline()) for p in started)
    assert server.stop(signal.SIGTERM) == 0, server.output
    _, alive = psutil.wait_procs(started, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{server.uri}/health", timeout=2)
    psycopg2.connect(postgres.uri.replace("postgresql+psycopg2://", "postgresql://")).close()  # a given database stays up


def test_init_postgres_makes_a_cluster_serves_on_it_and_stops_it_on_ctrl_c(postgres_installed, tmp_path):
    """The one-command form: the server command makes the cluster, and Ctrl-C stops both."""
    cluster_dir = Path(tempfile.mkdtemp(prefix="ptycho-pg-init-"))
    try:
        running = Server(["--init-postgres", str(cluster_dir), "--artifacts-destination", str(tmp_path / "artifacts"),
                          "--port", str(_free_port()), "--workers", "1"], {}, tmp_path)
        print(f"\n--init-postgres start {running.start_s:.1f} s")
        assert f"postgres: cluster {cluster_dir.resolve()} (created)" in running.output[0]
        experiment = _post(running.uri, "/api/2.0/mlflow/experiments/create", {"name": "init-postgres"})
        assert experiment["experiment_id"]
        started = psutil.Process(running.process.pid).children(recursive=True)
        assert running.stop(signal.SIGINT) == 0, running.output
        _, alive = psutil.wait_procs(started, timeout=10)
        assert alive == [] and not (cluster_dir / "data" / "postmaster.pid").exists()
    finally:
        LocalPostgres(cluster_dir, 0).stop()
        shutil.rmtree(cluster_dir, ignore_errors=True)

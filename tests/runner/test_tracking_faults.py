"""Tracking under faults (issue 9): a tracker that gives up in time and records what it missed,
and the first use of a new SQLite store by several processes at once.

A server that is down is a loopback port with nothing listening; a server that hangs is a
loopback socket that accepts connections (the kernel's backlog) and never answers.

Time is judged on the tracker's own records: what failed and why (an error, or "no answer ...
within <s> s" measured by the tracker against its deadline), and ``Tracker.seconds``, the time it
spent in MLflow. The wall clock gets bounds five times the intended ones: a loaded machine slows
the MLflow import and the threads, not the tracker's decisions.
"""
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runners import tracking
from runners.schema import TrackingConfig, to_spec

REPO = Path(__file__).resolve().parents[2]
HTTP_ENV = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")


@pytest.fixture(autouse=True)
def http_env_restored(monkeypatch):
    """The tracker sets MLflow's HTTP variables for the job: put them back after each test."""
    for name in HTTP_ENV:
        monkeypatch.delenv(name, raising=False)


def refused_uri() -> str:
    """A loopback URI with nothing listening (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.fixture
def silent_uri():
    """A loopback server that accepts connections and never answers a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


WALL_SLACK = 5  # times the intended bound, for the wall clock only


def _timed(make):
    t0 = time.monotonic()
    value = make()
    return value, time.monotonic() - t0


def _waited_s(failure, timeout_s: float) -> float:
    """The seconds the tracker says it waited before giving up at its deadline ``timeout_s``."""
    found = re.search(rf"^TimeoutError: no answer from \S+ within ([\d.]+) s \(tracking\.timeout_s={timeout_s:g}\)$",
                      failure.error)
    assert found, f"not given up at the deadline: {failure}"
    return float(found.group(1))


def _use_the_degraded_tracker(tracker, tmp_path):
    """Every call of a phase job, each returning at once without calling MLflow (the tracker's time in
    MLflow stays as it was); the ones not logged land in the journal."""
    spent = tracker.seconds
    calls, seconds = _timed(lambda: [
        tracker.start("tf_baseline/phase_c1_scaled", {"backend": "tensorflow"}),
        tracker.log_params({"c1.gridsize": 2}),
        tracker.log_metrics({"loss": 1.5}, step=0),
        tracker.log_series("step_loss", [3.0, 2.0, 1.0]),
        tracker.set_tags({"stats_sha1": "a" * 40}),
        tracker.log_dataset("simulated", tmp_path / "train.npz", "b" * 40, "train", 48),
        tracker.describe("**note**"),
        tracker.log_artifacts(tmp_path, "bundle"),
        tracker.end(green=True),
    ])
    assert calls[0] is None and tracker.run_id is None
    assert tracker.seconds == spent, f"a degraded tracker still called MLflow for {tracker.seconds - spent:.3g} s"
    assert seconds < WALL_SLACK * 1.0, f"a degraded tracker still took {seconds:.1f} s"
    ops = [entry["op"] for entry in tracker.journal]
    assert ops[0] == "start" and ops[-1] == "end" and "log_metrics" in ops and "log_points" in ops


def test_a_server_that_refuses_costs_seconds_not_minutes(tmp_path):
    """The refusal itself comes back (MLflow's HTTP retries are cut to fit timeout_s): with its
    default retries (minutes) the tracker would give up at its deadline instead."""
    tracker, seconds = _timed(lambda: tracking.Tracker(refused_uri(), "E", timeout_s=2))
    assert tracker.failure is not None and tracker.failure.operation == "set-up"
    assert "127.0.0.1" in tracker.failure.error and "Connection refused" in tracker.failure.error
    assert not tracker.failure.error.startswith("TimeoutError"), tracker.failure
    assert seconds < WALL_SLACK * (2 + 2.0), seconds  # the deadline, and the MLflow import
    _use_the_degraded_tracker(tracker, tmp_path)


def test_a_server_that_never_answers_is_given_up_after_timeout_s(silent_uri, tmp_path):
    tracker, seconds = _timed(lambda: tracking.Tracker(silent_uri, "E", timeout_s=1.5))
    assert tracker.failure is not None and tracker.failure.operation == "set-up"
    assert _waited_s(tracker.failure, 1.5) >= 1.5  # not before its deadline
    assert 1.5 <= seconds < WALL_SLACK * (1.5 + 2.0), seconds
    _use_the_degraded_tracker(tracker, tmp_path)


def test_mlflow_http_retries_follow_timeout_s():
    tracking.Tracker(refused_uri(), "E", timeout_s=7.5)
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3"  # two attempts fit in the deadline
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "0"


def test_the_failure_is_reported_once_to_the_owner(tmp_path):
    seen = []
    tracker = tracking.Tracker(refused_uri(), "E", timeout_s=2, on_failure=seen.append)
    tracker.log_metrics({"loss": 1.0})
    assert seen == [tracker.failure]


def test_an_unwritable_sqlite_store_is_a_tracking_failure(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    tracker, seconds = _timed(lambda: tracking.Tracker(f"sqlite:///{blocker}/mlflow.db", "E", timeout_s=2))
    assert tracker.failure is not None and tracker.failure.operation == "set-up"
    assert tracker.failure.error.startswith("FileExistsError"), tracker.failure  # the error, not the deadline
    assert seconds < WALL_SLACK * 4, seconds
    _use_the_degraded_tracker(tracker, tmp_path)


def test_a_locked_sqlite_store_is_a_tracking_failure(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert tracking.Tracker(uri, "E").failure is None  # the store exists
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")

    def open_and_start():
        tracker = tracking.Tracker(uri, "E", timeout_s=1.5)
        return tracker, tracker.start("r", {})

    try:
        (tracker, run_id), seconds = _timed(open_and_start)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert run_id is None and tracker.failure is not None
    assert _waited_s(tracker.failure, 1.5) >= 1.5  # waited for the lock up to its deadline, no longer
    assert seconds < WALL_SLACK * (1.5 + 2.0), seconds


def test_a_working_store_keeps_a_journal_of_every_call(tmp_path):
    tracker = tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "E", timeout_s=5)
    tracker.start("r", {"a": "1"})
    tracker.log_metrics({"loss": 2.0}, step=3)
    tracker.end(green=True)
    assert tracker.failure is None
    assert [entry["op"] for entry in tracker.journal] == ["start", "log_metrics", "end"]
    assert tracker.journal[1]["args"]["step"] == 3


def test_timeout_s_must_be_positive(compose_phase):
    with pytest.raises(ValueError, match=r"^tracking\.timeout_s: must be > 0"):
        TrackingConfig(timeout_s=0)
    with pytest.raises(ValueError, match=r"^tracking\.timeout_s"):
        to_spec(compose_phase(["tracking.timeout_s=-1"]))
    assert 0 < to_spec(compose_phase()).tracking.timeout_s <= 10


CONCURRENT_JOB = """
import json, sys, time
from pathlib import Path
import mlflow.tracking  # imported before the start line, so the jobs meet at the store
from runners import tracking

uri, ready, go, name = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
ready.touch()
while not go.exists():
    time.sleep(0.01)
tracker = tracking.Tracker(uri, "FIRST-USE", timeout_s=60)  # about the schema, not about slow machines
run_id = tracker.start(name, {"job": name})
tracker.end(green=True)
print(json.dumps({"run_id": run_id, "failure": tracker.failure and tracker.failure.error}))
"""


@pytest.mark.slow
def test_eight_jobs_set_up_a_new_sqlite_store_together(tmp_path):
    """The first sweep of a new user: eight processes open one new store at the same moment."""
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    jobs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_JOB, f"sqlite:///{db}", str(tmp_path / f"ready{i}"),
                          str(tmp_path / "go"), f"job{i}"], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(8)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(8)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [job.communicate(timeout=180) for job in jobs]
    results = []
    for job, (out, err) in zip(jobs, outputs):
        assert job.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(result["failure"] is None for result in results), results
    assert len({result["run_id"] for result in results}) == 8
    with sqlite3.connect(db) as store:
        assert store.execute("select count(*) from alembic_version").fetchone() == (1,)
        assert store.execute("select count(*) from experiments where name = 'FIRST-USE'").fetchone() == (1,)
        assert store.execute("select count(*) from runs").fetchone() == (8,)

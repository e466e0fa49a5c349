"""Tracking against a real ``mlflow server`` started on loopback for this test, then stopped."""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from runners import tracking


pytestmark = pytest.mark.slow

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """URI of an `mlflow server` (sqlite backend in tmp, one worker) that lives for one test."""
    port = _free_port()
    log_file = open(tmp_path / "server.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log_file,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log_file.close()


def test_a_run_logged_to_a_real_server_reads_back(mlflow_server, tmp_path):
    tracker = tracking.Tracker(mlflow_server, "FIX-PYTORCH-FORWARD-PARITY-001")
    run_id = tracker.start("tf_baseline/phase_c1_scaled", {"backend": "tensorflow", "xla_mode": "off"})
    tracker.log_params({f"c1.p{i}": i for i in range(120)})
    tracker.log_metrics({"loss": 3.0}, step=0)
    tracker.log_dataset("simulated", tmp_path / "train.npz", "a" * 40, "train", 48)
    log = tmp_path / "train_tf_phase_c1_scaled.log"
    log.write_text("a line\n")
    tracker.log_artifacts(log, "logs")
    tracker.end(green=True)

    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["xla_mode"] == "off"
    assert len(run.data.params) == 120 and run.data.metrics["loss"] == 3.0
    assert run.inputs.dataset_inputs[0].dataset.digest == "a" * 36
    assert [f.path for f in tracker.client.list_artifacts(run_id, "logs")] == ["logs/train_tf_phase_c1_scaled.log"]

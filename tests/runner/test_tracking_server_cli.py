"""``python -m runners.services.tracking_server``'s checks and messages, without a server or a database
(the server itself: tests/runner/test_tracking_server_postgres.py)."""
import signal
import socket
from pathlib import Path

import pytest

from runners import tracking
from runners.services import tracking_server
from runners.tracking.tracker import _run_name_text

URI = "postgresql+psycopg2://mlflow:s3cret@db.lab.org:5432/mlflow"


@pytest.mark.parametrize("uri, hint", [
    ("postgresql://mlflow:s3cret@db.lab.org/mlflow", "name the driver, postgresql+psycopg2://"),
    ("postgres://mlflow@db.lab.org/mlflow", "name the driver"),
    ("sqlite:///mlflow.db", "expected a PostgreSQL URI"),
    (None, "--init-postgres DIR"),
])
def test_a_backend_uri_that_would_not_work_is_refused_with_the_fix(uri, hint):
    with pytest.raises(ValueError) as refused:
        tracking_server.check_backend_uri(uri)
    assert hint in str(refused.value) and "s3cret" not in str(refused.value)


def test_a_psycopg2_uri_passes():
    assert tracking_server.check_backend_uri(URI) == URI


def test_the_password_never_reaches_the_console():
    assert tracking_server._masked(URI) == "postgresql+psycopg2://mlflow:***@db.lab.org:5432/mlflow"
    assert tracking_server._masked("postgresql+psycopg2://mlflow@db/mlflow") == "postgresql+psycopg2://mlflow@db/mlflow"


def test_clients_get_the_machines_name_when_the_server_listens_everywhere():
    assert tracking_server.client_uri("0.0.0.0", 5000) == f"http://{socket.getfqdn()}:5000"
    assert tracking_server.client_uri("127.0.0.1", 5001) == "http://127.0.0.1:5001"


def test_an_artifact_folder_is_made_absolute_and_an_object_store_uri_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking_server.artifacts_location("store") == str(tmp_path / "store")
    assert tracking_server.artifacts_location("s3://bucket/mlflow") == "s3://bucket/mlflow"


def test_the_command_exits_2_with_the_error_starts_nothing_and_leaves_the_signal_handlers(capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_BACKEND_STORE_URI", raising=False)
    started = []
    monkeypatch.setattr(tracking_server, "start_mlflow", lambda *args: started.append(args))
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert tracking_server.main(["--backend-store-uri", "postgresql://u:pw@h/db"]) == 2
    assert capsys.readouterr().err.startswith("error: --backend-store-uri postgresql://u:***@h/db: name the driver")
    assert started == [] and (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers


def test_other_options_go_to_mlflow_server_unchanged():
    args, extra = tracking_server.parse_args(["--init-postgres", "pg", "--allowed-hosts", "mlflow.lab.org"])
    assert args.init_postgres == Path("pg") and extra == ["--allowed-hosts", "mlflow.lab.org"]


def test_a_run_name_too_long_for_postgresql_keeps_its_start_and_end():
    """runs.name is VARCHAR(250): PostgreSQL refuses more (a sweep's name holds all its overrides)."""
    name = "sweep: c1=scaled " + "x" * 400 + " [BLOCKED]"
    clipped = _run_name_text(name)
    assert len(clipped) == tracking.MAX_RUN_NAME_CHARS == 250
    assert clipped.startswith("sweep: c1=scaled x") and clipped.endswith("x [BLOCKED]") and "..." in clipped
    assert _run_name_text("tf_baseline/phase_c1_scaled") == "tf_baseline/phase_c1_scaled"

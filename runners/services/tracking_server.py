"""``python -m runners.services.tracking_server``: a team MLflow tracking server on PostgreSQL.

What runs where:

* PostgreSQL holds the run metadata (experiments, runs, params, metrics, tags). Name it with
  ``--backend-store-uri postgresql+psycopg2://user:password@host:port/db`` (or the environment
  variable ``MLFLOW_BACKEND_STORE_URI``, which keeps the password out of ``ps``), or let
  ``--init-postgres DIR`` run a cluster of this machine's PostgreSQL in DIR
  (:mod:`runners.services.local_postgres`: made on first use, reused later, loopback only), started
  before the server and stopped after it.
* The artifact store (``--artifacts-destination``: a folder, or an object store URI) is
  written by the server only: clients upload and download through it.
* Clients (phase jobs, sweeps, ``mlflow ui`` users) need only ``tracking.uri=http://host:port``,
  printed once the server answers.

Ctrl-C or SIGTERM stops the server, all its worker processes and, with ``--init-postgres``,
the cluster. Options this module does not know (``--allowed-hosts ...``) go to
``mlflow server`` as they are. MLflow's background job runners (GenAI jobs, unused here) are
off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` says otherwise: they double the start time.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from runners.services.local_postgres import LocalPostgres

DRIVER_SCHEME = "postgresql+psycopg2://"
STOP_TIMEOUT_S = 20
STRAGGLER_GRACE_S = 5  # for worker processes still exiting after the server's main process ended
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """SIGTERM or SIGINT arrived: shut down."""


def check_backend_uri(uri: str | None) -> str:
    """The PostgreSQL URI, checked: it must name the psycopg2 driver, which must be installed."""
    if not uri:
        raise ValueError("no backend store: give --backend-store-uri postgresql+psycopg2://user:password@host:port/db "
                         "(or set MLFLOW_BACKEND_STORE_URI), or --init-postgres DIR for a local cluster")
    if uri.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"--backend-store-uri {_masked(uri)}: name the driver, {DRIVER_SCHEME}...; a bare "
                         "postgresql:// makes SQLAlchemy 2 look for psycopg 3, which this project does not install")
    if not uri.startswith(DRIVER_SCHEME):
        raise ValueError(f"--backend-store-uri {_masked(uri)}: expected a PostgreSQL URI {DRIVER_SCHEME}user:password@host:port/db")
    try:
        import psycopg2  # noqa: F401  (the server process needs it, not this one)
    except ImportError:
        raise ValueError("psycopg2 is missing: pip install -e \".[server]\"") from None
    return uri


def artifacts_location(value: str) -> str:
    """An object store URI as it is; a folder made absolute (the server's cwd must not matter)."""
    return value if "://" in value else str(Path(value).expanduser().resolve())


def start_mlflow(uri: str, artifacts: str, host: str, port: int, workers: int, extra: list[str],
                 log: IO | None) -> subprocess.Popen:
    """``mlflow server`` in a session of its own (so a terminal's Ctrl-C reaches only this process,
    which stops it in order); the backend URI travels in the environment, not the command line."""
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port),
               "--workers", str(workers), "--artifacts-destination", artifacts, *extra]
    return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)


def wait_until_ready(url: str, server: subprocess.Popen, timeout_s: float) -> None:
    """Poll ``url``/health until it answers 200; fail if the server exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with status {server.returncode} before it answered")
        if time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not answer on {url} within {timeout_s:.0f} s")
        time.sleep(0.5)


def stop_process_group(process: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the session leader (``mlflow server`` forwards it to its workers), then SIGKILL
    to whatever of its process group is still there ``timeout_s`` later."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + STRAGGLER_GRACE_S
    while _group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def client_uri(host: str, port: int) -> str:
    """The URI clients use: this machine's name when the server listens on every interface."""
    name = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    return f"http://{name}:{port}"


def _masked(uri: str) -> str:
    """The URI with its password replaced by ``***``."""
    head, sep, tail = uri.rpartition("@")
    if not sep or ":" not in head.split("//", 1)[-1]:
        return uri
    scheme_user, _, _password = head.rpartition(":")
    return f"{scheme_user}:***@{tail}"


def _on_signal(signum, _frame) -> None:
    _ignore_stop_signals()
    raise StopRequested(signal.Signals(signum).name)


def _ignore_stop_signals() -> None:
    """From here on the shutdown runs to its end: a second Ctrl-C must not cut it short."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def serve(args: argparse.Namespace, extra: list[str]) -> int:
    """Start the database (``--init-postgres``) and the server, print the tracking URI, wait for a
    stop signal or the server's end; stop what it started, in reverse order. Returns 0 after a
    stop signal, else the server's exit status."""
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    try:
        with ExitStack() as started:
            try:
                uri = _open_database(args, started)
                status = _open_server(args, uri, extra, started).wait()
                _ignore_stop_signals()
                print(f"mlflow server exited with status {status}", file=sys.stderr, flush=True)
            except StopRequested as stop:
                print(f"{stop}: stopping", flush=True)
                status = 0
        return status
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _open_database(args: argparse.Namespace, started: ExitStack) -> str:
    """The backend store URI: the one given, or that of the ``--init-postgres`` cluster, started."""
    if not args.init_postgres:
        return check_backend_uri(args.backend_store_uri)
    cluster = LocalPostgres(args.init_postgres, args.postgres_port or _free_port())
    uri = cluster.start()
    started.callback(cluster.stop)
    state = "created" if cluster.created else "reused"
    print(f"postgres: cluster {cluster.root} ({state}) on 127.0.0.1:{cluster.port}, log {cluster.root / 'postgres.log'}",
          flush=True)
    return uri


def _open_server(args: argparse.Namespace, uri: str, extra: list[str], started: ExitStack) -> subprocess.Popen:
    """``mlflow server``, once it answers; the tracking URI printed for clients."""
    artifacts = artifacts_location(args.artifacts_destination)
    log = started.enter_context(open(args.log_file, "ab")) if args.log_file else None
    t0 = time.monotonic()
    server = start_mlflow(uri, artifacts, args.host, args.port, args.workers, extra, log)
    started.callback(stop_process_group, server)
    print(f"mlflow server: pid {server.pid}, backend {_masked(uri)}, artifacts {artifacts}"
          + (f", log {args.log_file}" if args.log_file else ""), flush=True)
    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    wait_until_ready(f"http://{local}:{args.port}", server, args.start_timeout)
    print(f"ready in {time.monotonic() - t0:.1f} s; clients use:\ntracking.uri={client_uri(args.host, args.port)}",
          flush=True)
    return server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m runners.services.tracking_server", description=__doc__.splitlines()[0].split(": ", 1)[1],
        epilog="Other options go to `mlflow server` unchanged (e.g. --allowed-hosts mlflow.lab.org).")
    store = parser.add_mutually_exclusive_group()
    store.add_argument("--backend-store-uri", default=os.environ.get("MLFLOW_BACKEND_STORE_URI"),
                       help="postgresql+psycopg2://user:password@host:port/db (default: $MLFLOW_BACKEND_STORE_URI)")
    store.add_argument("--init-postgres", type=Path, metavar="DIR",
                       help="run a local PostgreSQL cluster in DIR (made on first use, reused later, 127.0.0.1 only)")
    parser.add_argument("--postgres-port", type=int, default=0, help="the --init-postgres cluster's port (default: a free one)")
    parser.add_argument("--artifacts-destination", default="mlartifacts",
                        help="folder or object store URI the server keeps artifacts in (default: ./mlartifacts)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on; 0.0.0.0 for other machines (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="default: 5000")
    parser.add_argument("--workers", type=int, default=4, help="server worker processes (default: 4)")
    parser.add_argument("--log-file", type=Path, help="mlflow server's output goes here (default: this terminal)")
    parser.add_argument("--start-timeout", type=float, default=180, help="seconds to wait for the server's first answer")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    try:
        return serve(args, extra)
    except (ValueError, PermissionError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

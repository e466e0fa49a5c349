"""``python -m runners.tracking.mlflow_ui``: the MLflow UI on the runner's store, opened on its runs.

    python -m runners.tracking.mlflow_ui                                   # ./mlflow.db, http://127.0.0.1:5000
    python -m runners.tracking.mlflow_ui --backend-store-uri sqlite:///path/mlflow.db --port 5001

Starts ``mlflow ui`` with ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`` (MLflow 3 otherwise starts
background job runners, six processes and about 1.5 GB, that a look at the runs does not need)
and, first, prints the address of the experiment's runs table in the runner's view: the
status, phase, backend and gridsize tags and the quality ratios as columns
(:data:`runners.tracking.RUNS_COLUMNS`). Every other ``mlflow ui`` option passes through.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from runners import tracking
from runners.schema import INITIATIVE_ID

DEFAULT_URI = "sqlite:///mlflow.db"
JOB_EXECUTION_ENV = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m runners.tracking.mlflow_ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend-store-uri", default=DEFAULT_URI, help=f"tracking store (default {DEFAULT_URI})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--experiment", default=INITIATIVE_ID, help="the experiment whose runs to show")
    return parser.parse_known_args(argv)


def command(args: argparse.Namespace, extra: list[str], launch_dir: Path) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of the ``mlflow ui`` process; a relative SQLite path is taken from ``launch_dir``."""
    uri = tracking.absolute_uri(args.backend_store_uri, launch_dir)
    argv = [shutil.which("mlflow") or "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
            "--port", str(args.port), *extra]
    return argv, {**os.environ, JOB_EXECUTION_ENV: "false"}


def runs_address(uri: str, experiment: str, host: str, port: int) -> str:
    """The experiment's runs table in the runner's view, or a line saying why there is none yet."""
    store = tracking.sqlite_file(uri)
    if store is not None and not store.is_file():
        return f"no store at {store} yet: run a phase first (python -m runners.phase c1=scaled xla=off)"
    from mlflow.tracking import MlflowClient

    found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
    if found is None:
        return f"no experiment {experiment!r} in {uri} yet"
    return tracking.runs_view_url(f"http://{host}:{port}", found.experiment_id)


def main(argv: list[str] | None = None) -> None:
    args, extra = parse(sys.argv[1:] if argv is None else argv)
    ui_argv, env = command(args, extra, Path.cwd())
    print(f"runs: {runs_address(ui_argv[3], args.experiment, args.host, args.port)}", flush=True)
    print(f"starting: {JOB_EXECUTION_ENV}=false {' '.join(ui_argv)}", flush=True)
    os.execvpe(ui_argv[0], ui_argv, env)


if __name__ == "__main__":
    main()

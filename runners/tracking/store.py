"""The tracking store: its URI, a new SQLite store made once, the runner's experiment and its UI addresses.

A new SQLite store is created under a file lock next to it (``<db>.lock``, removed once the
store exists), so the first jobs on a new store create its schema once; an existing store is
opened without a lock. An HTTP store's retries are cut to fit the job's timeout
(:func:`limit_http_retries`). MLflow is imported inside the functions that need it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from filelock import FileLock

LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default
# Early MLflow 3 releases open an experiment of this kind on its runs table, not on the generative-AI
# page. MLflow 3.18 ignores the tag there: the page follows the UI's workflow type, the address's
# workflowType parameter, else the browser's GenAI / Model training switch (GenAI by default), so
# every address the runner prints names it (tests/runner/test_mlflow_landing.py)
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
WORKFLOW_TYPE = "machine_learning"
# The runs table's view (an experiment tag the UI reads for ?viewStateShareKey=): the columns
# that answer "how good, which backend, did it pass" without opening a run
RUNS_VIEW_KEY = "phase-runner"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"
RUNS_COLUMNS = (
    "tags.`status`", "tags.`phase`", "tags.`backend`", "tags.`gridsize`", "metrics.`quality.amp_mae_to_floor`",
    "metrics.`quality.phase_mae_to_floor`", "tags.`verdict`", "metrics.`parity.worst_rel_diff`",
)
STORE_SETUP_TIMEOUT_S = 120.0  # a new SQLite store's schema takes seconds, and N jobs wait in turn
SQLITE_PREFIX = "sqlite:///"


def absolute_uri(uri: str, launch_dir: Path) -> str:
    """A sqlite URI with a relative path made absolute against the launch folder."""
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/") and uri != SQLITE_PREFIX + ":memory:":
        return SQLITE_PREFIX + str((launch_dir / uri[len(SQLITE_PREFIX):]).resolve())
    return uri


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and ``:memory:``)."""
    if not uri.startswith(SQLITE_PREFIX) or uri == SQLITE_PREFIX + ":memory:":
        return None
    return Path(uri[len(SQLITE_PREFIX):].split("?", 1)[0])


def store_exists(store: Path) -> bool:
    return store.is_file() and store.stat().st_size > 0


def open_new_sqlite_store(store: Path) -> None:
    """Create the SQLite store ``store`` unless another job did, under the file lock
    ``<store>.lock``, which is removed once the store exists.

    Removing it is safe then: a job that still waits on the removed file, or locks a new one,
    finds the store made and creates nothing. A creation that failed leaves the lock file for
    the next job (which makes the store under it)."""
    lock_path = Path(f"{store}.lock")
    with FileLock(str(lock_path), timeout=STORE_SETUP_TIMEOUT_S):
        if not store_exists(store):
            create_sqlite_store(store)
        lock_path.unlink(missing_ok=True)


def create_sqlite_store(store: Path) -> None:
    """A new SQLite store: its schema made under a temporary name, then renamed into place, so that
    a job ended meanwhile (Ctrl-C, SIGTERM: ``runners.process.interrupt``) leaves no half-made store that
    every later job would fail to open. Call under the store's lock (the left-overs of killed
    creators are removed)."""
    from mlflow.tracking import MlflowClient

    for left_over in store.parent.glob(f".{store.name}.*.new*"):  # with its -journal
        left_over.unlink(missing_ok=True)
    fresh = store.with_name(f".{store.name}.{os.getpid()}.new")
    MlflowClient(tracking_uri=f"{SQLITE_PREFIX}{fresh}")  # MLflow creates the schema here
    os.replace(fresh, store)


def limit_http_retries(timeout_s: float) -> None:
    """MLflow's HTTP client settings for this job (read by MLflow at each request): two attempts
    without back-off that fit in ``timeout_s`` (its defaults retry for minutes)."""
    os.environ.update({
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout_s / 2))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
    })


def experiment_tags() -> dict[str, str]:
    """The tags of the runner's experiment: a model-training experiment, and the runs table's view."""
    view = {"selectedColumns": list(RUNS_COLUMNS), "orderByKey": "attributes.start_time", "orderByAsc": False}
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, RUNS_VIEW_TAG: json.dumps(view)}


def ensure_experiment(client, name: str) -> str:
    """The id of experiment ``name``, created if needed with :func:`experiment_tags` (an existing
    experiment gets those it lacks); safe when parallel jobs race."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, tags=experiment_tags())
        except MlflowException:
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    for key, value in experiment_tags().items():
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def ui_base(uri: str) -> str:
    """The MLflow UI's address for tracking ``uri``: the server itself, or ``mlflow ui``'s default."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else LOCAL_UI


def runs_view_url(base: str, experiment_id: str) -> str:
    """The runs table of ``experiment_id`` in the UI at ``base``, in the runner's view (model training)."""
    return f"{base}/#/experiments/{experiment_id}/runs?viewStateShareKey={RUNS_VIEW_KEY}&workflowType={WORKFLOW_TYPE}"


def experiment_url(base: str, experiment_id: str) -> str:
    """The page of ``experiment_id`` in the UI at ``base`` as a model-training experiment: it opens on
    the runs table (the bare ``#/experiments/<id>`` opens on the GenAI overview in MLflow 3.18)."""
    return f"{base}/#/experiments/{experiment_id}?workflowType={WORKFLOW_TYPE}"

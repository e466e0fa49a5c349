"""MLflow tracking of phase jobs (docs/design.md §9); MLflow is imported only when a tracker is made.

``runners.tracking.X`` is the API the phases use; its parts live in:

* :mod:`runners.tracking.run_schema`: what a job's run holds (params, metrics, tags, artifacts),
  the flattened names it logs and the backend-independent parity key;
* :mod:`runners.tracking.tracker`: :class:`Tracker`, one job's run, and what happens when MLflow
  fails (the job goes on, the calls are kept in :data:`JOURNAL_FILE` for
  ``python -m runners.tracking.sync``);
* :mod:`runners.tracking.faults`: the bounded calls behind it and :class:`TrackingFailure`;
* :mod:`runners.tracking.store`: the store's URI, a new SQLite store made once under a lock, the
  runner's experiment and the MLflow UI's addresses.
"""
from runners.tracking.faults import TrackingFailure, TrackingUnavailable
from runners.tracking.run_schema import PARITY_PARAMS, QUALITY_FIRST, flatten, numeric_leaves, parity_key
from runners.tracking.store import (
    EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, LOCAL_UI, RUNS_COLUMNS, RUNS_VIEW_KEY, RUNS_VIEW_TAG,
    STORE_SETUP_TIMEOUT_S, WORKFLOW_TYPE, absolute_uri, create_sqlite_store, ensure_experiment, experiment_tags,
    experiment_url, limit_http_retries, open_new_sqlite_store, runs_view_url, sqlite_file, ui_base,
)
from runners.tracking.tracker import (
    BATCH, DEFAULT_TIMEOUT_S, DIGEST_CHARS, EMPTY, JOURNAL_FILE, MAX_PARAM_CHARS, MAX_RUN_NAME_CHARS,
    MAX_SERIES_POINTS, Tracker, copy_log, log_inputs,
)

__all__ = [
    "BATCH", "DEFAULT_TIMEOUT_S", "DIGEST_CHARS", "EMPTY", "EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "JOURNAL_FILE",
    "LOCAL_UI", "MAX_PARAM_CHARS", "MAX_RUN_NAME_CHARS", "MAX_SERIES_POINTS", "PARITY_PARAMS", "QUALITY_FIRST",
    "RUNS_COLUMNS", "RUNS_VIEW_KEY", "RUNS_VIEW_TAG", "STORE_SETUP_TIMEOUT_S", "WORKFLOW_TYPE", "Tracker",
    "TrackingFailure", "TrackingUnavailable", "absolute_uri", "copy_log", "create_sqlite_store", "ensure_experiment",
    "experiment_tags", "experiment_url", "flatten", "limit_http_retries", "log_inputs", "numeric_leaves",
    "open_new_sqlite_store", "parity_key", "runs_view_url", "sqlite_file", "ui_base",
]

"""The MLflow run of one job: a :class:`Tracker` writes params, metrics, tags, datasets and artifacts.

When MLflow fails (a server down or silent, a store locked or unwritable), the job goes on:
each operation gives up after ``tracking.timeout_s`` (MLflow's own HTTP retries are set to fit
in it, ``store.limit_http_retries``), the first failure makes the :class:`Tracker` skip every
later call, the hub section says ``Tracking: FAILED at ...``, and the slot keeps
:data:`JOURNAL_FILE` (every call the job made or meant to make) for ``python -m runners.tracking.sync``.
What a job's run holds: ``runners.tracking.run_schema``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence, TypeVar

from runners.process import diskfull
from runners.tracking.faults import TrackingFailure, TrackingUnavailable, one_line, run_bounded
from runners.tracking.store import (
    STORE_SETUP_TIMEOUT_S, ensure_experiment, limit_http_retries, open_new_sqlite_store, runs_view_url, sqlite_file,
    store_exists, ui_base,
)

MAX_PARAM_CHARS = 500
MAX_RUN_NAME_CHARS = 250  # runs.name is VARCHAR(250): PostgreSQL refuses a longer name (SQLite keeps it)
BATCH = 100
MAX_SERIES_POINTS = 10_000
EMPTY = "<empty>"
DIGEST_CHARS = 36
DEFAULT_TIMEOUT_S = 10.0  # TrackingConfig.timeout_s
JOURNAL_FILE = "tracking_journal.json"  # in the slot folder, when the job's tracking failed
log = logging.getLogger(__name__)
T = TypeVar("T")


class Tracker:
    """Writes to one MLflow run through an explicit client and run id (no global active run).

    Tracking can fail without stopping the job: each operation runs in a worker thread and is
    given up after ``timeout_s`` (the set-up of a SQLite store gets at least
    :data:`STORE_SETUP_TIMEOUT_S`: a new store's schema is created there, under a file lock,
    while other jobs wait). The first failure (an error, or no answer in time) makes the
    tracker *degraded*: ``failure`` says where and why, ``on_failure`` hears it once, and every
    later operation returns at once without calling MLflow. Every operation, logged or not, is
    kept in ``journal`` so that ``runners.tracking.sync`` can replay the run later (:meth:`save_journal`).
    Operations never raise.
    """

    def __init__(self, uri: str, experiment: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                 on_failure: Callable[[TrackingFailure], None] | None = None):
        self.uri, self.experiment, self.timeout_s = uri, experiment, timeout_s
        self.seconds = 0.0
        self.client = None
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.failure: TrackingFailure | None = None
        self.journal: list[dict] = []
        self._on_failure = on_failure
        if uri.startswith(("http://", "https://")):
            limit_http_retries(timeout_s)
        with self._timed():
            import mlflow.tracking  # noqa: F401  local work, not bounded like a call to the store
        patience = threading.Event()
        found = self._call("set-up", self._set_up, sqlite_file(uri), patience, patience=patience)
        if found is not None:
            self.client, self.experiment_id = found

    def _set_up(self, store: Path | None, patience: threading.Event) -> tuple[object, str]:
        """(client, experiment id). A new SQLite store is made by one job, under a file lock next to
        it (:func:`open_new_sqlite_store`); ``patience`` is set while this waits for the lock or
        creates the schema (which may take longer than timeout_s)."""
        from mlflow.tracking import MlflowClient

        if store is not None and not store_exists(store):
            patience.set()
            open_new_sqlite_store(store)
            patience.clear()
        client = MlflowClient(tracking_uri=self.uri)
        return client, ensure_experiment(client, self.experiment)

    def start(self, run_name: str, tags: Mapping[str, str], parent_run_id: str | None = None,
              start_time_ms: int | None = None) -> str | None:
        """The new run's id (None when tracking failed)."""
        tags = {key: str(value) or EMPTY for key, value in tags.items()}
        start_time_ms = start_time_ms or _now_ms()
        self._note("start", run_name=run_name, tags=tags, parent_run_id=parent_run_id, start_time_ms=start_time_ms)

        def create() -> str:
            from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

            all_tags = {**tags, **({MLFLOW_PARENT_RUN_ID: parent_run_id} if parent_run_id else {})}
            return self.client.create_run(self.experiment_id, start_time=start_time_ms, tags=all_tags,
                                          run_name=_run_name_text(run_name)).info.run_id

        self.run_id = self._call("start", create)
        return self.run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        texts = {key: _param_text(value) for key, value in sorted(params.items())}
        self._note("log_params", params=texts)

        def log() -> None:
            from mlflow.entities import Param

            self._log_batch(params=[Param(key, value) for key, value in texts.items()])

        self._call("log_params", log)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0, timestamp_ms: int | None = None) -> None:
        values = {key: float(value) for key, value in metrics.items()}
        timestamp_ms = timestamp_ms or _now_ms()
        self._note("log_metrics", metrics=values, step=step, timestamp_ms=timestamp_ms)

        def log() -> None:
            from mlflow.entities import Metric

            self._log_batch(metrics=[Metric(key, value, timestamp_ms, step) for key, value in values.items()])

        self._call("log_metrics", log)

    def log_series(self, name: str, values: Sequence[float]) -> None:
        """``values`` as metric ``name`` at steps 0, 1, ...; at most :data:`MAX_SERIES_POINTS`
        points (every k-th value of a longer series, the step still its index)."""
        stride = max(1, math.ceil(len(values) / MAX_SERIES_POINTS))
        self.log_points(name, [[step, float(values[step])] for step in range(0, len(values), stride)])

    def log_points(self, name: str, points: Sequence[Sequence[float]], timestamp_ms: int | None = None) -> None:
        """Metric ``name`` at the given ``[step, value]`` points; non-finite values are left out."""
        finite = [[int(step), float(value)] for step, value in points if math.isfinite(value)]
        timestamp_ms = timestamp_ms or _now_ms()
        self._note("log_points", name=name, points=finite, timestamp_ms=timestamp_ms)

        def log() -> None:
            from mlflow.entities import Metric

            self._log_batch(metrics=[Metric(name, value, timestamp_ms, step) for step, value in finite],
                            size=BATCH * 10)

        self._call("log_points", log)

    def set_tags(self, tags: Mapping[str, object]) -> None:
        """Tags; an empty value is written as ``<empty>`` (MLflow shows an empty tag as nothing)."""
        texts = {key: str(value) or EMPTY for key, value in tags.items()}
        self._note("set_tags", tags=texts)

        def log() -> None:
            from mlflow.entities import RunTag

            self._log_batch(tags=[RunTag(key, value) for key, value in texts.items()])

        self._call("set_tags", log)

    def describe(self, markdown: str) -> None:
        """The run's description (MLflow's note, shown at the top of the run page)."""
        self.set_tags({"mlflow.note.content": markdown})

    def rename(self, name: str) -> None:
        self._note("rename", name=name)
        self._call("rename", lambda: self.client.update_run(self.run_id, name=_run_name_text(name)))

    def run_link(self) -> str:
        """The run's page in the MLflow UI: on the tracking server itself, or on ``mlflow ui``'s
        default address for a local store; empty without a run."""
        if self.run_id is None:
            return ""
        return f"{ui_base(self.uri)}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def runs_link(self) -> str:
        """The experiment's runs table with :data:`RUNS_COLUMNS` shown; empty without an experiment."""
        return runs_view_url(ui_base(self.uri), self.experiment_id) if self.experiment_id else ""

    def reserve_metrics(self, names: Sequence[str]) -> None:
        """Log ``names`` now as NaN at step 0, so they are the run's first metrics (the compare view
        plots the first); the measured values, logged later at step 0, replace them."""
        self.log_metrics({name: math.nan for name in names}, step=0)

    def log_dataset(self, name: str, path: Path | str, sha1: str, context: str, n_images: int) -> None:
        """Log a data file as an MLflow dataset input; the full sha1 goes in a tag."""
        self._note("log_dataset", name=name, path=str(path), sha1=sha1, context=context, n_images=n_images)

        def log() -> None:
            from mlflow.entities import Dataset, DatasetInput, InputTag, RunTag

            dataset = Dataset(
                name=name, digest=sha1[:DIGEST_CHARS], source_type="local",
                source=json.dumps({"uri": str(path)}), profile=json.dumps({"n_images": n_images, "sha1": sha1}),
            )
            log_inputs(self.client, self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])
            self._log_batch(tags=[RunTag(f"dataset.{context}_sha1", sha1)])

        self._call("log_dataset", log)

    def log_artifacts(self, path: Path | str, artifact_path: str) -> None:
        """A file or a folder (recursively) under ``artifact_path``; missing paths are skipped."""
        path = Path(path)
        self._note("log_artifacts", path=str(path), artifact_path=artifact_path)

        def log() -> None:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_path)

        self._call("log_artifacts", log)

    def end(self, green: bool, end_time_ms: int | None = None) -> None:
        end_time_ms = end_time_ms or _now_ms()
        self._note("end", green=green, end_time_ms=end_time_ms)
        self._call("end", lambda: self.client.set_terminated(
            self.run_id, "FINISHED" if green else "FAILED", end_time=end_time_ms))

    def end_despite_failure(self, green: bool, tags: Mapping[str, str]) -> None:
        """End this tracker's run with ``tags`` once more after it degraded (a full store given room
        again): one bounded attempt; ``failure`` stays as it was, so the hub still says tracking failed."""
        if self.run_id is None or self.failure is None:
            return
        failure, self.failure = self.failure, None
        on_failure, self._on_failure = self._on_failure, None  # the job's record keeps the first failure

        def end() -> None:
            for key, value in tags.items():
                self.client.set_tag(self.run_id, key, str(value) or EMPTY)
            self.client.set_terminated(self.run_id, "FINISHED" if green else "FAILED")

        self._call("end (retried)", end)
        self.failure, self._on_failure = failure, on_failure

    def run_status(self, run_id: str) -> str | None:
        """The status of run ``run_id`` (``RUNNING``, ``FINISHED``...), None when it does not exist
        (or tracking failed)."""
        def status() -> str | None:
            from mlflow.exceptions import MlflowException

            try:
                return self.client.get_run(run_id).info.status
            except MlflowException as exc:
                if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                    return None
                raise

        return self._call("run_status", status)

    def close_if_running(self, run_id: str, green: bool, tags: Mapping[str, str] | None = None) -> None:
        """End run ``run_id`` (not this tracker's own), with ``tags``, unless it has ended already."""
        if self.run_status(run_id) != "RUNNING":
            return

        def close() -> None:
            for key, value in (tags or {}).items():
                self.client.set_tag(run_id, key, value)
            self.client.set_terminated(run_id, "FINISHED" if green else "FAILED")

        self._call("end", close)

    def find_runs(self, tag: str, value: str) -> list[tuple[str, str]]:
        """(run id, status) of the experiment's live runs whose tag ``tag`` is ``value``."""
        found = self._call("find_runs", lambda: self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{tag}` = '{value}'"))
        return [(run.info.run_id, run.info.status) for run in found or []]

    def delete_run(self, run_id: str) -> None:
        self._call("delete_run", lambda: self.client.delete_run(run_id))

    def raise_if_failed(self, need: str) -> None:
        """For a step that cannot do without MLflow (``need`` says why, e.g. C2's lookup of its runs)."""
        if self.failure is not None:
            raise TrackingUnavailable(f"{need}; MLflow at {self.uri} FAILED at {self.failure.operation}: "
                                      f"{self.failure.error}")

    def save_journal(self, path: Path, record: Mapping[str, object]) -> None:
        """Write what this tracker was asked to log, with the job's evidence ``record``, for
        ``runners.tracking.sync`` (atomic: temporary file and rename)."""
        journal = {
            "uri": self.uri, "experiment": self.experiment, "run_id": self.run_id,
            "failure": asdict(self.failure) if self.failure else None, "record": dict(record), "calls": self.journal,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(journal, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _log_batch(self, *, params=(), metrics=(), tags=(), size: int = BATCH) -> None:
        for items, name in ((params, "params"), (metrics, "metrics"), (tags, "tags")):
            for start in range(0, len(items), size):
                self.client.log_batch(self.run_id, **{name: list(items[start : start + size])})

    def _note(self, operation: str, **args: object) -> None:
        self.journal.append({"op": operation, "args": args})

    def _call(self, operation: str, work: Callable[..., T], *args: object,
              patience: threading.Event | None = None) -> T | None:
        """``work(*args)`` bounded by ``timeout_s`` (:func:`run_bounded`; while ``patience`` is
        set, up to :data:`STORE_SETUP_TIMEOUT_S`); its value, or None once the tracker is degraded
        (by this call's failure or an earlier one)."""
        if self.failure is not None:
            return None
        with self._timed():
            attempt = run_bounded(lambda: work(*args), f"mlflow {operation}", self.timeout_s, patience,
                                         STORE_SETUP_TIMEOUT_S)
        if attempt.timed_out:
            self._degrade(operation, f"TimeoutError: no answer from {self.uri} within "
                                     f"{attempt.seconds:.3g} s (tracking.timeout_s={self.timeout_s:g})")
        elif attempt.error is not None:
            self._degrade(operation, one_line(attempt.error), diskfull.find(attempt.error) is not None)
        return attempt.value

    def _degrade(self, operation: str, error: str, disk_full: bool = False) -> None:
        self.failure = TrackingFailure(operation, error, disk_full)
        log.warning("MLflow tracking FAILED at %s: %s; no more MLflow calls are made here, the evidence "
                    "stays in the hub (`python -m runners.tracking.sync` logs it later)", operation, error)
        if self._on_failure is not None:
            self._on_failure(self.failure)

    @contextmanager
    def _timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


def _now_ms() -> int:
    return int(time.time() * 1000)


def log_inputs(client, run_id: str, inputs: list) -> None:
    """``client.log_inputs``, tried once more after an error (safe when parallel jobs race).

    MLflow looks a dataset up, then inserts it: two jobs logging the same new dataset at once
    both insert, and on PostgreSQL the second fails on ``dataset_pk``. A failed try writes
    nothing (one transaction), and the second finds the dataset the other job wrote.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.log_inputs(run_id, inputs)
    except MlflowException:
        client.log_inputs(run_id, inputs)


def _param_text(value: object) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def _run_name_text(name: str) -> str:
    """A run name that fits every store: a longer one keeps its start and its last 20 characters
    (a sweep's first overrides, a blocked run's `` [BLOCKED]``)."""
    return name if len(name) <= MAX_RUN_NAME_CHARS else f"{name[: MAX_RUN_NAME_CHARS - 23]}...{name[-20:]}"


def copy_log(tracker: "Tracker | None", path: Path, enabled: bool) -> None:
    """A finished job's log into its MLflow run under ``logs/``, when there is a run and
    artifacts are logged; a failure is logged, not raised (the hub keeps the log)."""
    if not enabled or tracker is None or tracker.run_id is None:
        return
    try:
        tracker.log_artifacts(path, "logs")
    except Exception:
        logging.getLogger(__name__).exception("could not copy %s into the MLflow run %s", path, tracker.run_id)

"""MLflow tracking of phase jobs (DESIGN §6); MLflow is imported only when a tracker is made.

Schema of one job's run (experiment = the initiative id, run name = the hub slot):

* params: the flattened resolved config (``c1.gridsize``...), values cut at
  :data:`MAX_PARAM_CHARS` characters (old servers' limit; the full config is the
  ``hydra/`` artifact), logged in batches of 100;
* metrics: per-epoch history under the core's names (``loss``, ``poisson_nll``,
  ``val_loss``...; the PyTorch port uses the same) with ``nll_excess``/``val_nll_excess`` (the
  Poisson NLL per pixel above the data's own floor: 0 is a perfect fit, readable where the raw
  NLL of about -3e6 is not) and ``groups_per_s``; ``step_loss`` per training step;
  ``bundle.<stats.json key path>``, ``quality.<name>`` (with ``quality.amp_mae_to_floor``...:
  below 1 beats the constant object), ``throughput_groups_per_s``, ``timing.<step>_s``;
* tags: ``backend``, ``phase``, ``xla_mode``, ``xla.*`` (what TensorFlow saw), ``guard_status``,
  ``stats_sha1``, ``git_commit``, ``parity_key``, ``dataset.{train,test}_sha1``, ``slot``,
  ``status``, ``blocker`` (blocked runs only); ``mlflow.parentRunId`` for the jobs of a sweep;
  ``mlflow.note.content``, the run's description (title, status, hub section and paths); no
  tag is empty (``<empty>`` stands for an empty value);
* run name: the slot; a blocked run's gets `` [BLOCKED]`` added;
* inputs: the train and test files as datasets (digest = first 36 characters of the sha1);
* artifacts: ``bundle/``, ``logs/`` (CLI and guard log), ``hydra/`` (the job's .hydra folder).

Parity key: ``sha1(json.dumps({"dataset": {"train_sha1", "test_sha1"}, "params": {N,
gridsize, n_images, n_groups, neighbor_count, batch_size, max_epochs, seed}},
sort_keys=True, separators=(",", ":")))``; TF and PyTorch runs of the same data and
parameters share it, whatever the backend or XLA mode.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

MAX_PARAM_CHARS = 500
BATCH = 100
MAX_SERIES_POINTS = 10_000
EMPTY = "<empty>"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store by default
PARITY_PARAMS = ("N", "gridsize", "n_images", "n_groups", "neighbor_count", "batch_size", "max_epochs", "seed")
DIGEST_CHARS = 36


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested mappings as one level with dotted keys."""
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_leaves(mapping: Mapping, prefix: str) -> dict[str, float]:
    """The finite numbers of a nested mapping as metrics ``<prefix><dotted key>``."""
    return {
        key: float(value)
        for key, value in flatten(mapping, prefix).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def parity_key(train_sha1: str, test_sha1: str, params: Mapping[str, object]) -> str:
    """The backend-independent key of a phase's data and parameters (module docstring)."""
    missing = [name for name in PARITY_PARAMS if name not in params]
    if missing:
        raise ValueError(f"parity key: missing parameters {missing}")
    payload = {
        "dataset": {"train_sha1": train_sha1, "test_sha1": test_sha1},
        "params": {name: params[name] for name in PARITY_PARAMS},
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def absolute_uri(uri: str, launch_dir: Path) -> str:
    """A sqlite URI with a relative path made absolute against the launch folder."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        return prefix + str((launch_dir / uri[len(prefix):]).resolve())
    return uri


class Tracker:
    """Writes to one MLflow run through an explicit client and run id (no global active run)."""

    def __init__(self, uri: str, experiment: str):
        self.seconds = 0.0
        with self._timed():
            from mlflow.tracking import MlflowClient

            self.uri = uri
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = ensure_experiment(self.client, experiment)
        self.run_id: str | None = None

    def start(self, run_name: str, tags: Mapping[str, str], parent_run_id: str | None = None) -> str:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        tags = {key: str(value) or EMPTY for key, value in tags.items()}
        if parent_run_id:
            tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
        with self._timed():
            self.run_id = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
        return self.run_id

    def log_params(self, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(key, _param_text(value)) for key, value in sorted(params.items())]
        with self._timed():
            for start in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, params=items[start : start + BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(key, float(value), stamp, step) for key, value in metrics.items()]
        with self._timed():
            for start in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, metrics=items[start : start + BATCH])

    def set_tags(self, tags: Mapping[str, object]) -> None:
        """Tags; an empty value is written as ``<empty>`` (MLflow shows an empty tag as nothing)."""
        from mlflow.entities import RunTag

        items = [RunTag(key, str(value) or EMPTY) for key, value in tags.items()]
        with self._timed():
            for start in range(0, len(items), BATCH):
                self.client.log_batch(self.run_id, tags=items[start : start + BATCH])

    def log_series(self, name: str, values: Sequence[float]) -> None:
        """``values`` as metric ``name`` at steps 0, 1, ...; at most :data:`MAX_SERIES_POINTS`
        points (every k-th value of a longer series, the step still its index)."""
        stride = max(1, math.ceil(len(values) / MAX_SERIES_POINTS))
        points = {step: float(values[step]) for step in range(0, len(values), stride)}
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(name, value, stamp, step) for step, value in points.items() if math.isfinite(value)]
        with self._timed():
            for start in range(0, len(items), BATCH * 10):
                self.client.log_batch(self.run_id, metrics=items[start : start + BATCH * 10])

    def describe(self, markdown: str) -> None:
        """The run's description (MLflow's note, shown at the top of the run page)."""
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

        self.set_tags({MLFLOW_RUN_NOTE: markdown})

    def rename(self, name: str) -> None:
        with self._timed():
            self.client.update_run(self.run_id, name=name)

    def run_link(self) -> str:
        """The run's page in the MLflow UI: on the tracking server itself, or on ``mlflow ui``'s
        default address for a local store."""
        base = self.uri.rstrip("/") if self.uri.startswith(("http://", "https://")) else LOCAL_UI
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    def log_dataset(self, name: str, path: Path, sha1: str, context: str, n_images: int) -> None:
        """Log a data file as an MLflow dataset input; the full sha1 goes in a tag."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name, digest=sha1[:DIGEST_CHARS], source_type="local",
            source=json.dumps({"uri": str(path)}), profile=json.dumps({"n_images": n_images, "sha1": sha1}),
        )
        with self._timed():
            self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])
        self.set_tags({f"dataset.{context}_sha1": sha1})

    def log_artifacts(self, path: Path, artifact_path: str) -> None:
        """A file or a folder (recursively) under ``artifact_path``; missing paths are skipped."""
        with self._timed():
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, green: bool) -> None:
        with self._timed():
            self.client.set_terminated(self.run_id, "FINISHED" if green else "FAILED")

    @contextmanager
    def _timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - t0


def ensure_experiment(client, name: str) -> str:
    """The id of experiment ``name``, created if needed (safe when parallel jobs race)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _param_text(value: object) -> str:
    text = "null" if value is None else str(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def copy_log(tracker: "Tracker | None", path: Path, enabled: bool) -> None:
    """A finished job's log into its MLflow run under ``logs/``, when there is a run and
    artifacts are logged; a failure is logged, not raised (the hub keeps the log)."""
    if not enabled or tracker is None or tracker.run_id is None:
        return
    try:
        tracker.log_artifacts(path, "logs")
    except Exception:
        logging.getLogger(__name__).exception("could not copy %s into the MLflow run %s", path, tracker.run_id)

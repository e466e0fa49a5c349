"""The quality study in MLflow: a run for the study and a child run per trained seed, in the runner's store.

The runs go to experiment :data:`EXPERIMENT` of the tracking store ``--tracking-uri`` (default the
runner's, ``sqlite:///mlflow.db`` in the launch folder; ``--no-tracking``: none), through the runner's
``runners.tracking.Tracker``:

* the study's run (name :data:`STUDY_RUN_NAME`, tags ``phase=quality-study``, ``role=study``): the
  settings as params; every reference as metrics ``reference.<cell>.<floor|ceiling|iterative>.<metric>``
  and every summary as ``summary.<cell>.<metric>.<median|worst>`` (``<cell>``:
  ``<dataset>_gs<gridsize>[_<loss>[_<overlap>]]``); at the end quality.md, quality.json and the figures as
  artifacts under ``quality/``; FINISHED when the study completed, FAILED when it was cut short;
* each trained seed's run (a child run, named as its folder under runs/, tags ``role=run``, dataset,
  gridsize, loss, overlap, seed): the settings and its cell as params, its metrics under the runner's
  names (``quality.<metric>``, ``quality.amp_mae_to_floor``..., ``timing.training_s``,
  ``timing.inference_stitching_s``, ``n_groups_train``), its per-epoch history (``history.json``) as
  series, and its bundle (figures, stats) under ``bundle/``.

A tracking failure (a store down, locked or silent) never stops the study: it is said once, no more
MLflow calls are made, and the rows whose run was not logged name none.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

from runners import tracking
from runners.bench.quality_report import EVERY_WAY, METRICS, NO_OVERLAP, cell_of

EXPERIMENT = "quality-study"
PHASE = "quality-study"
STUDY_RUN_NAME = "quality study"
RUN_METRICS = {**{key: f"quality.{key}" for key in (*METRICS, *EVERY_WAY, "amp_mae_to_floor", "phase_mae_to_floor")},
               "train_s": "timing.training_s", "inference_stitching_s": "timing.inference_stitching_s",
               "n_groups_train": "n_groups_train"}  # a run's record key -> its MLflow metric


def cell_key(dataset: str, gridsize: int, loss: str | None = None, overlap: str | None = None) -> str:
    """``<dataset>_gs<gridsize>[_<loss>[_<overlap>]]``: a cell of the study in metric names."""
    parts = [dataset, f"gs{gridsize}"]
    parts += [loss] if loss else []
    parts += [overlap] if overlap not in (None, NO_OVERLAP) else []
    return "_".join(parts)


class StudyTracking:
    """The study's MLflow runs (module docstring); every method does nothing without a store (``uri``
    None) or once tracking failed."""

    def __init__(self, uri: str | None, launch_dir: Path, timeout_s: float = tracking.DEFAULT_TIMEOUT_S):
        self.uri = None if uri is None else tracking.absolute_uri(uri, launch_dir)
        self.timeout_s = timeout_s
        self.study: tracking.Tracker | None = None
        self.failure: tracking.TrackingFailure | None = None

    @property
    def study_run_id(self) -> str | None:
        return self.study.run_id if self.study is not None else None

    def start(self, settings: Mapping[str, object]) -> dict:
        """Open the study's run; the document's ``mlflow`` entry (uri, experiment, study run id)."""
        self.study = self._tracker()
        if self.study is not None:
            self.study.start(STUDY_RUN_NAME, {"phase": PHASE, "role": "study", "backend": settings["backend"],
                                              "status": "RUNNING"})
            self.study.log_params(tracking.flatten(settings))
            if self.study_run_id:
                print(f"MLflow: study run {self.study_run_id} in experiment {EXPERIMENT}: {self.study.run_link()}",
                      flush=True)
        return self.entry()

    def entry(self) -> dict:
        """What quality.json says of the study's tracking (an empty dict without a store)."""
        if self.uri is None:
            return {}
        failure = f"{self.failure.operation}: {self.failure.error}" if self.failure else None
        return {"uri": self.uri, "experiment": EXPERIMENT, "study_run_id": self.study_run_id, "failure": failure}

    def log_references(self, dataset: str, gridsize: int, references: Mapping[str, object]) -> None:
        """The floor, the ceiling and the iterative of one (dataset, gridsize) on the study's run."""
        measured = {name: value for name, value in references.items() if isinstance(value, Mapping)}
        self._log_on_study(tracking.numeric_leaves(measured, f"reference.{cell_key(dataset, gridsize)}."))

    def log_summary(self, summary: Mapping[str, object]) -> None:
        """One cell's summary over its seeds on the study's run."""
        key = cell_key(summary["dataset"], summary["gridsize"], *cell_of(summary))
        values = {name: value for name, value in summary.items() if name not in ("dataset", "gridsize")}
        self._log_on_study(tracking.numeric_leaves(values, f"summary.{key}."))

    def log_run(self, record: Mapping[str, object], settings: Mapping[str, object], start_time_ms: int) -> str | None:
        """One trained seed as a child of the study's run; its run id, None when it was not logged."""
        if self.study_run_id is None:
            return None
        tracker = self._tracker()
        if tracker is None:
            return None
        loss, overlap = cell_of(record)
        cell = {"dataset": record["dataset"], "gridsize": record["gridsize"], "loss": loss, "overlap": overlap,
                "seed": record["seed"]}
        run_dir = Path(record["run_dir"])
        tracker.start(run_dir.parent.name, {"phase": PHASE, "role": "run", "backend": settings["backend"],
                                            "status": "FINISHED", **cell},
                      parent_run_id=self.study_run_id, start_time_ms=start_time_ms)
        tracker.log_params({**tracking.flatten(settings), **cell})
        tracker.log_metrics({metric: record[key] for key, metric in RUN_METRICS.items()
                             if isinstance(record.get(key), (int, float)) and math.isfinite(record[key])})
        for name, values in _history(run_dir).items():
            tracker.log_series(name, values)
        tracker.log_artifacts(run_dir.parent / "bundle", "bundle")
        tracker.end(True)
        return tracker.run_id if tracker.failure is None else None

    def finish(self, out: Path, complete: bool) -> None:
        """End the study's run: its table, data and figures as artifacts once complete; FAILED when cut short."""
        if self.study is None or self.study_run_id is None:
            return
        if complete:
            for path in sorted(out.glob("quality*")):
                self.study.log_artifacts(path, "quality")
        status = "FINISHED" if complete else "FAILED"
        self.study.set_tags({"status": status})
        self.study.end(complete)
        if complete and self.study.failure is None:
            print(f"MLflow: the study's runs: {self.study.runs_link()}", flush=True)

    def _log_on_study(self, metrics: Mapping[str, float]) -> None:
        if self.study is not None and self.study_run_id is not None and metrics:
            self.study.log_metrics(metrics)

    def _tracker(self) -> tracking.Tracker | None:
        if self.uri is None or self.failure is not None:
            return None
        tracker = tracking.Tracker(self.uri, EXPERIMENT, self.timeout_s, on_failure=self._failed)
        return None if tracker.failure is not None else tracker

    def _failed(self, failure: tracking.TrackingFailure) -> None:
        if self.failure is None:
            self.failure = failure
            print(f"MLflow tracking FAILED at {failure.operation}: {failure.error}; the study goes on, the rows "
                  "logged from here on name no MLflow run", flush=True)


def _history(run_dir: Path) -> dict[str, list[float]]:
    """The per-epoch (and per-step) series of a run's history.json; none when it has no such file."""
    path = run_dir / "history.json"
    if not path.is_file():
        return {}
    history = json.loads(path.read_text(encoding="utf-8"))
    return {name: [float(value) for value in values] for name, values in history.items()
            if isinstance(values, list) and values and all(isinstance(value, (int, float)) for value in values)}

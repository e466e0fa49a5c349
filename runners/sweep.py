"""Sweep bookkeeping shared across processes through files in the sweep folder.

``on_multirun_start`` (in the launching process) writes ``<sweep dir>/phase_sweep.json``:
the swept keys (for slot names), the number of jobs and the MLflow parent run. Every
job, in whatever process or machine the launcher puts it, reads that file, tags its run as
a child of the parent and, when it ends, appends a line to ``phase_sweep_jobs.jsonl``
(under a file lock). The job that completes the count ends the parent run, FINISHED when
every job was green and FAILED otherwise; ``on_multirun_end`` does the same when Hydra
calls it (it does not when a job failed). Ending is idempotent. A job killed outright
never reports, so its sweep's parent stays RUNNING until ``on_multirun_end``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

CONTEXT_FILE = "phase_sweep.json"
JOBS_FILE = "phase_sweep_jobs.jsonl"


@dataclass(frozen=True)
class SweepContext:
    swept_keys: list[str]
    n_jobs: int | None
    parent_run_id: str | None
    tracking_uri: str
    experiment: str


def describe(overrides: list[str]) -> tuple[list[str], int | None]:
    """The swept keys of a multirun's overrides and the number of jobs (None if unknown)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    keys, sizes = [], []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            keys.append(override.key_or_group)
            try:
                sizes.append(len(list(override.sweep_iterator())))
            except HydraException:  # interval and glob sweeps list no values here
                sizes.append(None)
    n_jobs = None if None in sizes else math.prod(sizes)
    return keys, n_jobs


def write_context(sweep_dir: Path, context: SweepContext) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    tmp = sweep_dir / f".{CONTEXT_FILE}.tmp"
    tmp.write_text(json.dumps(asdict(context), indent=2), encoding="utf-8")
    tmp.replace(sweep_dir / CONTEXT_FILE)


def read_context(sweep_dir: Path) -> SweepContext | None:
    path = sweep_dir / CONTEXT_FILE
    return SweepContext(**json.loads(path.read_text(encoding="utf-8"))) if path.is_file() else None


def record_job_end(sweep_dir: Path, job_num: int, green: bool) -> None:
    """Append this job's end to the sweep's journal."""
    with _journal_lock(sweep_dir):
        with open(sweep_dir / JOBS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"job": job_num, "green": green}) + "\n")


def finish_parent(sweep_dir: Path, context: SweepContext, *, sweep_over: bool = False) -> None:
    """End the parent run once every job reported, or at once when ``sweep_over``.

    FINISHED when every reported job was green, FAILED otherwise; a parent that is no
    longer RUNNING is left alone.
    """
    if context.parent_run_id is None:
        return
    with _journal_lock(sweep_dir):
        entries = _entries(sweep_dir / JOBS_FILE)
    reported = len({entry["job"] for entry in entries})
    if not sweep_over and (context.n_jobs is None or reported < context.n_jobs):
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=context.tracking_uri)
    if client.get_run(context.parent_run_id).info.status == "RUNNING":
        green = bool(entries) and all(entry["green"] for entry in entries)
        client.set_terminated(context.parent_run_id, "FINISHED" if green else "FAILED")


def _journal_lock(sweep_dir: Path) -> FileLock:
    return FileLock(str(sweep_dir / f"{JOBS_FILE}.lock"), timeout=60)


def _entries(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

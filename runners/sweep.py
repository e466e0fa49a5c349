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

from runners.evidence import INTERRUPTED

CONTEXT_FILE = "phase_sweep.json"
JOBS_FILE = "phase_sweep_jobs.jsonl"
JOURNAL_LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class SweepContext:
    swept_keys: list[str]
    n_jobs: int | None
    parent_run_id: str | None
    tracking_uri: str
    experiment: str
    parent_ui: str = ""
    launcher: str = ""  # hydra.launcher._target_ (a SLURM sweep's members are awaited before its summary)


_LAUNCHED: list[Path] = []  # sweep folders launched by this process (the summary's source)


def note_launch(sweep_dir: Path | None) -> None:
    """Remember the sweep this process launched (None: forget, for a new invocation)."""
    _LAUNCHED.clear()
    if sweep_dir is not None:
        _LAUNCHED.append(sweep_dir)


def launched() -> Path | None:
    """The sweep folder this process launched last, or None."""
    return _LAUNCHED[-1] if _LAUNCHED else None


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


def record_job_end(sweep_dir: Path, job_num: int, green: bool, slot: str | None = None,
                   run_id: str | None = None, blocker: str | None = None, skipped: bool = False,
                   status: str | None = None, lock_timeout_s: float = JOURNAL_LOCK_TIMEOUT_S) -> None:
    """Append this job's end to the sweep's journal (its slot, MLflow run and blocker when known;
    ``skipped``: its work was found done, ``runners.evidence.resume``; ``status``: INTERRUPTED, for a job
    ended by a signal, else left out: ``green`` says GREEN or BLOCKED)."""
    entry = {"job": job_num, "green": green, "slot": slot, "run_id": run_id, "blocker": blocker, "skipped": skipped,
             **({"status": status} if status else {})}
    with _journal_lock(sweep_dir, lock_timeout_s):
        with open(sweep_dir / JOBS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def summary(sweep_dir: Path, lock_timeout_s: float = JOURNAL_LOCK_TIMEOUT_S) -> tuple[str, bool]:
    """(the sweep's closing block, True when every job reported GREEN)."""
    context = read_context(sweep_dir)
    with _journal_lock(sweep_dir, lock_timeout_s):
        entries = {entry["job"]: entry for entry in _entries(sweep_dir / JOBS_FILE)}
    n_jobs = context.n_jobs if context and context.n_jobs is not None else len(entries)
    n_green = sum(entry["green"] for entry in entries.values())
    missing = [job for job in range(n_jobs) if job not in entries]
    n_skipped = sum(bool(entry.get("skipped")) for entry in entries.values())
    n_interrupted = sum(entry.get("status") == INTERRUPTED for entry in entries.values())
    head = f"== Sweep {sweep_dir}: {n_green} GREEN / {len(entries) - n_green - n_interrupted} BLOCKED"
    head += (f" / {n_interrupted} {INTERRUPTED}" if n_interrupted else "") + f" of {n_jobs} jobs"
    head += f" ({n_skipped} skipped: done before)" if n_skipped else ""
    head += f", {len(missing)} without a report ==" if missing else " =="
    lines = [head]
    if context and context.parent_run_id:
        lines.append(f"  MLflow parent run {context.parent_run_id}" + (f": {context.parent_ui}" if context.parent_ui else ""))
    for job in sorted(set(entries) | set(missing)):
        entry = entries.get(job)
        if entry is None:
            lines.append(f"  job {job}  NO REPORT (killed before its end?)")
        elif entry["green"]:
            done = "  (skipped: done before)" if entry.get("skipped") else ""
            lines.append(f"  job {job}  GREEN    {entry.get('slot') or '-'}  run {entry.get('run_id') or '-'}{done}")
        else:
            status = entry.get("status", "BLOCKED")
            lines.append(f"  job {job}  {status}  {entry.get('slot') or '-'}  blocker: {entry.get('blocker') or '-'}")
    return "\n".join(lines), not missing and n_green == len(entries) and bool(entries)


def missing_jobs(sweep_dir: Path) -> int:
    """How many of the sweep's jobs have not reported (0 when the count is unknown)."""
    context = read_context(sweep_dir)
    if context is None or context.n_jobs is None:
        return 0
    with _journal_lock(sweep_dir):
        reported = {entry["job"] for entry in _entries(sweep_dir / JOBS_FILE)}
    return len(set(range(context.n_jobs)) - reported)


def wait_for_slurm_members(sweep_dir: Path, say) -> None:
    """On a SLURM sweep with members unreported, wait until every member left SLURM's queue.

    Hydra's submitit launcher reads the members' results in order and gives up at the first member
    that left none (cancelled with ``scancel``, killed at its time limit, lost with its node), while
    later members still run; the summary would then call them "NO REPORT" although they go on to
    finish. Members are submitit's job folders ``<sweep dir>/.submitit/<array>_<member>``. Ctrl-C
    stops the wait (the summary follows)."""
    context = read_context(sweep_dir)
    if context is None or "slurm" not in context.launcher.lower() or not missing_jobs(sweep_dir):
        return
    from submitit.slurm.slurm import SlurmJob

    filed = sweep_dir / ".submitit"
    members = [folder.name for folder in sorted(filed.glob("*_*")) if folder.is_dir()]
    say(f"a member left no result: waiting for the sweep's {len(members)} SLURM jobs to leave the queue "
        "(Ctrl-C: stop waiting)")
    try:
        for member in members:
            SlurmJob(filed / "%j", member).wait()
    except KeyboardInterrupt:
        say("stopped waiting: members still in the queue will report in the hub, not in this summary")


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


def kill_parent(sweep_dir: Path) -> None:
    """End the parent run of an interrupted sweep as KILLED (a parent no longer RUNNING is left alone)."""
    context = read_context(sweep_dir)
    if context is None or context.parent_run_id is None:
        return
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=context.tracking_uri)
    if client.get_run(context.parent_run_id).info.status == "RUNNING":
        client.set_terminated(context.parent_run_id, "KILLED")


def _journal_lock(sweep_dir: Path, timeout_s: float = JOURNAL_LOCK_TIMEOUT_S) -> FileLock:
    return FileLock(str(sweep_dir / f"{JOBS_FILE}.lock"), timeout=timeout_s)


def _entries(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

"""``python -m runners.tracking.sync``: log to MLflow the hub records whose job could not (docs/design.md §9).

A job whose tracking failed (server down, store locked or unwritable, no answer within
``tracking.timeout_s``) is GREEN or BLOCKED on disk all the same. Its inventory section and
summary entry say ``Tracking: FAILED at ...``, and its slot keeps ``tracking_journal.json``:
the job's record and every MLflow call it made or meant to make (parameters, per-epoch,
bundle and timing metrics, tags, datasets, artifact paths, start and end times). This command
finds those sections, replays each journal into one new MLflow run, and rewrites the section
and the entry (``Tracking: SYNCED at ...``, the new run under ``MLflow:``) under the hub lock.

Usage, from the folder the jobs were launched in (relative paths are taken from there)::

    python -m runners.tracking.sync [hub.root=PATH] [tracking.uri=URI] [tracking.timeout_s=S]

``hub.root`` defaults to the runner's, ``tracking.uri`` to each job's own store. Idempotent:
the synced run carries the tag ``sync_key`` (sha1 of the slot, UTC time and stats sha1), looked
up before anything is logged, so a second sync, or one after a sync that died before it
rewrote the hub, adds no second run. A run the job had begun before MLflow failed is ended
FAILED with the tag ``superseded_by``. Exit status 0 when every such section was synced.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

from runners.evidence import hub, outcome
from runners import tracking
from runners.evidence import PhaseRecord, inventory_section, summary_entry

SECTION_BEGIN = re.compile(r"^>>> BEGIN SECTION (.+)$", re.M)
PENDING_LINE = "Tracking: FAILED at "
REPLAYED = ("start", "log_params", "log_metrics", "log_points", "set_tags", "log_dataset", "log_artifacts",
            "rename", "end")
SYNC_LOCK = ".sync.lock"


class SyncError(RuntimeError):
    """One slot could not be synced; the message says why and leaves its hub entry as it was."""


@dataclass(frozen=True)
class Options:
    hub_root: Path
    uri: str | None  # None: each job's own store
    timeout_s: float
    lock_timeout_s: float = 600.0


def keep_journal(tracker: tracking.Tracker, record: PhaseRecord, slot: hub.HubSlot, outcome_path: Path,
                 lock_timeout_s: float, log_artifacts: bool) -> None:
    """The job's side, once its tracker failed: what MLflow missed goes to the slot's journal for
    this command, and the hub and the job's saved record show the failure."""
    if log_artifacts:
        tracker.log_artifacts(slot.cli_log, "logs")  # journaled only: the log is complete when sync reads it
    tracker.save_journal(slot.dir / tracking.JOURNAL_FILE, asdict(record))
    if not outcome.is_published(record, slot):  # tracking failed after the hub step
        outcome.publish(record, slot, lock_timeout_s)
    record.save(outcome_path)


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    inventory = hub.inventory_file(options.hub_root)
    if not inventory.is_file():
        print(f"hub.root: no inventory at {inventory}; nothing to sync", file=sys.stderr)
        return 1
    with FileLock(str(options.hub_root / SYNC_LOCK), timeout=options.lock_timeout_s):
        slots = pending_slots(inventory.read_text(encoding="utf-8"))
        failed = 0
        for slot in slots:
            try:
                print(sync_slot(slot, options), flush=True)
            except SyncError as exc:
                failed += 1
                print(f"{slot}: not synced: {exc}", flush=True)
    print(f"sync: {len(slots) - failed} synced, {failed} not, of {len(slots)} sections whose tracking "
          f"FAILED in {inventory}", flush=True)
    return 1 if failed else 0


def parse(argv: list[str] | None) -> Options:
    """``key=value`` arguments like the runner's overrides (module docstring)."""
    keys = ("hub.root", "tracking.uri", "tracking.timeout_s", "hub.lock_timeout_s")
    parser = argparse.ArgumentParser(
        prog="python -m runners.tracking.sync",
        description="Log to MLflow the hub records whose job could not (their section says 'Tracking: "
                    "FAILED'), from each slot's tracking_journal.json, once; then mark them SYNCED.",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=(
        "hub.root (default: the runner's), tracking.uri (default: each job's own), tracking.timeout_s "
        f"(default {tracking.DEFAULT_TIMEOUT_S:g}), hub.lock_timeout_s (default 600); relative paths are "
        "taken from the current folder"))
    values: dict[str, str] = {}
    for item in parser.parse_args(argv).overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            parser.error(f"{item!r}: expected key=value with key one of {', '.join(keys)}")
        values[key] = value
    seconds = {key: _positive(parser, key, values.get(key, default))
               for key, default in (("tracking.timeout_s", tracking.DEFAULT_TIMEOUT_S), ("hub.lock_timeout_s", 600.0))}
    uri = values.get("tracking.uri")
    return Options(
        hub_root=(Path.cwd() / (values["hub.root"] if "hub.root" in values else default_hub_root())).resolve(),
        uri=tracking.absolute_uri(uri, Path.cwd()) if uri else None,
        timeout_s=seconds["tracking.timeout_s"], lock_timeout_s=seconds["hub.lock_timeout_s"],
    )


def _positive(parser: argparse.ArgumentParser, key: str, value: object) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        parser.error(f"{key}: must be > 0 (seconds); got {value!r}")
    return number


def default_hub_root() -> str:
    """The runner's ``hub.root`` (runners/conf/hub), relative to the launch folder."""
    from hydra import compose, initialize_config_module

    from runners.schema import register_configs

    register_configs()
    with initialize_config_module(config_module="runners.conf", version_base="1.3"):
        return str(compose("phase").hub.root)


def pending_slots(inventory_text: str) -> list[str]:
    """The slots whose inventory section says their tracking FAILED, in inventory order."""
    slots = []
    for slot in SECTION_BEGIN.findall(inventory_text):
        body = hub.read_section(inventory_text, slot) or ""
        if any(line.startswith(PENDING_LINE) for line in body.splitlines()):
            slots.append(slot)
    return slots


def sync_key(record: PhaseRecord) -> str:
    """What names a job's synced run: sha1 of its slot, UTC time and stats sha1."""
    return hashlib.sha1(f"{record.slot}\n{record.utc_time}\n{record.stats_sha1}".encode()).hexdigest()


def sync_slot(slot: str, options: Options) -> str:
    """Log ``slot``'s journal to MLflow (once) and rewrite its hub entry; the line to print."""
    journal, record = read_journal(options.hub_root, slot)
    published = inventory_section(record)
    current = hub.read_section(hub.inventory_file(options.hub_root).read_text(encoding="utf-8"), slot)
    if current != published:
        raise SyncError(f"its section is not the one {tracking.JOURNAL_FILE} was written with (the slot ran "
                        "again?); left as it is")
    uri = options.uri or journal["uri"]
    tracker = tracking.Tracker(uri, journal["experiment"], options.timeout_s)
    key = sync_key(record)
    run_id = logged_run(tracker, key) or replay(tracker, journal, key, record)
    if journal.get("run_id") and journal["run_id"] != run_id:
        tracker.close_if_running(journal["run_id"], green=False, tags={"superseded_by": run_id})
    if tracker.failure is not None:
        raise SyncError(f"MLflow at {uri} FAILED at {tracker.failure.operation}: {tracker.failure.error}")
    tracker.run_id = run_id
    record.tracking = {**record.tracking, "status": "SYNCED",
                       "synced_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    record.mlflow = {"run_id": run_id, "experiment": journal["experiment"], "tracking_uri": uri,
                     "ui": tracker.run_link()}
    if not hub.republish(options.hub_root, slot, published, inventory_section(record), summary_entry(record),
                         options.lock_timeout_s):
        raise SyncError(f"logged to MLflow as run {run_id}, but its section changed meanwhile; left as it is")
    return f"synced {slot} -> run {run_id} at {uri}"


def read_journal(root: Path, slot: str) -> tuple[dict, PhaseRecord]:
    path = root / slot / tracking.JOURNAL_FILE
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
        return journal, PhaseRecord(**journal["record"])
    except FileNotFoundError:
        raise SyncError(f"no {path}: nothing to replay") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SyncError(f"{path} is not a tracking journal ({type(exc).__name__}: {exc})") from exc


def logged_run(tracker: tracking.Tracker, key: str) -> str | None:
    """The run an earlier sync completed for ``key``; runs it left half-done are deleted."""
    found = tracker.find_runs("sync_key", key)
    done = [run_id for run_id, status in found if status != "RUNNING"]
    if done:
        return done[0]
    for run_id, _ in found:
        tracker.delete_run(run_id)
    return None


def replay(tracker: tracking.Tracker, journal: dict, key: str, record: PhaseRecord) -> str | None:
    """Every call of the journal into one new run (tagged ``sync_key``); its id."""
    calls = journal["calls"]
    if not calls or calls[0]["op"] != "start":
        raise SyncError(f"the journal of {record.slot} does not begin with the run's start")
    for call in calls:
        operation, args = call["op"], dict(call["args"])
        if operation not in REPLAYED:
            raise SyncError(f"unknown operation {operation!r} in the journal of {record.slot}")
        if operation == "start":
            parent = args.get("parent_run_id")
            if parent and tracker.run_status(parent) is None:  # the sweep's parent never reached MLflow
                args["parent_run_id"] = None
            args["tags"] = {**args["tags"], "sync_key": key, "synced_by": "python -m runners.tracking.sync",
                            "tracking_failure": f"{record.tracking.get('at')}: {record.tracking.get('error')}"}
        getattr(tracker, operation)(**args)
    return tracker.run_id


if __name__ == "__main__":
    sys.exit(main())

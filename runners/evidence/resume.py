"""Resume: a job whose slot already holds a GREEN record of the same work is skipped (issue 11).

The same work = the same *work key*: sha1 of the composed config without the keys that do not
change what is computed (``hub``, ``tracking``, ``force``, ``verbose``; the launcher is not in the config),
the sha1s of the data files (a simulated dataset is fixed by its config), and the code's state
(:func:`runners.evidence.envinfo.code_state`: the commit, plus a digest of uncommitted changes and of
untracked source files; outside git, the package's version and a digest of its source files). The
GREEN section records its work key (``Work key:``); a rerun with the same key is skipped, a
BLOCKED, INTERRUPTED or RUNNING section or another key runs, and ``force=true`` always runs.
So a sweep that died at member 37 of 40, rerun with the same command, does only the missing
work, in a git checkout, a copied tree or an installed package alike.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from runners.evidence import hub
from runners.evidence import GREEN

NOT_WORK = ("hub", "tracking", "force", "verbose")
SKIPPED_STEP = "skipped"  # the step of a skipped job's record


@dataclass(frozen=True)
class FinishedWork:
    """What the slot's GREEN section says about the run that did the work."""

    utc_time: str
    run_id: str
    stats_sha1: str


def work_key(config: dict, data_files: list[Path], code: str) -> str | None:
    """The work key (module docstring); None when the code's state is ``unknown`` (never skipped)."""
    from ptycho.data.npz import file_sha1

    if code == "unknown":
        return None
    payload = {
        "config": {key: value for key, value in config.items() if key not in NOT_WORK},
        "data": [file_sha1(path) for path in data_files],
        "code": code,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def finished_work(slot: hub.HubSlot, key: str | None) -> FinishedWork | None:
    """The slot's GREEN record of work ``key``, or None (no section, not GREEN, another key)."""
    if key is None or not slot.inventory.is_file():
        return None
    body = hub.read_section(slot.inventory.read_text(encoding="utf-8"), slot.name)
    if body is None:
        return None
    fields = dict(line.split(": ", 1) for line in body.splitlines()[1:] if ": " in line)
    if fields.get("Status") != GREEN or fields.get("Work key") != key:
        return None
    mlflow = dict(item.split("=", 1) for item in fields.get("MLflow", "").split() if "=" in item)
    return FinishedWork(fields.get("UTC time", "?"), mlflow.get("run_id", "-"), fields.get("stats.json sha1", "-"))

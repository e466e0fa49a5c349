"""How a job ends: GREEN (inventory section + summary entry), BLOCKED or INTERRUPTED (blocker file too).

The job writes its outcome itself (primary path); the Hydra post-hook calls the same
functions again after the job (second path), which change nothing when the job already
wrote them. The errors below derive from Hydra's CompactHydraException, so Hydra prints only their
message (not a traceback) and exits with status 1. Hydra then adds a hint line of its own,
so the entry point (``runners.phase.cli``) ends the output with the blocker paths: it opens a
:class:`BlockerLog` for each invocation (:func:`blocker_log`), and :func:`note_blocker` enters
every blocker written in this process, printed by its job, or received as a PhaseBlocked
(raised to the entry point, or unpickled from a launcher's worker). Outside that block
nothing is collected.
"""
from __future__ import annotations

import logging
import os
import re
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from hydra.errors import CompactHydraException

from ptycho import disk_preflight
from runners.process import diskfull, interrupt
from runners.evidence import hub
from runners.evidence import (
    BLOCKED, GREEN, INTERRUPTED, PhaseRecord, blocker_markdown, inventory_section, summary_entry,
)

log = logging.getLogger(__name__)

GUARD_WAIT_STEP = "guard wait"  # the C1 step at which a red guard stops the run
INTERRUPT_LOCK_TIMEOUT_S = 0.3  # the hub's lock, when an interrupt writes the evidence
MLFLOW_KILL_TIMEOUT_S = 1.0  # how long an interrupted job waits for MLflow to end its run
TEE_CLOSE_TIMEOUT_S = 0.2  # how long an interrupted job waits for its CLI log's last lines


class PhaseConfigError(CompactHydraException, ValueError):
    """The composed config cannot run (message starts with the key); nothing was done."""


class PhaseBlocked(CompactHydraException):
    """The phase failed; the blocker file says why. Picklable (joblib sends it back).

    ``announced``: the job already printed its closing block with the ``blocker:`` line, so the
    entry point does not print it again.
    """

    def __init__(self, reason: str, blocker: str, announced: bool = False):
        super().__init__(reason, blocker, announced)
        self.reason, self.blocker, self.announced = reason, blocker, announced

    def __str__(self) -> str:
        return f"BLOCKED: {self.reason}\nblocker: {self.blocker}"

    def __reduce__(self):
        return received_from_worker, (self.reason, self.blocker, self.announced)


def received_from_worker(reason: str, blocker: str, announced: bool) -> PhaseBlocked:
    """A PhaseBlocked unpickled from a launcher's worker process (joblib, SLURM), noted where it
    arrives: that process's own notes stay there."""
    note_blocker(blocker, announced=announced)
    return PhaseBlocked(reason, blocker, announced)


class BlockerLog:
    """The blocker paths one invocation of the entry point saw, first seen first, and which of them
    a job printed itself (``announced``)."""

    def __init__(self):
        self._announced: dict[str, bool] = {}

    def note(self, path: str | None, announced: bool = False) -> None:
        self._announced[path] = self._announced.get(path, False) or announced

    def paths(self, *, unannounced: bool = False) -> list[str | None]:
        """Every blocker path (``unannounced``: only those no job printed)."""
        return [path for path, announced in self._announced.items() if not (unannounced and announced)]


_open_log: BlockerLog | None = None


@contextmanager
def blocker_log() -> Iterator[BlockerLog]:
    """A new BlockerLog that :func:`note_blocker` fills while the block runs (the entry point opens one
    per invocation: a host process may run it several times)."""
    global _open_log
    outer, _open_log = _open_log, BlockerLog()
    try:
        yield _open_log
    finally:
        _open_log = outer


def note_blocker(path: str | None, announced: bool = False) -> None:
    """Enter a blocker in the entry point's :class:`BlockerLog` (None: a job blocked without one, which
    still fails the invocation); nothing when none is open (a launcher's worker, a test that runs a
    phase directly)."""
    if _open_log is not None:
        _open_log.note(path, announced)


def display_path(path: Path, launch_dir: Path) -> str:
    """``path`` relative to the launch folder when inside it, absolute otherwise."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(launch_dir.resolve()))
    except ValueError:
        return str(path)


def is_published(record: PhaseRecord, slot: hub.HubSlot) -> bool:
    """True when the hub already shows exactly this record (and its blocker exists)."""
    if not slot.inventory.is_file():
        return False
    body = hub.read_section(slot.inventory.read_text(encoding="utf-8"), slot.name)
    blocker_ok = record.status != BLOCKED or bool(record.blocker)
    return blocker_ok and body == inventory_section(record)


def publish(record: PhaseRecord, slot: hub.HubSlot, lock_timeout_s: float) -> None:
    """Write (or replace) the slot's inventory section and summary entry."""
    hub.publish(slot, inventory_section(record), summary_entry(record), lock_timeout_s)


def block(
    record: PhaseRecord, slot: hub.HubSlot, error: BaseException, launch_dir: Path, lock_timeout_s: float,
    *, reason: str | None = None, elsewhere: Callable[[str], str | None] | None = None,
) -> Path | None:
    """Mark ``record`` BLOCKED by ``error`` (``reason``: the one-line error to show, else the
    error's first line), write the blocker file and publish; the blocker's path (None when it
    went elsewhere: :func:`_write_blocker`)."""
    record.status = BLOCKED
    record.error = reason or f"{type(error).__name__}: {error}".splitlines()[0]
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    stale = display_path(slot.bundle_dir, launch_dir) if slot.bundle_dir.exists() else None
    return _write_blocker(record, slot, stack, stale, launch_dir, lock_timeout_s, elsewhere)


def interrupted(
    record: PhaseRecord, slot: hub.HubSlot, signal_name: str, stack: str, launch_dir: Path, lock_timeout_s: float,
    *, bundle_is_this_runs: bool = False,
) -> Path:
    """Mark ``record`` INTERRUPTED by ``signal_name`` at its step (``stack``: where the main thread
    was), write the blocker file and publish; the blocker path."""
    record.status = INTERRUPTED
    record.error = f"signal {signal_name}"
    stale = display_path(slot.bundle_dir, launch_dir) if slot.bundle_dir.exists() and not bundle_is_this_runs else None
    return _write_blocker(record, slot, stack, stale, launch_dir, lock_timeout_s)


def _write_blocker(record: PhaseRecord, slot: hub.HubSlot, stack: str, stale_bundle: str | None, launch_dir: Path,
                   lock_timeout_s: float, elsewhere: Callable[[str], str | None] | None = None) -> Path | None:
    """The blocker in the slot's ``red/``; where the hub cannot take it (a full disk, a read-only
    file system), in the launch folder, else wherever ``elsewhere`` puts it (the MLflow run) and
    says. Then the section and summary entry; where the hub cannot take them either,
    ``record.hub_error`` says why. ``record.blocker`` names the place; the path, or None."""
    markdown = blocker_markdown(record, stack, stale_bundle)
    label = blocker_label(record, slot)
    path = None
    try:
        path = hub.write_blocker(slot, markdown, lock_timeout_s, label=label)
        record.blocker = display_path(path, launch_dir)
    except OSError as exc:
        path, record.blocker = _blocker_elsewhere(markdown, slot, label, launch_dir, (exc, slot.red_dir), elsewhere)
    note_blocker(record.blocker)
    try:
        publish(record, slot, lock_timeout_s)
    except OSError as exc:
        record.hub_error = f"section and summary entry not written: {os_error_line(exc, slot.inventory)}"
    return path


def _blocker_elsewhere(markdown: str, slot: hub.HubSlot, label: str, launch_dir: Path,
                       hub_failure: tuple[OSError, Path], elsewhere: Callable[[str], str | None] | None,
                       ) -> tuple[Path | None, str]:
    """(path, where) of a blocker the hub could not take: ``<launch folder>/blocked_<stamp>_<slot>_<label>.md``,
    else ``elsewhere(markdown)``'s place, else a note that it was written nowhere."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", slot.name)
    path = launch_dir / f"blocked_{stamp}_{name}_{label}.md"
    hub_error = os_error_line(*hub_failure)
    note = f"(the hub could not take it: {hub_error})"
    try:
        hub.atomic_write_text(path, markdown)
        return path, f"{display_path(path, launch_dir)} {note}"
    except OSError as exc:
        launch_error = os_error_line(exc, path)
    where = elsewhere(markdown) if elsewhere is not None else None
    if where:
        return None, f"{where} {note}"
    return None, f"not written anywhere: the hub ({hub_error}) nor the launch folder ({launch_error})"


def report_failure(record: PhaseRecord, error: BaseException, space: "diskfull.JobSpace", *,
                   store: Path | None = None, written: list[Path] = (), logger: logging.Logger = log,
                   stack: bool = True) -> "diskfull.DiskFull | None":
    """Say on ``logger`` how a C1, C2 or C3 job failed, its disk settled first (``space.settle``: on a
    full disk this run's partial files removed and its reserved space given back): a refusal of the
    disk pre-flight in one line (nothing was run), a full disk in one line naming the path and errno,
    another error with its stack (``stack``) or its first line. The DiskFull, or None."""
    full, removed = space.settle(error, store, list(written))
    if isinstance(error, disk_preflight.DiskSpaceError):  # a refusal, not a fault: no stack on the console
        logger.error("%s refused by the disk pre-flight (nothing was run): %s", record.title, error)
    elif full is not None:
        logger.error("%s failed at step %r: %s%s", record.title, record.step, full.line(),
                     f" (partial files removed: {', '.join(map(str, removed))})" if removed else "")
    elif stack:
        logger.error("%s failed at step %r", record.title, record.step, exc_info=error)
    else:
        logger.error("%s failed at step %r: %s", record.title, record.step, error)
    return full


def described(text: str, blocker_text: str | None) -> str:
    """A run description, with the blocker under it when only the MLflow run could take it."""
    return text + (f"\n\n---\n\n{blocker_text}" if blocker_text else "")


def save_record(record: PhaseRecord, path: Path) -> None:
    """``record.save(path)``; a failed write (a full disk) is logged: the blocker has been written already."""
    try:
        record.save(path)
    except OSError as exc:
        log.error("could not save %s: %s", path, os_error_line(exc))


def os_error_line(error: OSError, path: Path | None = None) -> str:
    """``<path>: [Errno 28] No space left on device``: the file the error names, else ``path``."""
    named = os.fsdecode(error.filename) if error.filename else path
    return f"{named}: [Errno {error.errno}] {error.strerror or error}" if named else f"[Errno {error.errno}] {error}"


def kill_run(client, run_id: str, record: PhaseRecord, timeout_s: float) -> str:
    """End the MLflow run of an interrupted ``record`` as KILLED, with tags ``status`` and ``blocker``
    and `` [INTERRUPTED]`` after its name, giving up after ``timeout_s`` (a tracking store that does
    not answer must not hold the exit): ``KILLED``, or why the run was left as it was."""
    ended: list[str] = []

    def end() -> None:
        client.set_terminated(run_id, "KILLED")
        ended.append("KILLED")
        for key, value in (("status", record.status), ("blocker", record.blocker or "-")):
            client.set_tag(run_id, key, value)
        client.update_run(run_id, name=f"{record.slot} [{record.status}]")

    finished, error = interrupt.call_bounded(end, timeout_s, "mlflow-kill")
    if ended:
        return "KILLED"
    if not finished:
        return f"not ended: no answer within {timeout_s:.1f} s"
    return f"not ended: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def blocker_label(record: PhaseRecord, slot: hub.HubSlot) -> str:
    """What failed, for the blocker's file name: the guard's name when its check stopped the run,
    else the failed step (``model build and grouping`` -> ``model_build_and_grouping``)."""
    if record.step == GUARD_WAIT_STEP:
        return slot.guard_name
    return re.sub(r"[^A-Za-z0-9]+", "_", record.step).strip("_") or "unknown_step"


def mark_green(record: PhaseRecord, slot: hub.HubSlot, lock_timeout_s: float) -> None:
    record.status = GREEN
    record.step = "done"
    publish(record, slot, lock_timeout_s)

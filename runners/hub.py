"""The reports hub: slot layout, atomic and locked writes, inventory/summary sections, blockers.

Layout under the hub root (DESIGN §4)::

    green/pytest_<guard>.log                  the latest guard run of any slot
    analysis/artifact_inventory.txt           one section per slot, replaced in place on rerun
    summary.md                                one entry per slot, replaced in place on rerun
    <tag>_baseline/phase_<phase>_<variant>[__<sweep suffix>]/     a slot
        cli/train_<tag>_phase_<phase>_<variant>.log
        run_<variant>/                        training outputs, timings.json
        analysis/forward_parity_debug_<tag>/  the debug bundle
        green/pytest_<guard>.log              this slot's guard run
        red/blocked_<UTC stamp>_<guard>.md    blockers

Every write goes to a temporary file in the same folder and is renamed into place, under
an exclusive file lock on the hub root (``<root>/.hub.lock``), so parallel jobs never lose,
duplicate or interleave sections. Sections are delimited by stable BEGIN/END marker lines
that carry the slot name.
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock

INVENTORY_HEADER = """\
# Artifact inventory: FIX-PYTORCH-FORWARD-PARITY-001 forward-parity reports hub
# One section per phase slot, written by `python -m runners.phase` (a rerun replaces its
# section in place). Paths are relative to the directory the command was launched from.
"""
SUMMARY_HEADER = """\
# Forward-parity reports hub: summary

One entry per phase slot, written by `python -m runners.phase`; GREEN entries name the
stats.json sha1 and the MLflow run, BLOCKED entries the blocker file.
"""
_SAFE_SLOT_CHARS = re.compile(r"[^A-Za-z0-9._=,+-]")
LOCK_NAME = ".hub.lock"


class SlotError(ValueError):
    """A hub slot that is malformed or escapes the hub root."""


@dataclass(frozen=True)
class HubSlot:
    """Paths of one phase slot. ``name`` is relative to ``root`` (absolute)."""

    root: Path
    name: str
    tag: str
    phase_stem: str
    variant: str
    guard_name: str

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def cli_log(self) -> Path:
        return self.dir / "cli" / f"train_{self.tag}_{self.phase_stem}.log"

    @property
    def run_dir(self) -> Path:
        return self.dir / f"run_{self.variant}"

    @property
    def bundle_dir(self) -> Path:
        return self.dir / "analysis" / f"forward_parity_debug_{self.tag}"

    @property
    def guard_log(self) -> Path:
        return self.dir / "green" / f"pytest_{self.guard_name}.log"

    @property
    def hub_guard_log(self) -> Path:
        return self.root / "green" / f"pytest_{self.guard_name}.log"

    @property
    def red_dir(self) -> Path:
        return self.dir / "red"

    @property
    def inventory(self) -> Path:
        return self.root / "analysis" / "artifact_inventory.txt"

    @property
    def summary(self) -> Path:
        return self.root / "summary.md"

    def make_dirs(self) -> None:
        for sub in ("cli", "analysis", "green", "red"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)


def slot_suffix(job_overrides: list[str], swept_keys: list[str]) -> str:
    """``key=value`` of this job for every swept key, joined by ``,`` and made file-name safe.

    Example: overrides ``["c1=scaled", "gridsize=1"]`` with swept ``["gridsize"]`` give
    ``gridsize=1``; characters outside ``[A-Za-z0-9._=,+-]`` become ``_``.
    """
    chosen = [o.lstrip("+~") for o in job_overrides if o.lstrip("+~").split("=", 1)[0] in swept_keys]
    return _SAFE_SLOT_CHARS.sub("_", ",".join(sorted(chosen)))


def resolve_slot(
    root: Path, name: str, *, tag: str, phase_stem: str, variant: str, guard_name: str
) -> HubSlot:
    """A HubSlot whose every path stays inside ``root``; raises SlotError (naming hub.slot)."""
    if not name or Path(name).is_absolute():
        raise SlotError(f"hub.slot: must be a relative path inside hub.root; got {name!r}")
    root = root.resolve()
    slot = HubSlot(root, name, tag, phase_stem, variant, guard_name)
    for path in (slot.dir, slot.cli_log, slot.run_dir, slot.bundle_dir, slot.guard_log, slot.red_dir):
        resolved = path.resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise SlotError(f"hub.slot: {name!r} escapes hub.root {str(root)!r} (resolves to {resolved})")
    return slot


def hub_lock(root: Path, timeout_s: float) -> FileLock:
    """The exclusive lock that serialises every write to the hub's shared files."""
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / LOCK_NAME), timeout=timeout_s)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _markers(slot: str, markdown: bool) -> tuple[str, str]:
    if markdown:
        return f"<!-- BEGIN SECTION {slot} -->", f"<!-- END SECTION {slot} -->"
    return f">>> BEGIN SECTION {slot}", f"<<< END SECTION {slot}"


def replace_section(text: str, slot: str, body: str, *, markdown: bool = False) -> str:
    """``text`` with the section of ``slot`` replaced by ``body`` (appended if absent).

    Duplicated sections of the same slot (hand edits) collapse into the first one.
    """
    begin, end = _markers(slot, markdown)
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    pattern = re.compile(rf"^{re.escape(begin)}\n.*?^{re.escape(end)}\n?", re.S | re.M)
    found = list(pattern.finditer(text))
    if not found:
        return text.rstrip("\n") + "\n\n" + block
    first = found[0]
    out, cursor = [text[: first.start()], block], first.end()
    for match in found[1:]:
        out.append(text[cursor : match.start()])
        cursor = match.end()
    out.append(text[cursor:])
    return "".join(out)


def read_section(text: str, slot: str, *, markdown: bool = False) -> str | None:
    """The body of ``slot``'s section in ``text``, or None."""
    begin, end = _markers(slot, markdown)
    match = re.search(rf"^{re.escape(begin)}\n(.*?)^{re.escape(end)}$", text, re.S | re.M)
    return match.group(1).rstrip("\n") if match else None


def publish(slot: HubSlot, inventory_body: str, summary_body: str, lock_timeout_s: float) -> None:
    """Write or replace the slot's inventory section and summary entry (locked, atomic)."""
    with hub_lock(slot.root, lock_timeout_s):
        _update(slot.inventory, INVENTORY_HEADER, slot.name, inventory_body, markdown=False)
        _update(slot.summary, SUMMARY_HEADER, slot.name, summary_body, markdown=True)


def _update(path: Path, header: str, slot: str, body: str, *, markdown: bool) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else header
    atomic_write_text(path, replace_section(text, slot, body, markdown=markdown))


def write_blocker(slot: HubSlot, markdown: str, lock_timeout_s: float, now: datetime | None = None) -> Path:
    """Create ``red/blocked_<UTC stamp>_<guard>.md`` (never overwrites; ``_2``... on a clash)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    with hub_lock(slot.root, lock_timeout_s):
        slot.red_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            suffix = "" if attempt == 1 else f"_{attempt}"
            path = slot.red_dir / f"blocked_{stamp}{suffix}_{slot.guard_name}.md"
            if not path.exists():
                atomic_write_text(path, markdown)
                return path
    raise FileExistsError(f"{slot.red_dir}: no free blocker file name for stamp {stamp}")


def write_guard_logs(slot: HubSlot, text: str, lock_timeout_s: float) -> None:
    """The slot's guard log, and the hub-level copy (the latest guard run of any slot)."""
    atomic_write_text(slot.guard_log, text)
    with hub_lock(slot.root, lock_timeout_s):
        atomic_write_text(slot.hub_guard_log, text)

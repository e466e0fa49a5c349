"""The reports hub: slot layout, atomic and locked writes, inventory/summary sections, blockers.

Layout under the hub root (docs/design.md §7)::

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
duplicate or interleave sections. Files get the mode the process umask gives (0644 under
022). A temporary file names its writer (``.<name>.<pid>@<host>.<token>.tmp``), so the next
writer removes those that dead writers left (:func:`remove_stale_temps`).

Sections are delimited by stable BEGIN/END marker lines that carry the slot name. A body
line that would read as a marker is stored with one more leading backslash and read back
without it, so no body can forge or cut a section.

A slot is checked when it is made (:func:`resolve_slot`): a hub root or slot folder that is
a file or cannot be written is a :class:`HubError` naming ``hub.root`` or ``hub.slot``,
before any work starts, since no blocker could be written into that hub either.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import time
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
_MARKER_STARTS = r"(?=>>> BEGIN SECTION |<<< END SECTION |<!-- BEGIN SECTION |<!-- END SECTION )"
_MARKER_LIKE = re.compile(rf"^(\\*){_MARKER_STARTS}", re.M)
_STUFFED_MARKER = re.compile(rf"^\\(\\*){_MARKER_STARTS}", re.M)
_TEMP_NAME = re.compile(r"\..+\.(?P<pid>\d+)@(?P<host>[^@/]+)\.[0-9a-f]{8}\.tmp")
STALE_TEMP_AGE_S = 3600  # no hub write takes this long: another host's temporary file is left over


class SlotError(ValueError):
    """A hub slot that is malformed or escapes the hub root."""


class HubError(ValueError):
    """The hub root or a slot folder is a file or cannot be written (the message names the key)."""


@dataclass(frozen=True)
class HubSlot:
    """Paths of one phase slot. ``name`` is relative to ``root`` (absolute)."""

    root: Path
    name: str
    tag: str
    phase_stem: str
    variant: str
    guard_name: str
    log_verb: str = "train"  # the CLI log's name: <verb>_<tag>_<phase stem>.log (C2: "compare")

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def cli_log(self) -> Path:
        return self.dir / "cli" / f"{self.log_verb}_{self.tag}_{self.phase_stem}.log"

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
        return inventory_file(self.root)

    @property
    def summary(self) -> Path:
        return summary_file(self.root)

    @property
    def folders(self) -> tuple[Path, ...]:
        """Every folder the hub writes into for this slot: the shared ones, then the slot's."""
        return (self.root, self.inventory.parent, self.hub_guard_log.parent, self.cli_log.parent,
                self.run_dir, self.bundle_dir, self.guard_log.parent, self.red_dir)

    def make_dirs(self) -> None:
        for sub in ("cli", "analysis", "green", "red"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)


def inventory_file(root: Path) -> Path:
    return root / "analysis" / "artifact_inventory.txt"


def summary_file(root: Path) -> Path:
    return root / "summary.md"


def slot_suffix(job_overrides: list[str], swept_keys: list[str]) -> str:
    """``key=value`` of this job for every swept key, joined by ``,`` and made file-name safe.

    Example: overrides ``["c1=scaled", "gridsize=1"]`` with swept ``["gridsize"]`` give
    ``gridsize=1``; characters outside ``[A-Za-z0-9._=,+-]`` become ``_``.
    """
    chosen = [o.lstrip("+~") for o in job_overrides if o.lstrip("+~").split("=", 1)[0] in swept_keys]
    return _SAFE_SLOT_CHARS.sub("_", ",".join(sorted(chosen)))


def resolve_slot(
    root: Path, name: str, *, tag: str, phase_stem: str, variant: str, guard_name: str, log_verb: str = "train"
) -> HubSlot:
    """A HubSlot whose every path stays inside ``root`` and can be written.

    Raises SlotError (naming hub.slot) for a malformed name, HubError for an unusable folder.
    """
    if not name or Path(name).is_absolute():
        raise SlotError(f"hub.slot: must be a relative path inside hub.root; got {name!r}")
    if not name.isprintable():
        raise SlotError(f"hub.slot: must hold no line breaks or control characters; got {name!r}")
    root = root.resolve()
    slot = HubSlot(root, name, tag, phase_stem, variant, guard_name, log_verb)
    for path in (slot.dir, slot.cli_log, slot.run_dir, slot.bundle_dir, slot.guard_log, slot.red_dir):
        resolved = path.resolve()
        if resolved == root or not resolved.is_relative_to(root):
            raise SlotError(f"hub.slot: {name!r} escapes hub.root {str(root)!r} (resolves to {resolved})")
    check_writable(slot)
    return slot


def check_writable(slot: HubSlot) -> None:
    """Raise HubError unless each of the slot's folders is, or can be made, a writable folder.

    Creates nothing. ``os.access`` also says no to root on a read-only file system.
    """
    for folder in slot.folders:
        existing = next(path for path in (folder, *folder.parents) if os.path.exists(path))
        if not existing.is_dir():
            problem = f"{existing} is a file, not a folder"
        elif not os.access(existing, os.W_OK | os.X_OK):
            why = "read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else "permission denied"
            problem = f"{existing} is not writable ({why})"
        else:
            continue
        raise HubError(f"{_hub_key(slot, existing)}: {problem}; nothing was run, and no blocker can be written "
                       f"into this hub: choose another hub.root or fix {existing}")


def _hub_key(slot: HubSlot, path: Path) -> str:
    """``hub.root`` (with the root when ``path`` is not the root itself) or ``hub.slot`` for ``path``."""
    if path not in (slot.inventory.parent, slot.hub_guard_log.parent) and not slot.root.is_relative_to(path):
        return f"hub.slot {slot.name!r} (in hub.root {slot.root})"
    return "hub.root" if path == slot.root else f"hub.root {slot.root}"


def hub_lock(root: Path, timeout_s: float) -> FileLock:
    """The exclusive lock that serialises every write to the hub's shared files."""
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / LOCK_NAME), timeout=timeout_s)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the mode the umask gives; temporary files of dead writers there are removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def temp_path(target: Path, pid: int | None = None, host: str | None = None) -> Path:
    """A new temporary path next to ``target`` naming its writer: ``.<name>.<pid>@<host>.<token>.tmp``."""
    host = _SAFE_SLOT_CHARS.sub("_", host or socket.gethostname())
    return target.with_name(f".{target.name}.{pid or os.getpid()}@{host}.{secrets.token_hex(4)}.tmp")


def remove_stale_temps(folder: Path) -> None:
    """Remove the temporary files in ``folder`` that dead writers left.

    A writer on this host is dead when its pid is gone; a live writer's file always stays.
    Another host's pids cannot be checked, so its file counts as left over once it is older
    than STALE_TEMP_AGE_S. Hosts are told apart by name: containers that share a host name
    but not their pids would count as one host. Safe without the lock too: no writer renames
    a left-over file any more.
    """
    here = _SAFE_SLOT_CHARS.sub("_", socket.gethostname())
    for path in folder.glob(".*.tmp"):
        found = _TEMP_NAME.fullmatch(path.name)
        if found is None:
            continue
        try:
            if _is_left_over(path, int(found["pid"]), found["host"] == here):
                path.unlink(missing_ok=True)
        except FileNotFoundError:  # another writer removed it first
            continue


def _is_left_over(path: Path, pid: int, on_this_host: bool) -> bool:
    if not on_this_host:
        return time.time() - path.stat().st_mtime > STALE_TEMP_AGE_S
    try:
        os.kill(pid, 0)  # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, run by another user
        return False
    return False


def _markers(slot: str, markdown: bool) -> tuple[str, str]:
    if markdown:
        return f"<!-- BEGIN SECTION {slot} -->", f"<!-- END SECTION {slot} -->"
    return f">>> BEGIN SECTION {slot}", f"<<< END SECTION {slot}"


def replace_section(text: str, slot: str, body: str, *, markdown: bool = False) -> str:
    """``text`` with the section of ``slot`` replaced by ``body`` (appended if absent).

    A CR or CRLF in ``body`` becomes a LF (readers take it for a line break); a body line
    that reads as a marker gets one more leading backslash (read_section takes it off).
    Duplicated sections of the same slot (hand edits) collapse into the first one.
    """
    begin, end = _markers(slot, markdown)
    body = _MARKER_LIKE.sub(r"\\\1", re.sub(r"\r\n?", "\n", body.rstrip()))
    block = f"{begin}\n{body}\n{end}\n"
    pattern = re.compile(rf"^{re.escape(begin)}\n.*?^{re.escape(end)}$\n?", re.S | re.M)
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
    """The body of ``slot``'s section in ``text`` as it was given to replace_section, or None."""
    begin, end = _markers(slot, markdown)
    match = re.search(rf"^{re.escape(begin)}\n(.*?)^{re.escape(end)}$", text, re.S | re.M)
    return _STUFFED_MARKER.sub(r"\1", match.group(1).rstrip("\n")) if match else None


def publish(slot: HubSlot, inventory_body: str, summary_body: str, lock_timeout_s: float) -> None:
    """Write or replace the slot's inventory section and summary entry (locked, atomic).

    Also removes what dead writers left in the slot's folders (folders a rerun may not write).
    """
    with hub_lock(slot.root, lock_timeout_s):
        for folder in slot.folders:
            remove_stale_temps(folder)
        _update(slot.inventory, INVENTORY_HEADER, slot.name, inventory_body, markdown=False)
        _update(slot.summary, SUMMARY_HEADER, slot.name, summary_body, markdown=True)


def republish(root: Path, slot: str, expected: str, inventory_body: str, summary_body: str,
              lock_timeout_s: float) -> bool:
    """Replace ``slot``'s inventory section and summary entry only while the section still reads
    ``expected`` (the slot may have run again meanwhile); True when replaced (locked, atomic)."""
    with hub_lock(root, lock_timeout_s):
        inventory = inventory_file(root)
        current = read_section(inventory.read_text(encoding="utf-8"), slot) if inventory.is_file() else None
        if current != expected:
            return False
        _update(inventory, INVENTORY_HEADER, slot, inventory_body, markdown=False)
        _update(summary_file(root), SUMMARY_HEADER, slot, summary_body, markdown=True)
        return True


def _update(path: Path, header: str, slot: str, body: str, *, markdown: bool) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else header
    atomic_write_text(path, replace_section(text, slot, body, markdown=markdown))


def write_blocker(slot: HubSlot, markdown: str, lock_timeout_s: float, now: datetime | None = None,
                  label: str | None = None) -> Path:
    """Create ``red/blocked_<UTC stamp>_<label>.md``, label = what failed (default: the guard's
    name); never overwrites (``_2``... on a clash)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    with hub_lock(slot.root, lock_timeout_s):
        slot.red_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, 1000):
            suffix = "" if attempt == 1 else f"_{attempt}"
            path = slot.red_dir / f"blocked_{stamp}{suffix}_{label or slot.guard_name}.md"
            if not path.exists():
                atomic_write_text(path, markdown)
                return path
    raise FileExistsError(f"{slot.red_dir}: no free blocker file name for stamp {stamp}")


def write_guard_logs(slot: HubSlot, text: str, lock_timeout_s: float) -> None:
    """The slot's guard log, and the hub-level copy (the latest guard run of any slot). A failed
    write (a full disk: the OSError of a write names no file) names the log it was writing."""
    _write_naming_it(slot.guard_log, text)
    with hub_lock(slot.root, lock_timeout_s):
        _write_naming_it(slot.hub_guard_log, text)


def _write_naming_it(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        if not exc.filename:
            exc.filename = str(path)
        raise

"""A job's disk space: the pre-flight before any work, and a disk that fills during the run anyway.

:class:`JobSpace` is what Phases C1, C2 and C3 share: the pre-flight (``ptycho.disk_preflight``)
refuses, before any work, a job whose files cannot fit; then space is set aside for its evidence
and its output folders are watched for partial files. When another process fills the disk after
the pre-flight, the job (``runners.phases.c1``, ``c2``, ``c3``) writes one line that names the path and
the errno (:func:`find`), the partial files of this run are truncated and removed
(:class:`Partials`), the space the job set aside at its start is given back (:class:`Reserve`)
so that its blocker, section and MLflow end fit, and the exception's frames are cleared
(:func:`release`), so that a file library holding a half-written file (h5py) closes it now, on a
disk with room, not at interpreter exit, where h5py's failed close ended the process with a
segmentation fault.
"""
from __future__ import annotations

import errno
import gc
import os
import re
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from ptycho import disk_preflight

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
RESERVE_BYTES = 1 << 20  # what a blocker, a section, a summary entry and an MLflow end need
RESERVE_PREFIX = ".disk_reserve."
FULL_BELOW_BYTES = 64 << 10  # a file system with less free space than this counts as full
_H5_FILENAME = re.compile(r"filename = '([^']+)'")
_H5_ERRNO = re.compile(r"errno = (\d+)")
_SQLITE_FULL = "database or disk is full"


@dataclass(frozen=True)
class DiskFull:
    """Where a write failed for want of space: ``path`` (``-`` when the error does not say) and errno."""

    path: str
    errno: int

    def line(self) -> str:
        """``out of disk space: <path>: [Errno 28] No space left on device (ENOSPC)``."""
        return (f"out of disk space: {self.path}: [Errno {self.errno}] {os.strerror(self.errno)} "
                f"({errno.errorcode.get(self.errno, '?')})")


def find(error: BaseException, store: Path | None = None) -> DiskFull | None:
    """The DiskFull behind ``error`` (itself, its cause or its context), or None. An SQLite store that
    is full says so without a path: ``store`` names it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = _disk_full(error, store)
        if found is not None:
            return found
        error = error.__cause__ or error.__context__
    return None


def _disk_full(error: BaseException, store: Path | None) -> DiskFull | None:
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        named = error.filename or _H5_FILENAME.search(str(error))
        path = named if isinstance(named, str) else (named.group(1) if named else "-")
        return DiskFull(os.fsdecode(path), error.errno)
    text = str(error)
    h5_errno = _H5_ERRNO.search(text)
    if h5_errno and int(h5_errno.group(1)) in DISK_FULL_ERRNOS:  # h5py: a RuntimeError or OSError of HDF5
        named = _H5_FILENAME.search(text)
        return DiskFull(named.group(1) if named else "-", int(h5_errno.group(1)))
    if _SQLITE_FULL in text:
        return DiskFull(str(store) if store else "the SQLite store", errno.ENOSPC)
    return None


def full_folder(candidates: list[Path]) -> Path | None:
    """The first of ``candidates`` (folders a job writes into) whose file system has no room left
    (under FULL_BELOW_BYTES free): where a write that named no file failed."""
    for folder in candidates:
        existing = next((path for path in (Path(folder), *Path(folder).parents) if path.exists()), None)
        try:
            stats = os.statvfs(existing)
        except (OSError, TypeError):
            continue
        if stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES:
            return Path(folder)
    return None


def settle(error: BaseException, partials: "Partials", store: Path | None = None) -> DiskFull | None:
    """When ``error`` is a full disk: ``partials`` removed; the DiskFull (else None, nothing done)."""
    full = find(error, store)
    if full is not None:
        partials.remove(full.path)
    return full


def release(error: BaseException) -> None:
    """Clear the frames of ``error``'s traceback (and its causes'), then collect: what they held (an
    open HDF5 file) is closed now. Call once the blocker's stack trace is written."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if error.__traceback__ is not None:
            traceback.clear_frames(error.__traceback__)
        error = error.__cause__ or error.__context__
    gc.collect()


class Partials:
    """The partial files of a job that ran out of space in its folders: the file whose write failed,
    when this run wrote it (new or changed since :meth:`__init__`), and the temporary files this run
    left (``.<name>...tmp...``). Complete files of earlier steps stay: they agree with each other.
    Each is truncated before it is removed, which frees its space even while a library holds it open."""

    def __init__(self, *folders: Path):
        self.folders = folders
        self.before = self._files()

    def _files(self) -> dict[Path, tuple[int, int]]:
        found = {}
        for folder in self.folders:
            for path in Path(folder).rglob("*") if Path(folder).is_dir() else ():
                try:
                    if path.is_file():
                        stat = path.stat()
                        found[path] = (stat.st_size, stat.st_mtime_ns)
                except OSError:
                    continue
        return found

    def remove(self, failed: str) -> list[Path]:
        """Truncate and remove this run's partial files (class docstring); the paths removed."""
        removed = []
        for path, state in self._files().items():
            temporary = any(part.startswith(".") and ".tmp" in part for part in path.parts[-2:])
            partial = temporary or str(path) == failed
            if not partial or self.before.get(path) == state:
                continue
            try:
                os.truncate(path, 0)
                path.unlink()
            except OSError:
                continue
            removed.append(path)
        return removed


def remove_stale_reserves(folder: Path) -> None:
    """Remove the reserves in ``folder`` of processes that are gone (a job killed by SIGKILL keeps its own).
    Hubs shared between hosts: a reserve of another host's pid that happens to be alive here stays (1 MB)."""
    for path in folder.glob(f"{RESERVE_PREFIX}*"):
        try:
            os.kill(int(path.name[len(RESERVE_PREFIX):]), 0)
        except ProcessLookupError:
            path.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            continue


class Reserve:
    """RESERVE_BYTES set aside in ``folder`` (a hidden file of real blocks) while the job runs, given back
    when it runs out of space, so that its evidence still fits; none when there is no room for it."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / f"{RESERVE_PREFIX}{os.getpid()}"
        remove_stale_reserves(Path(folder))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "wb") as handle:
                handle.write(b"\0" * RESERVE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            self.release()

    def release(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


class JobSpace:
    """The disk space of one job (module docstring): :meth:`claim` at its first step, :meth:`settle`
    when it fails, :meth:`release` when it ends (also on an interrupt), :meth:`end_run` for its MLflow run."""

    def __init__(self):
        self.reserves: list[Reserve] = []
        self.partials = Partials()  # this run's folders, once the pre-flight passed

    def claim(self, needs: list[disk_preflight.DiskNeed], evidence: list[Path], outputs: list[Path]) -> None:
        """The pre-flight of ``needs`` (DiskSpaceError when they do not fit; nothing written), then a
        Reserve on the file system of each folder in ``evidence`` (the slot, the SQLite store's folder;
        in the last of them on a file system), and ``outputs`` watched for this run's partial files."""
        if needs:
            disk_preflight.check_disk(needs)
        folders = {os.stat(disk_preflight.nearest_existing(folder)).st_dev: folder for folder in evidence}
        self.reserves = [Reserve(folder) for folder in folders.values()]
        self.partials = Partials(*outputs)

    def release(self) -> None:
        """Give the reserved space back (idempotent)."""
        for reserve in self.reserves:
            reserve.release()

    def settle(self, error: BaseException, store: Path | None,
               written: list[Path]) -> tuple[DiskFull | None, list[Path]]:
        """When ``error`` is a full disk: (its DiskFull, the partial files removed), the reserves given
        back for the evidence; else (None, []), nothing done. A write that named no file is put in the
        first of the folders ``written`` whose disk is full; an SQLite store that is full is ``store``."""
        full = find(error, store)
        if full is None:
            return None, []
        if full.path == "-":
            full = replace(full, path=str(full_folder(written) or "-"))
        removed = self.partials.remove(full.path)
        self.release()
        return full, removed

    def end_run(self, tracker, green: bool, tags: dict[str, str]) -> None:
        """End ``tracker``'s run; where its store's disk was full, once more with the reserved space
        given back (``tags``: the final status, blocker and error), so that the run is not left RUNNING."""
        tracker.end(green)
        if tracker.failure is not None and tracker.failure.disk_full:
            self.release()
            tracker.end_despite_failure(green, tags)

"""A job that runs out of disk space anyway (another process filled it after the pre-flight).

What the job does then (``runners.c1``): one line that names the path and the errno
(:func:`find`), the partial files of this run truncated and removed (:class:`Partials`), the
space the job set aside at its start given back (:class:`Reserve`) so that its blocker, section
and MLflow end fit, and the exception's frames cleared (:func:`release`), so that a file library
holding a half-written file (h5py) closes it now, on a disk with room, not at interpreter exit,
where h5py's failed close ended the process with a segmentation fault.
"""
from __future__ import annotations

import errno
import gc
import os
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

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

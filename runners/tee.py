"""File-descriptor-level tee: everything written to fds 1 and 2 also lands in a log file.

Working on the descriptors (``os.dup2``) rather than on ``sys.stdout`` captures what native
code writes too, such as TensorFlow's C++ log lines. Each descriptor is redirected into a
pipe; a thread per pipe copies the bytes to the original descriptor and appends them to
the log. ``sys.stdout``/``sys.stderr`` are pointed at fds 1 and 2 meanwhile, for hosts
that replaced them (pytest, notebooks). Leaving the context flushes Python's buffers,
restores streams and descriptors and joins the threads, also when the body raised.
The stand-in streams are never closed (nor do they own fds 1 and 2): a logging handler
created inside the tee keeps writing to fds 1 and 2 after it.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Callable

_CHUNK = 65536
_JOIN_TIMEOUT_S = 10.0


class FdTee:
    """``with FdTee(path, banner):`` tees fds 1 and 2 into ``path`` (truncated first).

    ``banner`` is written to the log first, so the log is never empty.
    """

    def __init__(self, log_path: Path, banner: str):
        self.log_path = Path(log_path)
        self.banner = banner
        self._lock = threading.Lock()
        self._saved: dict[int, int] = {}
        self._threads: list[threading.Thread] = []
        self._log = None
        self._streams = None

    def __enter__(self) -> "FdTee":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb", buffering=0)
        self._log.write(self.banner.rstrip("\n").encode() + b"\n")
        _flush_python_streams()
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(
                target=self._drain, args=(read_end, self._saved[fd]), name=f"tee-fd{fd}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        self._streams = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = (
            open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False) for fd in (1, 2)
        )
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self, join_timeout_s: float = _JOIN_TIMEOUT_S) -> None:
        """What leaving the context does, waiting up to ``join_timeout_s`` for each drain thread
        (an interrupted run closes its tee from another thread, against a deadline); once only."""
        if self._log is None or self._log.closed:
            return
        _flush_python_streams()
        sys.stdout, sys.stderr = self._streams
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # closes the pipe's last write end: the drain thread sees EOF
        for thread in self._threads:
            thread.join(join_timeout_s)
        for saved in self._saved.values():
            os.close(saved)
        self._log.close()

    def terminal(self) -> Callable[[str], None] | None:
        """A writer to the terminal the run's stdout was attached to, bypassing the log; None
        when stdout was not a terminal (for progress bars: the log keeps plain lines)."""
        fd = self._saved.get(1)
        if fd is None or not os.isatty(fd):
            return None

        def write(text: str) -> None:
            with self._lock:
                _write_all(fd, text.encode("utf-8", "backslashreplace"))

        return write

    def _drain(self, read_end: int, original_fd: int) -> None:
        try:
            while chunk := os.read(read_end, _CHUNK):
                with self._lock:
                    self._log.write(chunk)
                _write_all(original_fd, chunk)
        finally:
            os.close(read_end)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:  # the terminal went away: keep logging to the file
            return
        view = view[written:]


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            continue

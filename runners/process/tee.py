"""File-descriptor-level tee: everything written to fds 1 and 2 also lands in a log file.

Working on the descriptors (``os.dup2``) rather than on ``sys.stdout`` captures what native
code writes too, such as TensorFlow's C++ log lines. Each descriptor is redirected into a
pipe; a thread per pipe copies the bytes to the original descriptor and appends them to
the log. ``sys.stdout``/``sys.stderr`` are pointed at fds 1 and 2 meanwhile, for hosts
that replaced them (pytest, notebooks). Leaving the context flushes Python's buffers,
restores streams and descriptors and joins the threads, also when the body raised.
The stand-in streams are never closed (nor do they own fds 1 and 2): a logging handler
created inside the tee keeps writing to fds 1 and 2 after it.

``drop`` (e.g. :func:`framework_chatter`) leaves whole lines out of both the console and the
log: TensorFlow's native start-up notes, which its ``TF_CPP_MIN_LOG_LEVEL`` does not silence.
A log that cannot be written (the disk is full) stops logging, never the run: the console goes
on, and ``log_error`` says why the log stopped.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from pathlib import Path
from typing import Callable

_CHUNK = 65536
_JOIN_TIMEOUT_S = 10.0
# TensorFlow's native log lines (absl format: I/W + MMDD time thread file:line]) and their companions;
# of its ERROR lines only the oneDNN note that is no error. Real errors stay.
_CHATTER = re.compile(
    rb"[IW]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w./-]+:\d+\] .*"
    rb"|E\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w./-]+:\d+\] oneDNN supports DT_INT32 only on platforms with AVX-512.*"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
)
_CHATTER_STARTS = (b"I0", b"I1", b"W0", b"W1", b"E0", b"E1", b"WARNING: All log", b"To enable the following")


def framework_chatter(line: bytes) -> bool:
    """True for a line of TensorFlow's start-up chatter (``line`` without its newline)."""
    return _CHATTER.fullmatch(line.rstrip(b"\r")) is not None


def _may_be_chatter(tail: bytes) -> bool:
    """A partial line that may still become chatter (held back until its newline comes)."""
    return any(tail.startswith(start) or start.startswith(tail) for start in _CHATTER_STARTS)


class FdTee:
    """``with FdTee(path, banner):`` tees fds 1 and 2 into ``path`` (truncated first).

    ``banner`` is written to the log first, so the log is never empty.
    """

    def __init__(self, log_path: Path, banner: str, drop: Callable[[bytes], bool] | None = None):
        self.log_path = Path(log_path)
        self.banner = banner
        self.drop = drop
        self.log_error: OSError | None = None  # why the log stopped being written (disk full...)
        self._lock = threading.Lock()
        self._saved: dict[int, int] = {}
        self._threads: list[threading.Thread] = []
        self._log = None
        self._streams = None

    def __enter__(self) -> "FdTee":
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "wb", buffering=0)
        except OSError as exc:  # no log, but the run and its console go on
            self.log_error, self._log = exc, open(os.devnull, "wb", buffering=0)
        self._write_log(self.banner.rstrip("\n").encode() + b"\n")
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
        held = b""  # a partial line that may still turn out to be dropped
        try:
            while chunk := os.read(read_end, _CHUNK):
                shown, held = self._filtered(held + chunk)
                self._pass_on(shown, original_fd)
            if held and not (self.drop and self.drop(held)):
                self._pass_on(held, original_fd)
        finally:
            os.close(read_end)

    def _filtered(self, data: bytes) -> tuple[bytes, bytes]:
        """(what to pass on now, a partial last line held back) of ``data``, without ``drop``'s lines."""
        if self.drop is None:
            return data, b""
        *lines, tail = data.split(b"\n")
        shown = b"".join(line + b"\n" for line in lines if not self.drop(line))
        if _may_be_chatter(tail):
            return shown, tail
        return shown + tail, b""

    def _pass_on(self, data: bytes, original_fd: int) -> None:
        if data:
            self._write_log(data)
            _write_all(original_fd, data)

    def _write_log(self, data: bytes) -> None:
        """Append to the log; after the first failure (a full disk, a quota) the log is left as it is."""
        with self._lock:
            if self.log_error is not None and self._log.name != os.devnull:
                return
            try:
                self._log.write(data)
            except OSError as exc:
                self.log_error = exc


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

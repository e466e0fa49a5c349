"""Calls to MLflow that cannot stop a job: each runs in a worker thread, given up after a deadline.

A failed call (an error, or no answer in time) is reported, never raised; the tracker that made it
turns it into a :class:`TrackingFailure` and makes no further call (``runners.tracking.tracker``).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

PATIENCE_POLL_S = 0.1
MAX_ERROR_CHARS = 300
T = TypeVar("T")


class TrackingUnavailable(RuntimeError):
    """A step that cannot do without MLflow found its tracker failed."""


@dataclass(frozen=True)
class TrackingFailure:
    """The first MLflow operation of a tracker that failed: its name and the error, on one line."""

    operation: str
    error: str
    disk_full: bool = False  # the store's disk (or quota) was full: the job may retry once it gave room


@dataclass(frozen=True)
class Attempt(Generic[T]):
    """How a bounded call ended: its value, its error, or no answer within its deadline."""

    value: T | None
    error: Exception | None
    timed_out: bool
    seconds: float  # from its start to the end of the wait


def run_bounded(work: Callable[[], T], name: str, timeout_s: float, patience: threading.Event | None = None,
                longest_s: float = 0.0) -> Attempt[T]:
    """``work()`` in a daemon thread named ``name``, waited for ``timeout_s`` (and, while ``patience``
    is set, for up to ``longest_s`` after its start). A call that does not answer in time is left to
    finish on its own (MLflow's HTTP timeout ends it)."""
    outcome: dict[str, object] = {}

    def attempt() -> None:
        try:
            outcome["value"] = work()
        except Exception as exc:  # kept for the caller's thread, which decides what it means
            outcome["error"] = exc

    worker = threading.Thread(target=attempt, name=name, daemon=True)
    t0 = time.monotonic()
    worker.start()
    _wait(worker, t0, timeout_s, patience, longest_s)
    return Attempt(outcome.get("value"), outcome.get("error"), worker.is_alive(), time.monotonic() - t0)


def _wait(worker: threading.Thread, t0: float, timeout_s: float, patience: threading.Event | None,
          longest_s: float) -> None:
    """Join ``worker`` until ``timeout_s`` after ``t0``, or after the last moment ``patience``
    was seen set (at most ``longest_s`` after ``t0``)."""
    if patience is None:
        worker.join(timeout_s)
        return
    deadline = t0 + timeout_s
    while worker.is_alive() and time.monotonic() < deadline:
        worker.join(min(PATIENCE_POLL_S, deadline - time.monotonic()))
        if patience.is_set():
            deadline = min(t0 + longest_s, max(deadline, time.monotonic() + timeout_s))


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``, its middle cut when long (the cause is at its end)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 120] + " ... " + text[-115:]

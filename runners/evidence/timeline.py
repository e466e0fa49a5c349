"""Named time marks of one job, for the timing split (timings.json, ``timing.*`` metrics)."""
from __future__ import annotations

import time

import psutil


class Timeline:
    """``mark(name)`` records the time a step began (the first mark of a name wins)."""

    def __init__(self):
        self.start = time.perf_counter()
        self.process_age_s = time.time() - psutil.Process().create_time()
        self._marks: dict[str, float] = {}

    def mark(self, name: str) -> None:
        self._marks.setdefault(name, time.perf_counter())

    def span(self, begin: str, end: str) -> float | None:
        """Seconds from mark ``begin`` to mark ``end``; None when either is missing."""
        if begin in self._marks and end in self._marks:
            return self._marks[end] - self._marks[begin]
        return None

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

"""The guard check: a pytest selector run in a subprocess before training.

:class:`GuardRun` starts pytest at once (so it runs while the job loads its data) and
:meth:`GuardRun.finish` waits for it, writes the log with a header (UTC time, command,
working folder, XLA environment, result) and returns a :class:`GuardResult`. ``finish`` is
idempotent: the training gate and the job's cleanup may both call it. A log write that fails
(OSError: a full disk) raises, and the result waits: the next ``finish`` (or ``stop``) writes
the same log again, once the job made room, and returns it. An interrupt terminates
pytest (:mod:`runners.process.interrupt`), and :meth:`GuardRun.stop` then writes the log as INTERRUPTED.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from runners.process import interrupt
from runners.evidence.envinfo import XLA_ENV_KEYS

GREEN, RED, INTERRUPTED = "GREEN", "RED", "INTERRUPTED"
NO_AUTOLOAD = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"


class GuardFailed(RuntimeError):
    """The guard selector failed (or timed out): training must not start."""


@dataclass(frozen=True)
class GuardResult:
    status: str
    returncode: int | None
    duration_s: float
    command: str
    log_text: str

    @property
    def passed(self) -> bool:
        return self.status == GREEN


class GuardRun:
    """One run of ``python -m pytest <selector>`` in ``cwd`` with the current environment.

    ``write_log(text)`` stores the finished log (header + pytest output) wherever the
    caller keeps evidence. Unless ``autoload_plugins``, pytest loads no third-party
    plugins (``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``); a selector that needs one sets it.
    """

    def __init__(
        self, selector: str, cwd: Path, timeout_s: float, write_log: Callable[[str], None],
        autoload_plugins: bool = False,
    ):
        self.argv = [sys.executable, "-m", "pytest", *shlex.split(selector), "-p", "no:cacheprovider"]
        self.command = shlex.join(["python", *self.argv[1:]])
        self.cwd = cwd
        self.timeout_s = timeout_s
        self._write_log = write_log
        env = dict(os.environ)
        if not autoload_plugins:  # third-party pytest plugins cost ~1.4 s of start-up here
            env[NO_AUTOLOAD] = "1"
        self._env = {key: env.get(key, "<unset>") for key in (*XLA_ENV_KEYS, NO_AUTOLOAD)}
        self._output = tempfile.TemporaryFile()
        self._started_utc = datetime.now(timezone.utc)
        self._t0 = time.perf_counter()
        self._process = subprocess.Popen(
            self.argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=self._output, stderr=subprocess.STDOUT
        )
        interrupt.track(self._process)
        self._result: GuardResult | None = None
        self._pending: GuardResult | None = None  # the result whose log is not written yet

    def finish(self) -> GuardResult:
        """Wait for pytest (killing it after ``timeout_s``), write the log once, return the result."""
        if self._result is None and self._pending is None:
            try:
                returncode = self._process.wait(timeout=max(0.0, self.timeout_s - self.elapsed_s))
                status = GREEN if returncode == 0 else RED
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
                returncode, status = None, RED
            interrupt.untrack(self._process)
            self._pending = self._complete(returncode, status)
        return self._logged()

    def stop(self, timeout_s: float) -> GuardResult:
        """On an interrupt: pytest terminated (killed after ``timeout_s``) and its log written as
        INTERRUPTED; a guard that had finished keeps its result."""
        if self._result is None and self._pending is None:
            self._process.terminate()
            try:
                returncode = self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                returncode = self._process.wait()
            self._pending = self._complete(returncode, INTERRUPTED)
        return self._logged()

    def _logged(self) -> GuardResult:
        """The result, its log written first (an OSError leaves it pending for the next call)."""
        if self._result is None:
            self._write_log(self._pending.log_text)
            self._result, self._pending = self._pending, None
        return self._result

    @property
    def finished(self) -> bool:
        return self._result is not None

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self._t0

    def _complete(self, returncode: int | None, status: str) -> GuardResult:
        duration = self.elapsed_s
        self._output.seek(0)
        output = self._output.read().decode("utf-8", errors="replace")
        self._output.close()
        exit_text = "timed out after %.0f s" % self.timeout_s if returncode is None else f"exit {returncode}"
        header = "\n".join(
            [
                "# guard check (pytest in a subprocess, before training)",
                f"# UTC time: {self._started_utc.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                f"# command: {self.command}",
                f"# cwd: {self.cwd}",
                "# env: " + " ".join(f"{key}={value}" for key, value in self._env.items()),
                f"# result: {status} ({exit_text}) in {duration:.1f} s",
                "#" + "-" * 79,
            ]
        )
        return GuardResult(status, returncode, duration, self.command, f"{header}\n{output}")

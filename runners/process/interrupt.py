"""Ctrl-C, SIGTERM and SLURM preemption: the run's evidence, then exit 130 or 143, within 2 s.

A Python signal handler runs only in the main thread, between bytecodes, and a TensorFlow or
PyTorch kernel (or an MLflow call during a tracking outage) can hold the main thread for
seconds. So the work is not done there. The C-level handler writes the signal's number to a
pipe (``signal.set_wakeup_fd``) at once, whatever the main thread is doing; a watchdog thread
reading the pipe starts a writer thread, which

1. forwards the signal to the child processes that write their own evidence (an XLA-isolated job,
   :func:`tracked` with ``forward=True``) and terminates the others (the guard's pytest);
2. waits up to PARK_WAIT_S for the main thread to stop, then for the forwarded children;
3. calls the callbacks registered with :func:`at_signal`, innermost first (the job's: blocker,
   section, MLflow run KILLED; the sweep's: its journal and summary), each bounded by
   :meth:`Signal.remaining`;
4. kills the children still running and ends the process with ``os._exit(128 + signal)``: 130
   for SIGINT, 143 for SIGTERM.

The watchdog ends the process EXIT_AFTER_S after the signal whatever the writer is doing, and
at once on a second signal (a second Ctrl-C). A signal within DUPLICATE_WINDOW_S of the last
counts as the same one: SLURM signals every process of a job, and the parent forwards it too.

In the main thread the Python-level handler raises :class:`Interrupted` at the next bytecode, so
the stack unwinds up to the innermost :func:`at_signal` block (or :func:`handling`), releasing
what it holds on the way (the hub's file lock, an MLflow database session, a half bundle's
staging folder), and the thread waits there for the exit (:func:`park`). No code of the job runs
in the main thread after the signal, so the writer never races it; the writer takes no lock that
the stopped main thread could hold, and imports nothing (another thread may hold an import).
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_AFTER_S = 1.7  # the process is gone this long after the signal, finished or not
CALLBACKS_UNTIL_S = 1.45  # the callbacks' share of it (Signal.remaining)
FORWARDED_UNTIL_S = 1.1  # how long forwarded children get to write their own evidence
PARK_WAIT_S = 0.1  # how long the writer waits for the main thread to unwind (and release its locks)
CHILD_WAIT_S = 0.2  # a terminated child's time to go before it is killed
DUPLICATE_WINDOW_S = 0.2


class Interrupted(BaseException):
    """Raised in the main thread by the signal handler; a BaseException, so ``except Exception``
    lets it through and only :func:`at_signal` and :func:`handling` stop it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass(frozen=True)
class Signal:
    """The signal being handled: its number and when it came (``time.monotonic()``)."""

    number: int
    received: float

    @property
    def name(self) -> str:
        return signal.Signals(self.number).name

    @property
    def exit_code(self) -> int:
        return 128 + self.number

    def remaining(self, until_s: float = CALLBACKS_UNTIL_S) -> float:
        """Seconds left of the callbacks' share (or of ``until_s`` after the signal)."""
        return max(0.0, self.received + until_s - time.monotonic())


class _Watch:
    """The installed handlers, the watchdog thread and what an interrupt must do."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)  # set_wakeup_fd requires it
        self.old_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        self.old_handlers = {number: signal.signal(number, self._in_main_thread) for number in SIGNALS}
        self.callbacks: list[Callable[[Signal], None]] = []
        self.children: dict[subprocess.Popen, bool] = {}  # process -> forward the signal (else terminate)
        self.first: Signal | None = None
        self.last_received = 0.0
        self.byte_owed = False  # the handler started the interrupt before the pipe's byte came
        self.main_stack: str | None = None
        self.parked = threading.Event()
        self._lock = threading.RLock()  # the main thread's handler may run inside it
        self.thread = threading.Thread(target=self._watch, name="interrupt-watchdog", daemon=True)
        self.thread.start()

    def close(self) -> None:
        signal.set_wakeup_fd(self.old_wakeup)
        for number, handler in self.old_handlers.items():
            signal.signal(number, handler)
        os.close(self.write_fd)  # the watchdog reads the end of the pipe and returns
        self.thread.join(1.0)
        os.close(self.read_fd)

    def _in_main_thread(self, signum: int, frame) -> None:
        """The Python-level handler: stop the main thread's work (once); the writer does the rest."""
        self.received(signum, from_handler=True)
        if self.main_stack is None:
            self.main_stack = "".join(traceback.format_stack(frame))
            raise Interrupted(signum)

    def _watch(self) -> None:
        while True:
            first = self.first
            timeout = None if first is None else first.remaining(EXIT_AFTER_S)
            ready, _, _ = select.select([self.read_fd], [], [], timeout)
            if not ready:
                say(f"interrupt: the evidence took longer than {EXIT_AFTER_S} s; exiting without the rest")
                os._exit(first.exit_code)
            data = os.read(self.read_fd, 64)
            if not data:
                return
            for number in data:
                if number in SIGNALS:
                    self.received(number)

    def received(self, number: int, from_handler: bool = False) -> None:
        """A signal: start the interrupt, ignore a duplicate, or exit at once.

        Each signal reaches both the pipe and the main thread's handler, in either order. The
        handler only starts the interrupt when the pipe's byte is late (the watchdog waits for the
        interpreter lock, or another library took the wake-up fd); that byte is then taken as the
        same signal, so it never counts as a second one.
        """
        with self._lock:
            now = time.monotonic()
            if from_handler:
                if self.first is None:
                    self._start(number, now)
                    self.byte_owed = True
                return
            if self.byte_owed:
                self.byte_owed = False
            elif self.first is None:
                self._start(number, now)
            elif now - self.last_received > DUPLICATE_WINDOW_S:
                say(f"{signal.Signals(number).name} again: exiting at once")
                self._signal_children(number, kill=True)
                os._exit(self.first.exit_code)
            self.last_received = now

    def _start(self, number: int, now: float) -> None:
        self.first = Signal(number, now)
        threading.Thread(target=self._interrupt, name="interrupt-writer", daemon=True).start()

    def _interrupt(self) -> None:
        sig = self.first
        try:
            callbacks, children = list(self.callbacks), dict(self.children)
            say(f"\n{sig.name} received: writing the evidence, then exit {sig.exit_code} "
                "(a second Ctrl-C exits at once)")
            self._signal_children(sig.number)
            self.parked.wait(PARK_WAIT_S)
            for process in (p for p, forward in children.items() if forward):
                _wait_or_kill(process, sig.remaining(FORWARDED_UNTIL_S))
            for callback in reversed(callbacks):
                try:
                    callback(sig)
                except Exception as exc:  # the next callback's evidence still counts
                    say(f"interrupt: {getattr(callback, '__qualname__', callback)} failed: "
                        f"{type(exc).__name__}: {exc}")
            for process in children:
                _wait_or_kill(process, min(CHILD_WAIT_S, sig.remaining(EXIT_AFTER_S)))
        finally:
            os._exit(sig.exit_code)

    def _signal_children(self, number: int, kill: bool = False) -> None:
        for process, forward in list(self.children.items()):
            try:
                if forward:
                    process.send_signal(number)
                elif kill:
                    process.kill()
                else:
                    process.terminate()
            except OSError:  # gone already
                continue


_watch: _Watch | None = None


def _wait_or_kill(process: subprocess.Popen, timeout_s: float) -> None:
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        try:
            process.wait(0.1)
        except subprocess.TimeoutExpired:
            pass


@contextmanager
def handling() -> Iterator[None]:
    """Interrupts handled as the module docstring says while the block runs.

    Installs the handlers when none are (only the main thread can) and puts back what was there
    after the block; an :class:`Interrupted` reaching this block parks the main thread.
    """
    global _watch
    owner = _watch is None and threading.current_thread() is threading.main_thread()
    if owner:
        _watch = _Watch()
    try:
        yield
    except Interrupted:
        park()
    finally:
        if owner and _watch.first is None:
            _watch.close()
            _watch = None


@contextmanager
def at_signal(callback: Callable[[Signal], None]) -> Iterator[None]:
    """While the block runs, an interrupt calls ``callback(signal)`` in the writer thread (the
    innermost block's first); an :class:`Interrupted` raised in the block parks the main thread
    here, so what encloses the block (an open log, a lock) stays as it is for the callback."""
    watch = _watch
    if watch is None:
        yield
        return
    watch.callbacks.append(callback)
    try:
        yield
    except Interrupted:
        park()
    finally:
        if watch.first is None:
            watch.callbacks.remove(callback)


@contextmanager
def tracked(process: subprocess.Popen, forward: bool = False) -> Iterator[subprocess.Popen]:
    """``process`` stopped by an interrupt: terminated, or with ``forward`` sent the same signal
    and given until FORWARDED_UNTIL_S to write its own evidence; killed when still running."""
    track(process, forward)
    try:
        yield process
    finally:
        untrack(process)


def track(process: subprocess.Popen, forward: bool = False) -> None:
    """:func:`tracked` for a process whose end is not a block of code (call :func:`untrack`)."""
    if _watch is not None:
        _watch.children[process] = forward


def untrack(process: subprocess.Popen) -> None:
    if _watch is not None and _watch.first is None:
        _watch.children.pop(process, None)


def stopping() -> bool:
    """True once an interrupt is being handled."""
    return _watch is not None and _watch.first is not None


def park() -> NoReturn:
    """Hold the main thread until the writer ends the process."""
    _watch.parked.set()
    while True:
        try:
            time.sleep(3600)
        except Interrupted:
            continue


def main_stack() -> str:
    """Where the main thread was when the signal came; if it has not stopped yet (a long kernel),
    where it is now."""
    if _watch is not None and _watch.main_stack is not None:
        return _watch.main_stack
    frame = sys._current_frames().get(threading.main_thread().ident)
    where = "".join(traceback.format_stack(frame)) if frame is not None else "(no main thread)\n"
    return "The main thread had not stopped yet; it was at:\n" + where


def call_bounded(function: Callable[[], None], timeout_s: float, name: str) -> tuple[bool, Exception | None]:
    """Run ``function`` in a daemon thread for at most ``timeout_s``: (finished, its error)."""
    errors: list[Exception] = []

    def run() -> None:
        try:
            function()
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive(), (errors[0] if errors else None)


def say(text: str) -> None:
    """A line on fd 2 (the job's log while it is teed), past Python's stream buffers and locks."""
    data = (text.rstrip("\n") + "\n").encode("utf-8", "backslashreplace")
    while data:
        try:
            data = data[os.write(2, data):]
        except OSError:
            return

"""``python -m runners.phase``: the Hydra entry point of the phase runner.

Thin on purpose: compose (Hydra) -> validate into a typed PhaseConfig -> run the phase.
TensorFlow, MLflow and the science core are imported inside the job only, so ``--help``
is quick and the job's XLA environment (``hydra.job.env_set``) is in place before
TensorFlow reads it. Exit status: 0 green; 1 blocked (last line: the blocker path; a
sweep ends with its summary block instead) or a config error (the message names the key);
130 after SIGINT (Ctrl-C), 143 after SIGTERM (SLURM preemption), within 2 s at any step, with
an INTERRUPTED record in the hub (:mod:`runners.process.interrupt`).

Run in another process (pytest, a notebook, ``runpy``), ``cli`` leaves that process's
logging as it found it and closes none of its streams.
"""
from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import hydra
from omegaconf import DictConfig

from runners.evidence import PhaseRecord
from runners.job import JobContext
from runners.process import interrupt, xla
from runners import sweep
from runners.evidence.outcome import BlockerLog, PhaseBlocked, PhaseConfigError, blocker_log, note_blocker
from runners.schema import register_configs, to_spec

register_configs()
# Here, not in cli(): a launcher's worker imports this module to run its jobs and never calls cli()
xla.remember_process_env()


@hydra.main(version_base="1.3", config_path="conf", config_name="phase")
def main(cfg: DictConfig) -> PhaseRecord | PhaseBlocked:
    """The job. A blocked job returns its PhaseBlocked rather than raising it: it has written
    its evidence and printed its closing block, which Hydra's error report would repeat."""
    from runners.phases.registry import run_phase

    job = JobContext.from_hydra()
    try:
        spec = to_spec(cfg)
    except ValueError as exc:
        raise PhaseConfigError(str(exc)) from exc
    try:
        with interrupt.handling():  # a launcher's worker process runs the job without cli()
            return run_phase(spec, job)
    except PhaseBlocked as blocked:
        note_blocker(blocked.blocker, announced=blocked.announced)
        return blocked


@contextmanager
def _root_logger_restored() -> Iterator[None]:
    """The root logger's handlers and level as they were; the run's handlers (Hydra's) closed.

    Hydra replaces the root logger's handlers with its own (console, the job's log file) and
    leaves them there; in a host process (pytest, a notebook) they would outlive the run.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


@contextmanager
def _absl_stream_parked() -> Iterator[None]:
    """absl's handler writes to the process's own stderr meanwhile, so Hydra cannot close the host's.

    Hydra's logging set-up (``logging.config.DictConfigurator``) calls ``close()`` on every
    handler alive in the process, attached or not. absl's handler (absl comes with
    TensorFlow) then closes its stream unless that is the current ``sys.stdout``/``sys.stderr``
    or ``sys.__stderr__``; it holds the ``sys.stderr`` of the moment absl was imported, so a
    TensorFlow import under another one (pytest's capture file, a notebook cell's stream)
    had that host stream closed. absl is not imported here: a later import needs no parking.
    """
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is None or sys.__stderr__ is None:
        yield
        return
    handler = absl_logging.get_absl_handler().python_handler
    host_stream, handler.stream = handler.stream, sys.__stderr__
    try:
        yield
    finally:
        handler.stream = host_stream


HYDRA_HINT = "\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"


class _HintDropped:
    """``stream`` without Hydra's HYDRA_FULL_ERROR hint: our errors name the key or the blocker, and a
    config error has no stack worth reading (Hydra writes the hint in one ``write``)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(text.replace(HYDRA_HINT, ""))

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextmanager
def _hydra_hint_dropped() -> Iterator[None]:
    stream = sys.stderr
    sys.stderr = _HintDropped(stream)
    try:
        yield
    finally:
        sys.stderr = stream


def cli() -> None:
    """Hydra's main; then a sweep's summary block, and a ``blocker: <path>`` line for each blocker
    that no job printed. Exit status 1 when any job was blocked (or a sweep's job never reported)."""
    sweep.note_launch(None)
    with blocker_log() as blockers:
        try:
            with _root_logger_restored(), _absl_stream_parked(), _hydra_hint_dropped(), interrupt.handling(), \
                    interrupt.at_signal(_sweep_interrupted):
                main()
        except SystemExit as exit_:
            if exit_.code:
                _report_end(blockers)
            raise
        if not _report_end(blockers):
            sys.exit(1)


def _sweep_interrupted(sig: interrupt.Signal) -> None:
    """A sweep launched here, interrupted: its summary block, and its parent run ended as KILLED."""
    launched = sweep.launched()
    if launched is None:
        return
    interrupt.say(sweep.summary(launched, lock_timeout_s=sig.remaining())[0])
    interrupt.call_bounded(lambda: sweep.kill_parent(launched), sig.remaining(), "mlflow-kill-parent")


def _report_end(blockers: BlockerLog) -> bool:
    """Print what the jobs did not; True when every job was GREEN."""
    green = not blockers.paths()
    launched = sweep.launched()
    if launched is not None:
        sweep.wait_for_slurm_members(launched, lambda text: print(text, flush=True))
        text, all_green = sweep.summary(launched)
        print(text, flush=True)
        green = green and all_green
    else:
        for path in blockers.paths(unannounced=True):
            sys.stderr.write(f"blocker: {path}\n")
    sys.stderr.flush()
    return green


if __name__ == "__main__":
    cli()

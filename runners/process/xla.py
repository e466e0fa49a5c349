"""XLA modes per job: lazy TensorFlow import, what TF saw at import, and job isolation.

TensorFlow reads ``TF_XLA_FLAGS`` once per process, and Hydra applies a job's
``hydra.job.env_set`` only when the job starts. So the runner imports TensorFlow inside the
job and remembers the XLA environment at that moment. When a later job of the same
process (the basic launcher runs a sweep in one process; joblib reuses its workers) wants a
different XLA environment, that job is re-run in a fresh ``python -m runners.phase``
subprocess of its own mode (:func:`run_isolated`); the subprocess learns its place in
the sweep from the ``RUNNERS_PHASE_PARENT_JOB`` environment variable (JSON).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from runners.process import interrupt
from runners.evidence.envinfo import XLA_ENV_KEYS

PARENT_JOB_ENV = "RUNNERS_PHASE_PARENT_JOB"
log = logging.getLogger(__name__)

UNKNOWN = "<unknown>"  # a variable's value when TensorFlow was imported outside a job, unrecorded
_process_xla_env: dict[str, str] | None = None  # remember_process_env()
_tf_import_env: dict[str, str] | None = None  # import_tensorflow()


def current_xla_env() -> dict[str, str]:
    """The XLA variables now (unset reads as the empty string, which TF treats alike)."""
    return {key: os.environ.get(key, "") for key in XLA_ENV_KEYS}


def remember_process_env() -> None:
    """Record the XLA variables of this process outside any job: what TensorFlow saw if something
    imported it outside a job. The entry point (``runners.phase``) calls it before any job runs
    (Hydra sets a job's ``env_set`` for the job only and puts the variables back after it)."""
    global _process_xla_env
    _process_xla_env = current_xla_env()


def tf_import_env() -> dict[str, str] | None:
    """The XLA environment TensorFlow was imported under in this process (None: not imported).

    TensorFlow imported outside a job: the process's environment (:func:`remember_process_env`),
    or, where that was not recorded, UNKNOWN for each variable, which matches no job's
    environment: the job then runs in a fresh process, where the environment is known."""
    if "tensorflow" not in sys.modules:
        return None
    if _tf_import_env is not None:
        return _tf_import_env
    if _process_xla_env is not None:
        return dict(_process_xla_env)
    return dict.fromkeys(XLA_ENV_KEYS, UNKNOWN)


def needs_isolation() -> bool:
    """True when TensorFlow is already loaded here under another XLA environment than the job's."""
    seen = tf_import_env()
    return seen is not None and seen != current_xla_env()


def framework_log_shown(verbose: bool) -> bool:
    """Whether a job shows TensorFlow's native log lines (its start-up notes, an ``E0000 ... oneDNN
    supports DT_INT32 only on platforms with AVX-512`` line that is no error): with ``verbose=true``,
    or when the environment asks for every line (``TF_CPP_MIN_LOG_LEVEL=0``). Otherwise the job's
    tee leaves them out (``runners.process.tee.framework_chatter``): TensorFlow prints its start-up notes
    whatever ``TF_CPP_MIN_LOG_LEVEL`` says, before its logging reads the variable."""
    return verbose or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0"


def import_tensorflow() -> dict[str, str]:
    """Import TensorFlow (once) and return a description of the process's XLA state.

    Keys: ``tf_import.<VAR>`` (the variables when TF was imported), ``jit`` (the value of
    ``tf.config.optimizer.get_jit()``, empty when global auto-jit is off) and ``pid``.
    """
    global _tf_import_env
    if "tensorflow" not in sys.modules:
        _tf_import_env = current_xla_env()
    import tensorflow as tf

    seen = tf_import_env() or {}
    state = {f"tf_import.{key}": value or "<empty>" for key, value in seen.items()}
    state["jit"] = str(tf.config.optimizer.get_jit()) or "<off>"
    state["pid"] = str(os.getpid())
    return state


@dataclass(frozen=True)
class ParentJob:
    """What an isolated subprocess inherits from the Hydra job that started it."""

    command: str
    slot: str
    parent_run_id: str | None


@functools.lru_cache(maxsize=1)
def parent_job_from_env() -> ParentJob | None:
    """The ParentJob passed to this process, removed from the environment (not inherited further).

    Read once and kept: the job and, after it, Hydra's post-hook both ask, and the post-hook
    must see the same parent (else it files the job under the plain slot's name).
    """
    raw = os.environ.pop(PARENT_JOB_ENV, None)
    return ParentJob(**json.loads(raw)) if raw else None


def hydra_quote(value: str) -> str:
    """``value`` as a single-quoted Hydra override value.

    Hydra unescapes backslashes only in front of a quote (or the closing quote), so only
    those runs are doubled.
    """
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"'{escaped}'"


def run_isolated(overrides: list[str], output_dir: Path, parent: ParentJob, cwd: Path) -> int:
    """Re-run this job's overrides in a fresh process writing into ``output_dir``; its exit code.

    The process leads a session of its own, so a terminal's Ctrl-C reaches it once: this process
    forwards SIGINT and SIGTERM to it (:mod:`runners.process.interrupt`), and it writes its own record.
    """
    argv = [
        sys.executable, "-m", "runners.phase", *overrides,
        f"hydra.run.dir={hydra_quote(str(output_dir))}",
    ]
    env = {**os.environ, PARENT_JOB_ENV: json.dumps(asdict(parent))}
    log.info("TensorFlow is loaded in this process under another XLA mode: running the job in a fresh process")
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    with interrupt.tracked(process, forward=True):
        return process.wait()

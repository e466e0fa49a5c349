"""The lifecycle every phase job shares: :class:`PhaseRun`.

A phase (C1, C2, C3, and any later one) is a PhaseRun that gives its own steps (``_run``) and
the MLflow run's end (``_end_tracking``); the lifecycle around them is written once here
(:meth:`PhaseRun.execute`): the slot's folders and the RUNNING record; everything the job prints
teed into the slot's CLI log under a banner (``runners.process.tee.FdTee``); an interrupt's
evidence written from the interrupt's writer thread (:mod:`runners.process.interrupt`); a
failure's evidence (blocker, section, summary entry, the MLflow run FAILED) and the
PhaseBlocked raised once the log is closed; the space set aside for the evidence given back;
the complete CLI log copied to the MLflow run.
"""
from __future__ import annotations

import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from runners import tracking
from runners.evidence import GREEN, OUTCOME_FILE, PhaseRecord, failed_tracking, run_description
from runners.evidence import hub, outcome
from runners.evidence.outcome import PhaseBlocked, display_path
from runners.evidence.envinfo import git_commit, library_versions, project_root
from runners.evidence.timeline import Timeline
from runners.job import JobContext
from runners.inputs.datasets import reference_data
from runners.phases.disk import written_folders
from runners.process import diskfull, interrupt
from runners.process.tee import FdTee
from runners.schema import PhaseConfig, PositionSet


def slot_name(spec: PhaseConfig, job: JobContext, derived: str) -> str:
    """A job's slot name: ``hub.slot``, the isolating parent's slot, or ``derived`` plus the job's
    sweep suffix (``__gridsize=1``; ``__job<n>`` in a multirun without a sweep context)."""
    if spec.hub.slot:
        return spec.hub.slot
    if job.parent is not None:
        return job.parent.slot
    keys = job.slot_suffix_keys()
    suffix = f"job{job.job_num}" if keys is None else hub.slot_suffix(list(job.overrides), keys)
    return derived + (f"__{suffix}" if suffix else "")


def running_record(job: JobContext, slot: hub.HubSlot, title: str, env: dict[str, str], parameters: dict,
                   shown: dict[str, Path], **fields) -> PhaseRecord:
    """A phase's RUNNING record: ``title`` with the slot's sweep suffix, the time, command, versions and
    commit, ``shown`` paths relative to the launch folder; ``fields``: the phase's other record fields."""
    suffix = slot.name.rsplit("/", 1)[-1].partition("__")[2]
    return PhaseRecord(
        slot=slot.name, title=title + (f" [{suffix}]" if suffix else ""),
        utc_time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=job.command, env=env, versions=library_versions(), git_commit=git_commit(project_root(), slot.root),
        parameters=parameters, paths={key: display_path(path, job.launch_dir) for key, path in shown.items()},
        **fields,
    )


class PhaseRun:
    """One phase job in this process, from its RUNNING record to GREEN, BLOCKED or INTERRUPTED.

    A phase fills in ``_run`` (its steps; an exception blocks the job) and ``_end_tracking(green)``
    (the MLflow run's last tags and its end), and may override the hooks: ``_make_dirs``,
    ``_dropped_lines``, ``_green_text``, ``_blocked_text``, ``_interrupted_text``, ``_finished``,
    ``_complete_failed_record``, ``_complete_interrupted_record``, ``_kill_run`` and
    ``_written_folders``. ``failure_stack``: a failure's stack on the console (else its first
    line; the blocker keeps the stack either way).
    """

    failure_stack = False

    def __init__(self, spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, record: PhaseRecord):
        self.spec, self.job, self.slot, self.record = spec, job, slot, record
        self.lock_timeout_s = spec.hub.lock_timeout_s
        self.outcome_path: Path = job.output_dir / OUTCOME_FILE
        self.timeline = Timeline()
        self.tracker: tracking.Tracker | None = None
        self.space = diskfull.JobSpace()  # pre-flight, space set aside for the evidence, partial files
        self.tee: FdTee | None = None  # the CLI log while the job runs
        self.blocker_text: str | None = None  # the blocker, when only the MLflow run could take it
        self.data_files: list[Path] = []  # the files a reconstructing phase read (_load_positions)
        self.bundle_written = False  # this run's bundle is in the slot: an interrupt does not call it stale
        self.log = logging.getLogger(type(self).__module__)

    def execute(self) -> PhaseRecord:
        """Run the job: the GREEN record, or the PhaseBlocked raised once the CLI log is closed. An
        interrupt ends the process from its writer thread instead (:meth:`_interrupted`)."""
        self._make_dirs()
        self.record.save(self.outcome_path)
        banner = f"# {self.record.title}\n# {self.record.utc_time} pid {os.getpid()}\n# {self.record.command}"
        failure = blocked = None
        with FdTee(self.slot.cli_log, banner, self._dropped_lines()) as tee, \
                interrupt.at_signal(lambda sig: self._interrupted(sig, tee)):
            self.tee = tee
            try:
                self._run()
            except Exception as exc:
                failure, blocked = exc, self._fail(exc)
            else:
                print(self._green_text(), flush=True)
            finally:
                self.space.release()
        tracking.copy_log(self.tracker, self.slot.cli_log, self.spec.tracking.log_artifacts)  # complete now
        if blocked is not None:
            raise blocked from failure
        return self.record

    def _run(self) -> None:
        """The phase's steps, ending with the record GREEN in the hub and the MLflow run ended."""
        raise NotImplementedError

    def _end_tracking(self, green: bool) -> None:
        """The MLflow run's final tags and description; end it (FINISHED when ``green``, else FAILED)."""
        raise NotImplementedError

    def _step(self, name: str) -> None:
        self.record.step = name
        self.timeline.mark(name)
        self.log.info("step: %s", name)

    def _load_positions(self, paths: dict[str, Path], positions: PositionSet, key: str):
        """The files ``positions`` needs (``paths``: train and test), loaded, validated, logged to MLflow
        and named in the record; the data to reconstruct (``key``: the setting, for errors)."""
        from ptycho.data.npz import file_sha1, load_npz

        wanted = ("train", "test") if positions is PositionSet.all else (positions.value,)
        loaded = {}
        self.record.dataset = {"name": self.spec.dataset.name}
        for context in wanted:
            loaded[context] = load_npz(paths[context])
            sha1 = file_sha1(paths[context])
            self.tracker.log_dataset(self.spec.dataset.name, paths[context], sha1, context, loaded[context].n_images)
            self.record.dataset.update({context: display_path(paths[context], self.job.launch_dir),
                                        f"{context}_sha1": sha1})
        self.data_files = [paths[context] for context in wanted]
        data = reference_data(loaded, positions, key)
        self.record.parameters["n_positions"] = data.n_images
        if data.has_ground_truth:  # before the loss per epoch: the compare view plots the first metric
            self.tracker.reserve_metrics(tracking.QUALITY_FIRST)
        return data

    def _make_dirs(self) -> None:
        self.slot.make_dirs()

    def _dropped_lines(self):
        """Which lines the CLI log leaves out (``FdTee``'s ``drop``); None keeps every line."""
        return None

    def _green_text(self) -> str:
        inventory = display_path(self.slot.inventory, self.job.launch_dir)
        return f"GREEN: {self.record.title}; stats.json sha1 {self.record.stats_sha1}; inventory {inventory}"

    def _blocked_text(self) -> str:
        return f"BLOCKED: {self.record.title}; {self.record.error}\nblocker: {self.record.blocker}"

    def _interrupted_text(self) -> str:
        return f"INTERRUPTED: {self.record.title} at step {self.record.step!r}\nblocker: {self.record.blocker}"

    def _finished(self) -> bool:
        """True once the job has its outcome (blocked, or GREEN): an interrupt then keeps its record."""
        return self.record.blocker is not None or self.record.status == GREEN

    def _complete_failed_record(self) -> None:
        """What the record of a failed job still lacks before its blocker is written."""

    def _complete_interrupted_record(self) -> None:
        """What the record of an interrupted job still lacks before its blocker is written (bounded:
        the writer thread has CALLBACKS_UNTIL_S in all)."""

    def _written_folders(self) -> list[Path]:
        return written_folders(self.spec, self.job.launch_dir, self.slot)

    def _describe_run(self) -> None:
        """The MLflow run's description (its note): title, status, and where the hub keeps the evidence
        (and the blocker itself, when no file could take it)."""
        text = run_description(self.record, display_path(self.slot.inventory, self.job.launch_dir))
        self.tracker.describe(outcome.described(text, self.blocker_text))

    def _tracking_failed(self, failure: tracking.TrackingFailure) -> None:
        """The tracker gave up (it logs why): the hub's section and summary entry will say so."""
        self.record.tracking = failed_tracking(failure.operation, failure.error, self.record.step)

    def _keep_blocker_in_run(self, markdown: str) -> str | None:
        """Where neither the hub nor the launch folder could take the blocker: kept for the MLflow
        run's description (:meth:`_describe_run`); where it went, or None without a run."""
        if self.tracker is None or self.tracker.run_id is None:
            return None
        self.blocker_text = markdown
        return f"the description of MLflow run {self.tracker.run_id}"

    def _fail(self, error: Exception) -> PhaseBlocked:
        """Complete the evidence of a failed job; the PhaseBlocked to raise once the CLI log is closed.

        Out of disk space (:mod:`runners.process.diskfull`): one line instead of the stack (the blocker
        keeps it), the run's partial files removed and its reserved space given back first, the
        blocker wherever it fits (hub, launch folder, MLflow run), the error's frames released."""
        store = tracking.sqlite_file(self.tracker.uri) if self.tracker is not None else None
        full = outcome.report_failure(self.record, error, self.space, store=store, written=self._written_folders(),
                                      logger=self.log, stack=self.failure_stack)
        self._complete_failed_record()
        outcome.block(self.record, self.slot, error, self.job.launch_dir, self.lock_timeout_s,
                      reason=full.line() if full else None, elsewhere=self._keep_blocker_in_run)
        if full is not None:
            diskfull.release(error)
        outcome.save_record(self.record, self.outcome_path)
        if self.tracker is not None:  # a degraded tracker (no run) still keeps its journal
            try:
                self._end_tracking(green=False)
            except Exception:  # the blocker is written; MLflow trouble must not hide the first error
                self.log.exception("could not close the MLflow run %s as FAILED", self.tracker.run_id)
        print(self._blocked_text(), file=sys.stderr, flush=True)
        outcome.note_blocker(self.record.blocker, announced=True)
        return PhaseBlocked(self.record.error, self.record.blocker, announced=True)

    def _interrupted(self, sig: interrupt.Signal, tee: FdTee) -> None:
        """The evidence of a job ended by ``sig`` (in the interrupt's writer thread, the main thread
        stopped or still in a kernel): blocker, section and summary entry, the MLflow run KILLED
        (bounded), the closing text; then the CLI log is closed. A job that had its outcome
        (:meth:`_finished`) keeps its record."""
        self.space.release()  # the process ends with os._exit: nothing after this gives it back
        if not self._finished():
            self.lock_timeout_s = min(self.lock_timeout_s, outcome.INTERRUPT_LOCK_TIMEOUT_S)
            self._complete_interrupted_record()
            outcome.interrupted(self.record, self.slot, sig.name, interrupt.main_stack(), self.job.launch_dir,
                                self.lock_timeout_s, bundle_is_this_runs=self.bundle_written)
            self.record.save(self.outcome_path)
            if self.tracker is not None and self.tracker.run_id is not None:
                self._kill_run(min(outcome.MLFLOW_KILL_TIMEOUT_S, sig.remaining()))
                outcome.publish(self.record, self.slot, self.lock_timeout_s)
                self.record.save(self.outcome_path)
            interrupt.say(self._interrupted_text())
        tee.close(join_timeout_s=min(outcome.TEE_CLOSE_TIMEOUT_S, sig.remaining()))

    def _kill_run(self, timeout_s: float) -> None:
        """End the MLflow run as KILLED, giving up after ``timeout_s``; ``record.mlflow['end']`` says how it went."""
        self.record.mlflow["end"] = outcome.kill_run(self.tracker.client, self.tracker.run_id, self.record, timeout_s)

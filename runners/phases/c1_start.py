"""How a Phase C1 job starts (docs/design.md §6): :func:`run_c1` checks the config, skips work
the slot holds already (``runners.evidence.resume``), re-runs the job in a fresh process where
this one cannot take it (TensorFlow loaded under another XLA environment:
``runners.phases.backends``), and otherwise runs it here (``runners.phases.c1.C1Run``).
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from runners import tracking
from runners.evidence import GREEN, OUTCOME_FILE, RUNNING, PhaseRecord
from runners.evidence import hub, resume
from runners.evidence.envinfo import code_state, project_root
from runners.evidence.outcome import PhaseBlocked, PhaseConfigError
from runners.job import JobContext
from runners.phases.backends import runner_backend
from runners.phases.c1 import C1Run, c1_slot, new_record
from runners.inputs.datasets import check_dataset_size
from runners.process import xla
from runners.schema import PhaseConfig


def run_c1(spec: PhaseConfig, job: JobContext) -> PhaseRecord:
    """Run phase C1 for ``spec``; returns the GREEN record or raises PhaseBlocked/PhaseConfigError."""
    try:
        slot = c1_slot(spec, job)
        backend = runner_backend(spec.backend)
        backend.check_installed()
        check_dataset_size(spec, job.launch_dir)
    except ValueError as exc:
        raise PhaseConfigError(str(exc)) from exc
    key = c1_work_key(spec, job.launch_dir, slot)
    done = None if spec.force else resume.finished_work(slot, key)
    if done is not None:
        return skip_finished(spec, job, slot, done)
    if job.parent is None and backend.needs_fresh_process():
        return run_in_fresh_process(job, slot)
    run = C1Run(spec, job, slot)
    run.record.work_key = key
    return run.execute()


def c1_work_key(spec: PhaseConfig, launch_dir: Path, slot: hub.HubSlot) -> str | None:
    """The job's ``runners.evidence.resume`` work key; None when a data file cannot be read (the data
    step reports it) or the code's state is unknown."""
    config = OmegaConf.to_container(OmegaConf.structured(spec), enum_to_str=True)
    files = [launch_dir / spec.dataset.train_data_file, launch_dir / spec.dataset.test_data_file] \
        if spec.dataset.uses_files else []
    try:
        return resume.work_key(config, files, code_state(project_root(), slot.root))
    except OSError:
        return None


def skip_finished(spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, done: resume.FinishedWork) -> PhaseRecord:
    """The GREEN record of work already done: nothing runs; in a sweep, a child run of the new
    parent links the run that did the work (tag ``original_run_id``)."""
    record = new_record(spec, job, slot, {})
    record.status, record.step, record.utc_time = GREEN, resume.SKIPPED_STEP, done.utc_time
    record.stats_sha1, record.mlflow = done.stats_sha1, {"run_id": done.run_id}
    if job.parent_run_id:
        tracker = tracking.Tracker(tracking.absolute_uri(spec.tracking.uri, job.launch_dir), spec.tracking.experiment,
                                   spec.tracking.timeout_s)
        tracker.start(f"{slot.name} [skipped]", {
            "slot": slot.name, "phase": spec.phase.value, "backend": spec.backend.name.value, "status": GREEN,
            "skipped": "true", "original_run_id": done.run_id, "stats_sha1": done.stats_sha1,
        }, job.parent_run_id)
        tracker.end(True)
    print(f"skipped: GREEN at {done.utc_time}, run {done.run_id}: {slot.name} holds this work already "
          "(force=true reruns it)", flush=True)
    return record


def run_in_fresh_process(job: JobContext, slot: hub.HubSlot) -> PhaseRecord:
    """Re-run the job in a subprocess of its own XLA mode; its record, or PhaseBlocked."""
    parent = xla.ParentJob(command=job.command, slot=slot.name, parent_run_id=job.parent_run_id)
    code = xla.run_isolated(list(job.overrides), job.output_dir, parent, job.launch_dir)
    record = PhaseRecord.load(job.output_dir / OUTCOME_FILE)
    if record is None or record.status == RUNNING:
        raise RuntimeError(f"the isolated job exited with status {code} and left no outcome in {job.output_dir}")
    if record.status != GREEN:
        raise PhaseBlocked(record.error, record.blocker, announced=True)  # the fresh process printed it
    return record

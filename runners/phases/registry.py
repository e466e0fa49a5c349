"""Phase dispatch: each phase kind's runner, slot and record builders, plus sweep bookkeeping.

A new phase (issue 4's C2) adds a PhaseKind member, a config group and an entry here.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

from runners.phases import c1, c1_start, c2, c3, reconstruct
from runners.evidence import hub
from runners.process import interrupt
from runners import sweep
from runners.evidence import INTERRUPTED, OUTCOME_FILE, PhaseRecord
from runners.job import JobContext
from runners.evidence.outcome import PhaseBlocked
from runners.evidence.resume import SKIPPED_STEP
from runners.schema import PhaseConfig, PhaseKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhaseRunner:
    """``run`` does the job; ``slot`` and ``new_record`` let the post-hook rebuild its evidence."""

    run: Callable[[PhaseConfig, JobContext], PhaseRecord]
    slot: Callable[[PhaseConfig, JobContext], hub.HubSlot]
    new_record: Callable[[PhaseConfig, JobContext, hub.HubSlot, dict], PhaseRecord]


PHASE_RUNNERS: dict[PhaseKind, PhaseRunner] = {
    PhaseKind.c1: PhaseRunner(run=c1_start.run_c1, slot=c1.c1_slot, new_record=c1.new_record),
    PhaseKind.c2: PhaseRunner(run=c2.run_c2, slot=c2.c2_slot, new_record=c2.new_record),
    PhaseKind.c3: PhaseRunner(run=c3.run_c3, slot=c3.c3_slot, new_record=c3.new_record),
    PhaseKind.reconstruct: PhaseRunner(run=reconstruct.run_reconstruct, slot=reconstruct.slot_of,
                                       new_record=reconstruct.new_record),
}


def run_phase(spec: PhaseConfig, job: JobContext) -> PhaseRecord:
    """Run the selected phase; in a sweep, report the job's end and maybe end the parent run."""
    end = {"green": False}
    try:
        with _journal_on_interrupt(job):
            record = PHASE_RUNNERS[spec.phase].run(spec, job)
        end.update(green=True, slot=record.slot, run_id=record.mlflow.get("run_id"),
                   skipped=record.step == SKIPPED_STEP)
        return record
    except PhaseBlocked as blocked:
        end["blocker"] = blocked.blocker
        raise
    finally:
        if job.sweep is not None and job.parent is None:
            _report_to_sweep(spec, job, end)


def _journal_on_interrupt(job: JobContext):
    """In a sweep, an interrupt journals the job as INTERRUPTED, with the slot and blocker of the
    record the job (or its isolated process) saved; a no-op context otherwise."""
    if job.sweep is None or job.parent is not None:
        return nullcontext()

    def report(sig: interrupt.Signal) -> None:
        record = PhaseRecord.load(job.output_dir / OUTCOME_FILE)
        found = {} if record is None else {
            "slot": record.slot, "run_id": record.mlflow.get("run_id"), "blocker": record.blocker}
        sweep.record_job_end(job.sweep_dir, job.job_num, green=False, status=INTERRUPTED,
                             lock_timeout_s=sig.remaining(), **found)

    return interrupt.at_signal(report)


def _report_to_sweep(spec: PhaseConfig, job: JobContext, end: dict) -> None:
    try:
        if "slot" not in end:
            end["slot"] = PHASE_RUNNERS[spec.phase].slot(spec, job).name
        sweep.record_job_end(job.sweep_dir, job.job_num, **end)
        sweep.finish_parent(job.sweep_dir, job.sweep)
    except Exception:  # the job's own outcome stands; the parent run is closed at multirun end
        log.exception("could not report job %d to the sweep in %s", job.job_num, job.sweep_dir)

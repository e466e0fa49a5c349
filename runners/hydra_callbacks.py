"""Hydra callbacks (conf/phase.yaml ``hydra.callbacks``).

Hydra 1.3 turns an exception raised in a callback into a warning and skips
``on_multirun_end`` when a job failed, so nothing here is the only path to the evidence:
jobs write their own outcome and end the sweep's parent run themselves; these callbacks
create the parent run and repair what a job could not write.
"""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runners.evidence import outcome
from runners import sweep, tracking
from runners.evidence import BLOCKED, GREEN, INTERRUPTED, OUTCOME_FILE, PhaseRecord
from runners.job import JobContext
from runners.evidence.outcome import PhaseBlocked, PhaseConfigError
from runners.schema import to_spec

log = logging.getLogger(__name__)


class SweepTracking(Callback):
    """Creates the MLflow parent run of a multirun and the sweep context file its jobs read."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        launch_dir = Path(config.hydra.runtime.cwd)
        sweep_dir = (launch_dir / config.hydra.sweep.dir).resolve()
        overrides = list(config.hydra.overrides.task)
        keys, n_jobs = sweep.describe(overrides)
        uri = tracking.absolute_uri(config.tracking.uri, launch_dir)
        tracker = tracking.Tracker(uri, config.tracking.experiment, config.tracking.timeout_s)
        run_id = tracker.start(
            f"sweep: {' '.join(overrides)}",
            {"sweep_dir": str(sweep_dir), "sweep_overrides": " ".join(overrides), "n_jobs": str(n_jobs),
             "phase": str(config.phase), "sweep": "parent"},
        )
        sweep.write_context(sweep_dir, sweep.SweepContext(
            keys, n_jobs, run_id, uri, config.tracking.experiment, parent_ui=tracker.run_link(),
            launcher=str(config.hydra.launcher.get("_target_", ""))))
        sweep.note_launch(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = (Path(config.hydra.runtime.cwd) / config.hydra.sweep.dir).resolve()
        context = sweep.read_context(sweep_dir)
        if context is not None:
            sweep.finish_parent(sweep_dir, context, sweep_over=True)


class HubPostHook(Callback):
    """After each job: make sure the hub shows its outcome; write the blocker the job could not."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        from runners.phases.registry import PHASE_RUNNERS

        value = job_return._return_value
        # a blocked job returns its PhaseBlocked (runners.phase.main): it printed its own end
        error = value if job_return.status == JobStatus.FAILED or isinstance(value, PhaseBlocked) else None
        if isinstance(error, PhaseConfigError):
            return
        spec = to_spec(job_return.cfg)
        job = JobContext.from_hydra()
        runner = PHASE_RUNNERS[spec.phase]
        slot = runner.slot(spec, job)
        record = PhaseRecord.load(job.output_dir / OUTCOME_FILE)
        if record is None:
            env = {key: str(value) for key, value in config.hydra.job.env_set.items()}
            record = runner.new_record(spec, job, slot, env)
        done = (GREEN,) if error is None else (BLOCKED, INTERRUPTED)  # an isolated job's process may be interrupted
        if record.status in done and (record.status == GREEN or record.blocker):
            if record.hub_error:
                return  # the job found the hub full (or read-only) and said where its evidence went
            if not outcome.is_published(record, slot):
                outcome.publish(record, slot, spec.hub.lock_timeout_s)
            return
        if error is None:
            return  # a job that returned without a GREEN record never reached the hub step
        if isinstance(error, PhaseBlocked) and error.announced:
            log.error("post-hook: %s wrote its blocker (%s) but not its record; no second blocker", record.slot,
                      error.blocker)
            return
        outcome.block(record, slot, error, job.launch_dir, spec.hub.lock_timeout_s)
        try:
            record.save(job.output_dir / OUTCOME_FILE)
        except OSError as exc:
            log.error("post-hook: %s not saved: %s", OUTCOME_FILE, outcome.os_error_line(exc))
        log.error("post-hook wrote the blocker of %s: %s", record.slot, record.blocker)

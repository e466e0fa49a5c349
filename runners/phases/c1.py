"""Phase C1: one baseline run of a backend in this process, from the guard check to the hub
(docs/design.md §6); :mod:`runners.phases.c1_start` decides whether it runs here.

Order of work in :class:`C1Run`: start the guard (pytest subprocess), import the backend
(``runners.phases.backends``), open the MLflow run, prepare the data (simulate or load and
validate), then the core's ``run_phase_job`` (grouping, model, training behind the guard gate,
inference, stitching, debug bundle), log results to MLflow, write the hub. The lifecycle
around these steps (the CLI log, a failure's blocker, an interrupt's evidence) is
``runners.phases.base.PhaseRun``'s.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf

from ptycho import determinism
from runners import tracking
from runners.evidence import RUNNING, PhaseRecord, quality_warning, warning_tags
from runners.evidence import hub, outcome
from runners.evidence.envinfo import XLA_ENV_KEYS, project_root
from runners.evidence.outcome import display_path
from runners.job import JobContext
from runners.inputs import cxi as cxi_input, networks
from runners.phases.backends import runner_backend
from runners.phases.base import PhaseRun, running_record, slot_name
from runners.phases.callbacks import make_callbacks
from runners.phases.closing import closing_block
from runners.inputs.datasets import configured_dataset, dataset_files, loss_photons
from runners.phases.disk import disk_needs, store_folder
from runners.process import interrupt, xla
from runners.process.guard import GuardFailed, GuardRun
from runners.process.tee import framework_chatter
from runners.dataset_schema import DataFormat
from runners.schema import PhaseConfig
from runners.tracking.sync import keep_journal

TIMINGS_FILE = "timings.json"
# stats.json sections already logged under their own names (quality.*, per-epoch history)
BUNDLE_DUPLICATES = ("quality", "history_final")


def core_specs(spec: PhaseConfig, N: int) -> dict:
    """{'grouping', 'model_spec', 'train_spec'} of a C1 job: the core's specs from the config
    (the same for both backends; ``use_xla_translate`` follows ``xla.mode``)."""
    from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec

    settings = spec.c1
    return {
        "grouping": GroupingSpec(
            gridsize=settings.gridsize, neighbor_count=settings.neighbor_count, n_groups=settings.n_groups,
            n_images=settings.n_images, seed=settings.seed,
        ),
        "model_spec": ModelSpec(
            N=N, gridsize=settings.gridsize, use_xla_translate=spec.xla.mode.value == "on",
            seed=settings.seed, **asdict(settings.model),
        ),
        "train_spec": TrainSpec(
            max_epochs=settings.max_epochs, batch_size=settings.batch_size, seed=settings.seed,
            validation_split=settings.validation_split, quiet=settings.quiet,
        ),
    }


def c1_slot(spec: PhaseConfig, job: JobContext) -> hub.HubSlot:
    """The job's hub slot: ``hub.slot``, the isolating parent's slot, or the derived name."""
    stem = f"phase_{spec.phase.value}_{spec.c1.variant}"
    name = slot_name(spec, job, f"{spec.backend.tag}_baseline/{stem}")
    return hub.resolve_slot(
        job.launch_dir / spec.hub.root, name, tag=spec.backend.tag, phase_stem=stem,
        variant=spec.c1.variant, guard_name=spec.guard.name,
    )


def new_record(spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, env: dict[str, str]) -> PhaseRecord:
    """The RUNNING record of a C1 job (``env``: the XLA variables the job runs under)."""
    settings = spec.c1
    shown = {
        "guard_log": slot.guard_log, "cli_log": slot.cli_log, "bundle": slot.bundle_dir, "run_dir": slot.run_dir,
    }
    parameters = {
        "n_images": "all" if settings.n_images is None else settings.n_images,
        "n_groups": "one_per_position" if settings.n_groups is None else settings.n_groups,
        "batch_size": settings.batch_size, "gridsize": settings.gridsize,
        "neighbor_count": settings.neighbor_count, "max_epochs": settings.max_epochs,
        "stitching": str(settings.do_stitching).lower(), "phase_offsets": settings.phase_offsets,
        "stitch_from": settings.stitch_from, "seed": settings.seed,
    }
    return running_record(
        job, slot, f"Phase C1 — {spec.backend.label} {settings.title}", env, parameters, shown,
        xla={"mode": spec.xla.mode.value, "isolated": "yes" if job.parent is not None else "no"},
        dataset=configured_dataset(spec, job.launch_dir),
    )


class C1Run(PhaseRun):
    """One C1 job in this process (see the module docstring for the order of work)."""

    failure_stack = True

    def __init__(self, spec: PhaseConfig, job: JobContext, slot: hub.HubSlot):
        env = {key: os.environ.get(key, "<unset>") for key in XLA_ENV_KEYS}
        super().__init__(spec, job, slot, new_record(spec, job, slot, env))
        self.settings = spec.c1
        self.backend = runner_backend(spec.backend)
        self.guard: GuardRun | None = None
        self.core_timings: dict[str, float] = {}
        self.result = None
        self.cxi_inputs: cxi_input.CxiInputs | None = None  # dataset.format=cxi: the conversion (data step)
        self.last_epoch: dict[str, float] = {}  # the last epoch's metrics, for the closing block
        self.epochs_done = 0
        self.inference_batch: int | None = None  # set by the memory pre-flight (data step)

    def _dropped_lines(self):
        return None if xla.framework_log_shown(self.spec.verbose) else framework_chatter

    def _summary(self) -> str:
        """The closing block: what ran, how well, where the evidence is; the status line last."""
        return closing_block(
            self.record, display_path(self.slot.inventory, self.job.launch_dir),
            quality=self.result.quality if self.result is not None else None,
            phase_offsets=self.settings.phase_offsets, last_epoch=self.last_epoch, epochs_done=self.epochs_done,
            tracker=self.tracker, log_error=self.tee.log_error if self.tee is not None else None)

    _green_text = _blocked_text = _interrupted_text = _summary

    def _finished(self) -> bool:
        """Blocked, or GREEN with its MLflow run closed."""
        return self.record.blocker is not None or self.timeline.span("tracking end", "end") is not None

    def _complete_failed_record(self) -> None:
        if self.guard is not None:
            try:
                self.record.guard = self.guard.finish().status
            except OSError as exc:  # its log could not be written (the hub's disk is full): the blocker comes first
                self.log.error("guard log not written: %s", outcome.os_error_line(exc, self.slot.guard_log))

    def _complete_interrupted_record(self) -> None:
        if self.guard is not None:
            self.record.guard = self.guard.stop(interrupt.CHILD_WAIT_S).status
        if self.result is not None:
            self.record.stats_sha1 = self.result.stats_sha1

    def _kill_run(self, timeout_s: float) -> None:
        run_id = self.tracker.run_id
        interrupt.say(f"interrupted at step {self.record.step!r}: blocker {self.record.blocker}; "
                      f"ending the MLflow run as KILLED (up to {timeout_s:.1f} s)")
        super()._kill_run(timeout_s)
        if self.record.mlflow["end"] != "KILLED":
            interrupt.say(f"MLflow run {run_id} {self.record.mlflow['end']}: it stays RUNNING there")

    def _check_disk(self) -> None:
        """The disk pre-flight (``ptycho.disk_preflight``): the dataset cache when it is to be made,
        the run's weights, reconstruction, bundle and logs, against each file system's free space;
        then space set aside for the evidence on the hub's and the SQLite store's file systems."""
        self.space.claim(disk_needs(self.spec, self.job.launch_dir, self.slot),
                         [self.slot.dir, *store_folder(self.spec, self.job.launch_dir)],
                         [self.slot.run_dir, self.slot.bundle_dir.parent])

    def _run(self) -> None:
        self._step("disk pre-flight")
        self._check_disk()
        self._step("guard")
        self.guard = GuardRun(
            self.spec.guard.selector, self._guard_cwd(), self.spec.guard.timeout_s,
            lambda text: hub.write_guard_logs(self.slot, text, self.lock_timeout_s),
            autoload_plugins=self.spec.guard.autoload_plugins,
        )
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-start") as pool:
            # MLflow's import and store set-up overlap TensorFlow's import (mostly outside the GIL)
            uri = tracking.absolute_uri(self.spec.tracking.uri, self.job.launch_dir)
            tracker = pool.submit(tracking.Tracker, uri, self.spec.tracking.experiment, self.spec.tracking.timeout_s,
                                  self._tracking_failed)
            self._step("imports")
            workflow = self._import_backend()
            self._step("tracking")
            self.tracker = tracker.result()
        self._start_tracking()
        self._step("data")
        train, test = self._load_data()
        self._step("model build and grouping")
        result = workflow.run_phase_job(train, test, **self._core_arguments(train))
        self.timeline.mark("core_done")
        self.result, self.bundle_written = result, True
        self.record.quality_warning = quality_warning(result.quality)
        self.core_timings = dict(result.timings_s)
        if self.cxi_inputs is not None:
            for path in cxi_input.write_outputs(self.cxi_inputs, self.slot.run_dir):
                self.log.info("CXI output: %s", display_path(path, self.job.launch_dir))
        self._step("tracking results")
        self._log_results(result)
        self._step("hub")
        self.record.stats_sha1 = result.stats_sha1
        outcome.mark_green(self.record, self.slot, self.lock_timeout_s)
        self._step("tracking end")
        self._end_tracking(green=True)
        self.record.save(self.outcome_path)

    def _guard_cwd(self) -> Path:
        return self.job.launch_dir / self.spec.guard.cwd if self.spec.guard.cwd else project_root()

    def _import_backend(self):
        """The backend's workflow module, imported and set up; the record notes how (compute, XLA state)."""
        loaded = self.backend.load(determinism.resolve_threads(self.spec.threads))
        self.record.xla.update(loaded.xla)
        self.record.compute = loaded.compute
        return loaded.workflow

    def _start_tracking(self) -> None:
        spec = self.spec
        tags = {
            "backend": spec.backend.name.value, "phase": spec.phase.value, "phase_variant": self.settings.variant,
            "slot": self.slot.name, "xla_mode": spec.xla.mode.value, "gridsize": self.settings.gridsize,
            "git_commit": self.record.git_commit,
            "status": RUNNING, **{f"env.{k}": v for k, v in self.record.env.items()},
            **{f"xla.{k}": v for k, v in self.record.xla.items()},
            **{f"compute.{k}": v for k, v in self.record.compute.items()},
        }
        run_id = self.tracker.start(self.slot.name, tags, self.job.parent_run_id)
        found = {"run_id": run_id, "experiment": spec.tracking.experiment, "tracking_uri": self.tracker.uri,
                 "ui": self.tracker.run_link()}
        self.record.mlflow = {key: value for key, value in found.items() if value}  # no run when tracking failed
        self._describe_run()
        if self.job.parent_run_id:
            self.record.mlflow["parent_run_id"] = self.job.parent_run_id
        self.record.save(self.outcome_path)
        config = OmegaConf.to_container(OmegaConf.structured(spec), enum_to_str=True)
        self.tracker.log_params(tracking.flatten(config))

    def _load_data(self):
        from ptycho import preflight
        from ptycho.data.npz import file_sha1, load_npz

        budget = preflight.MemoryBudget.of(self.settings.memory_budget_gb, "c1.memory_budget_gb")
        paths = self._dataset_files(budget)
        # headers, positions and the memory estimate first: nothing large is allocated before
        files = [preflight.inspect_file(path) for path in paths]
        specs = core_specs(self.spec, files[0].N)
        estimate = preflight.check_job(*files, **specs, do_stitching=self.settings.do_stitching, budget=budget)
        self.inference_batch = preflight.inference_batch_size(estimate, budget, specs["model_spec"])
        train, test = (load_npz(path) for path in paths)
        if self.settings.do_stitching and test.has_ground_truth:  # first: the compare view plots the first metric
            self.tracker.reserve_metrics(tracking.QUALITY_FIRST)
        digests = [file_sha1(path) for path in paths]
        for context, path, data, sha1 in zip(("train", "test"), paths, (train, test), digests):
            self.tracker.log_dataset(self.spec.dataset.name, path, sha1, context, data.n_images)
        self.record.dataset = {
            "name": self.spec.dataset.name,
            "train": display_path(paths[0], self.job.launch_dir), "train_sha1": digests[0],
            "test": display_path(paths[1], self.job.launch_dir), "test_sha1": digests[1],
        }
        if self.cxi_inputs is not None:  # the converted files above; the CXI files and the report here
            given = configured_dataset(self.spec, self.job.launch_dir)
            self.record.dataset.update({"format": "cxi", "train_cxi": given["train"], "test_cxi": given["test"],
                                        "cxi_report": display_path(self.cxi_inputs.report_path, self.job.launch_dir)})
        settings = self.settings
        self.record.parity_key = tracking.parity_key(digests[0], digests[1], {
            "N": train.N, "gridsize": settings.gridsize, "n_images": settings.n_images or train.n_images,
            "n_groups": settings.n_groups or settings.n_images or train.n_images,
            "neighbor_count": settings.neighbor_count,
            "batch_size": settings.batch_size, "max_epochs": settings.max_epochs, "seed": settings.seed,
        })
        self.tracker.set_tags({"parity_key": self.record.parity_key})
        return train, test

    def _dataset_files(self, budget=None) -> tuple[Path, Path]:
        if self.spec.dataset.format is DataFormat.cxi:
            self.cxi_inputs = cxi_input.prepare(self.spec, self.job.launch_dir, budget and budget.bytes)
            self.log.info("%s", self.cxi_inputs.text())
            return self.cxi_inputs.paths
        return dataset_files(self.spec, self.job.launch_dir)

    def _core_arguments(self, train) -> dict:
        """Keyword arguments of ``workflow.run_phase_job`` (the specs are shared by the backends)."""
        settings = self.settings
        return {
            **core_specs(self.spec, train.N),
            "run_dir": self.slot.run_dir,
            "bundle_dir": self.slot.bundle_dir,
            "do_stitching": settings.do_stitching,
            "phase_offsets": settings.phase_offsets,
            "stitch_from": settings.stitch_from,
            "callbacks": make_callbacks(
                self.backend.callback_base(), wait_for_guard=self._wait_for_guard, log_epoch=self._log_epoch,
                mark=self._mark_training, say=self.log.info, progress=self.tee.terminal(),
            ),
            "nphotons": loss_photons(self.spec.dataset, self.cxi_inputs),
            "inference_batch_size": self.inference_batch,
            **self.backend.job_options(),
        }

    def _wait_for_guard(self) -> None:
        self._step(outcome.GUARD_WAIT_STEP)
        result = self.guard.finish()
        self.record.guard = result.status
        self.timeline.mark("guard_done")
        self.log.info("guard %s in %.1f s: %s", result.status, result.duration_s, self.record.paths["guard_log"])
        if not result.passed:
            raise GuardFailed(
                f"guard {self.spec.guard.name} is {result.status} ({result.command}); "
                f"see {self.record.paths['guard_log']}"
            )

    def _log_epoch(self, epoch: int, metrics: dict) -> None:
        self.last_epoch, self.epochs_done = metrics, epoch + 1
        self.tracker.log_metrics(metrics, step=epoch)

    def _mark_training(self, event: str) -> None:
        self.timeline.mark(event)
        if event == "train_begin":
            self.record.step = "training"
        elif event == "train_end":
            self.record.step = "inference, stitching and bundle"

    def _log_results(self, result) -> None:
        self.tracker.log_metrics({
            **tracking.numeric_leaves(
                {k: v for k, v in result.bundle_stats.items() if k not in BUNDLE_DUPLICATES}, "bundle."
            ),
            **tracking.numeric_leaves(result.quality, "quality."),
            "throughput_groups_per_s": result.throughput_groups_per_s,
            "n_groups_train": result.n_groups_train,
            "intensity_scale": result.intensity_scale,
        })
        self.tracker.log_series("step_loss", result.history.get("step_loss", []))
        self.tracker.set_tags({"guard_status": self.record.guard, "stats_sha1": result.stats_sha1,
                               **warning_tags(self.record)})
        if self.spec.tracking.log_artifacts:
            self.tracker.log_artifacts(self.slot.bundle_dir, "bundle")
            self.tracker.log_artifacts(self.job.output_dir / ".hydra", "hydra")
        networks.publish_network(self.tracker, self.slot, self.record, self.spec.tracking.log_artifacts)

    def _end_tracking(self, green: bool) -> None:
        """Final tags, timing metrics, log artifacts; end the run; write timings.json."""
        tracker = self.tracker
        tags = {"status": self.record.status, "guard_status": self.record.guard}
        if self.record.blocker:
            tags.update(blocker=self.record.blocker, error=self.record.error or "-")
        tracker.set_tags(tags)
        if not green:
            tracker.rename(f"{self.slot.name} [{self.record.status}]")
        self._describe_run()
        timings = self._timings()
        tracker.log_metrics({f"timing.{key}": value for key, value in timings.items()})
        if self.spec.tracking.log_artifacts:
            tracker.log_artifacts(self.slot.guard_log, "logs")  # the CLI log follows when it is complete
        self.space.end_run(tracker, green, {"status": self.record.status, "blocker": self.record.blocker or "-",
                                            "error": self.record.error or "-"})
        self.timeline.mark("end")
        try:
            self.slot.run_dir.mkdir(parents=True, exist_ok=True)
            hub.atomic_write_text(self.slot.run_dir / TIMINGS_FILE, json.dumps(self._timings(), indent=2) + "\n")
            if tracker.failure is not None:
                keep_journal(tracker, self.record, self.slot, self.outcome_path, self.lock_timeout_s,
                             self.spec.tracking.log_artifacts)
        except OSError as exc:
            if green:
                raise
            self.log.error("timings and tracking journal not written: %s", outcome.os_error_line(exc))

    def _timings(self) -> dict[str, float]:
        """Seconds per step (module docstring of runners.bench.phase); missing steps are left out."""
        t = self.timeline
        spans = {
            "imports_s": t.span("imports", "tracking"),
            "tracking_start_s": t.span("tracking", "data"),
            "data_s": t.span("data", "model build and grouping"),
            "model_build_s": t.span("model build and grouping", outcome.GUARD_WAIT_STEP),
            "guard_wait_s": t.span(outcome.GUARD_WAIT_STEP, "guard_done"),
            "first_epoch_s": t.span("train_begin", "first_epoch_end"),
            "later_epochs_s": t.span("first_epoch_end", "train_end"),
            "training_s": t.span("train_begin", "train_end"),
            "inference_stitching_bundle_s": t.span("train_end", "core_done"),
            "tracking_results_s": t.span("tracking results", "hub"),
            "hub_s": t.span("hub", "tracking end"),
            "tracking_end_s": t.span("tracking end", "end"),
        }
        timings = {key: value for key, value in spans.items() if value is not None}
        timings.update({f"core.{key}": float(value) for key, value in self.core_timings.items()})
        if self.guard is not None and self.guard.finished:
            timings["guard_s"] = self.guard.finish().duration_s
        timings["mlflow_s"] = self.tracker.seconds if self.tracker else 0.0
        timings["process_start_to_job_s"] = t.process_age_s
        timings["job_s"] = t.elapsed()
        return timings


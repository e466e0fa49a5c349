"""Phase C1: one baseline run of a backend, from the guard check to the hub (DESIGN §3).

Order of work in :class:`C1Run`: start the guard (pytest subprocess), import the backend,
open the MLflow run, prepare the data (simulate or load and validate), then the core's
``run_phase_job`` (grouping, model, training behind the guard gate, inference,
stitching, debug bundle), log results to MLflow, write the hub. Everything the job prints
is teed into the slot's CLI log. Any failure writes a blocker and raises PhaseBlocked.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import psutil
from omegaconf import OmegaConf

from ptycho import determinism, disk_preflight
from runners.phases import cxi_input
from runners.process import diskfull, interrupt, xla
from runners.evidence import hub, outcome, resume
from runners import tracking
from runners.phases.callbacks import keras_base, make_callbacks
from runners.evidence.envinfo import XLA_ENV_KEYS, code_state, git_commit, library_versions, project_root
from runners.evidence import (
    GREEN, OUTCOME_FILE, RUNNING, PhaseRecord, failed_tracking, quality_warning, run_description, tracking_text,
    warning_tags,
)
from runners.process.guard import GuardFailed, GuardRun
from runners.job import JobContext
from runners.evidence.outcome import PhaseBlocked, PhaseConfigError, display_path
from runners.schema import Backend, DataFormat, PhaseConfig
from runners.tracking.sync import keep_journal
from runners.process.tee import FdTee, framework_chatter
from runners.evidence.timeline import Timeline

log = logging.getLogger(__name__)
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


def slot_name(spec: PhaseConfig, job: JobContext, derived: str) -> str:
    """``hub.slot``, the isolating parent's slot, or ``derived`` plus the job's sweep suffix
    (``__gridsize=1``; ``__job<n>`` in a multirun without a sweep context)."""
    if spec.hub.slot:
        return spec.hub.slot
    if job.parent is not None:
        return job.parent.slot
    keys = job.slot_suffix_keys()
    suffix = f"job{job.job_num}" if keys is None else hub.slot_suffix(list(job.overrides), keys)
    return derived + (f"__{suffix}" if suffix else "")


def dataset_files(spec: PhaseConfig, launch_dir: Path) -> tuple[Path, Path]:
    """(train, test) NPZ paths of ``spec.dataset``: the files given, or the simulated ones (made on first use)."""
    dataset = spec.dataset
    if dataset.format is DataFormat.cxi:  # converted into NPZ files of the contract (runners/phases/cxi_input.py)
        return cxi_input.converted_paths(spec, launch_dir)
    if dataset.uses_files:
        return launch_dir / dataset.train_data_file, launch_dir / dataset.test_data_file
    from ptycho.data.simulate import SimulationSpec, ensure_simulated_dataset

    return ensure_simulated_dataset(SimulationSpec(**asdict(dataset.simulation)), launch_dir / dataset.cache_dir)


def disk_needs(spec: PhaseConfig, launch_dir: Path, slot: hub.HubSlot) -> list[disk_preflight.DiskNeed]:
    """What a C1 job will write, for the disk pre-flight: the simulated dataset when its cache
    lacks it, the run's outputs in the slot (sized from the simulation, or from the files'
    headers and positions), its rows in a SQLite MLflow store. Empty for data files that cannot
    be read: the data step reports them."""
    found = data_disk_needs(spec, launch_dir)
    if found is None:
        return []
    N, canvas, needs = found
    outputs = disk_preflight.run_outputs(
        slot.run_dir, slot.bundle_dir, slot.cli_log.parent, N=N, gridsize=spec.c1.gridsize,
        n_filters_scale=spec.c1.model.n_filters_scale, canvas_px=canvas, setting="hub.root")
    return needs + within_memory(outputs) + store_disk_needs(spec, launch_dir)


def data_disk_needs(spec: PhaseConfig, launch_dir: Path) -> tuple[int, int, list[disk_preflight.DiskNeed]] | None:
    """(N, the canvas side in pixels, [the simulated dataset when its cache lacks it]) of ``spec.dataset``
    (C1 and C3); None for data files that cannot be read."""
    from ptycho import preflight
    from ptycho.data.contract import DataContractError
    from ptycho.data.simulate import SimulationSpec, cached_dataset_paths

    needs = []
    dataset = spec.dataset
    if dataset.uses_files:
        try:
            test = preflight.inspect_file(launch_dir / dataset.test_data_file)
        except (DataContractError, OSError, ValueError):
            return None
        N, canvas = test.N, int(max(np.ptp(test.xcoords), np.ptp(test.ycoords))) + 2 * test.N
    else:
        simulation = SimulationSpec(**asdict(dataset.simulation))
        N, canvas = simulation.N, simulation.object_side + 2 * simulation.N
        cache = launch_dir / dataset.cache_dir
        if not all(path.is_file() for path in cached_dataset_paths(simulation, cache)):
            needs.append(disk_preflight.DiskNeed(
                "simulated dataset", cache, disk_preflight.simulated_dataset_bytes(
                    simulation.n_images, simulation.n_test, N, simulation.object_side), "dataset.cache_dir"))
    return N, canvas, needs


def within_memory(outputs: list[disk_preflight.DiskNeed]) -> list[disk_preflight.DiskNeed]:
    """``outputs`` capped at this machine's memory. An output larger than that is never made: the data
    step's memory pre-flight refuses that job and names its cause (a far scan position, too wide a
    network), which a disk figure would hide."""
    ceiling = psutil.virtual_memory().total
    return [dataclasses.replace(need, bytes=min(need.bytes, ceiling)) for need in outputs]


def store_disk_needs(spec: PhaseConfig, launch_dir: Path) -> list[disk_preflight.DiskNeed]:
    """A run's rows in a SQLite MLflow store (C1, C2, C3); none for a tracking server."""
    store = tracking.sqlite_file(tracking.absolute_uri(spec.tracking.uri, launch_dir))
    if store is None:
        return []
    return [disk_preflight.DiskNeed("MLflow store", store.parent, disk_preflight.TRACKING_STORE_BYTES, "tracking.uri")]


def store_folder(spec: PhaseConfig, launch_dir: Path) -> list[Path]:
    """[the SQLite store's folder], or [] for a tracking server: where a job sets space aside for its MLflow end."""
    store = tracking.sqlite_file(tracking.absolute_uri(spec.tracking.uri, launch_dir))
    return [store.parent] if store else []


def written_folders(spec: PhaseConfig, launch_dir: Path, slot: hub.HubSlot, cache: bool = True) -> list[Path]:
    """The folders a job writes into: its slot, the hub's shared files, the dataset cache (``cache``: when
    it simulates), the store, the launch folder."""
    cache_dir = [launch_dir / spec.dataset.cache_dir] if cache and not spec.dataset.uses_files else []
    return [slot.dir, slot.root, *cache_dir, *store_folder(spec, launch_dir), launch_dir]


def new_record(spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, env: dict[str, str]) -> PhaseRecord:
    """The RUNNING record of a C1 job (``env``: the XLA variables the job runs under)."""
    settings = spec.c1
    suffix = slot.name.rsplit("/", 1)[-1].partition("__")[2]
    title = f"Phase C1 — {spec.backend.label} {settings.title}" + (f" [{suffix}]" if suffix else "")
    shown = {
        "guard_log": slot.guard_log, "cli_log": slot.cli_log, "bundle": slot.bundle_dir, "run_dir": slot.run_dir,
    }
    return PhaseRecord(
        slot=slot.name,
        title=title,
        utc_time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=job.command,
        env=env,
        versions=library_versions(),
        git_commit=git_commit(project_root(), slot.root),
        parameters={
            "n_images": "all" if settings.n_images is None else settings.n_images,
            "n_groups": "one_per_position" if settings.n_groups is None else settings.n_groups,
            "batch_size": settings.batch_size, "gridsize": settings.gridsize,
            "neighbor_count": settings.neighbor_count, "max_epochs": settings.max_epochs,
            "stitching": str(settings.do_stitching).lower(), "phase_offsets": settings.phase_offsets,
            "stitch_from": settings.stitch_from, "seed": settings.seed,
        },
        paths={key: display_path(path, job.launch_dir) for key, path in shown.items()},
        xla={"mode": spec.xla.mode.value, "isolated": "yes" if job.parent is not None else "no"},
        dataset=configured_dataset(spec, job.launch_dir),
    )


def configured_dataset(spec: PhaseConfig, launch_dir: Path) -> dict[str, str]:
    """The record's dataset before the data step: the files given, or the simulation's cache folder
    (the data step adds the sha1s)."""
    dataset = spec.dataset
    if dataset.uses_files:
        return {"name": dataset.name, "train": display_path(launch_dir / dataset.train_data_file, launch_dir),
                "test": display_path(launch_dir / dataset.test_data_file, launch_dir)}
    return {"name": dataset.name, "simulated_in": display_path(launch_dir / dataset.cache_dir, launch_dir)}


def run_c1(spec: PhaseConfig, job: JobContext) -> PhaseRecord:
    """Run phase C1 for ``spec``; returns the GREEN record or raises PhaseBlocked/PhaseConfigError."""
    try:
        slot = c1_slot(spec, job)
        check_backend(spec)
        check_dataset_size(spec, job.launch_dir)
    except ValueError as exc:
        raise PhaseConfigError(str(exc)) from exc
    key = c1_work_key(spec, job.launch_dir, slot)
    done = None if spec.force else resume.finished_work(slot, key)
    if done is not None:
        return skip_finished(spec, job, slot, done)
    if job.parent is None and spec.backend.name is Backend.tensorflow and xla.needs_isolation():
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


def check_backend(spec: PhaseConfig) -> None:
    """The backend's workflow module (``run_phase_job``) must be installed."""
    try:
        found = importlib.util.find_spec(spec.backend.workflow) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        raise ValueError(
            f"backend.workflow: module {spec.backend.workflow!r} (backend={spec.backend.name.value}) "
            "is not installed in this environment"
        )


def check_dataset_size(spec: PhaseConfig, launch_dir: Path) -> None:
    """For data files: n_images and the groups must fit the train file (read from its .npy
    headers, never its arrays).

    A file that breaks the data contract is left to the data step, which reports it as a blocker.
    """
    if not spec.dataset.uses_files:
        return
    from ptycho.data.contract import DataContractError, check_layout, read_npz_headers

    path = launch_dir / spec.dataset.train_data_file
    try:
        if spec.dataset.format is DataFormat.cxi:
            from ptycho.data.cxi import frame_count

            n_positions = frame_count(path)
        else:
            n_positions, _ = check_layout(read_npz_headers(path), str(path))
    except DataContractError:
        return
    settings = spec.c1
    source = f"positions in {spec.dataset.train_data_file}"
    if settings.n_images is not None and settings.n_images > n_positions:
        raise ValueError(f"c1.n_images: must be <= {n_positions} ({source}); got {settings.n_images}")
    settings.check_against(settings.n_images or n_positions, source)


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


def loss_photons(dataset, cxi_inputs=None) -> float | None:
    """Photons per pattern the network's loss works at: ``dataset.nphotons`` when given, else what the
    data were made with (a CXI scan's mean counts per frame, a simulation's ``nphotons``); None leaves
    the core's default (``ptycho.data.batches.DEFAULT_NPHOTONS``) for files that do not say."""
    if dataset.nphotons is not None:
        return dataset.nphotons
    if cxi_inputs is not None:
        return cxi_inputs.photons_per_frame
    if dataset.simulation is not None and not dataset.uses_files:
        return dataset.simulation.nphotons
    return None


def quality_line(quality: dict[str, float]) -> str:
    """``amp_mae 0.0438 (0.76x the constant-object floor), phase_mae 0.349 rad (0.92x), SSIM ..., FRC50 ...``."""
    parts = []
    for name, unit in (("amp_mae", ""), ("phase_mae", " rad")):
        if name in quality:
            ratio = quality.get(f"{name}_to_floor")
            parts.append(f"{name} {quality[name]:.4g}{unit}"
                         + (f" ({ratio:.2f}x the constant-object floor)" if ratio is not None else ""))
    for name in ("amp_ssim", "phase_ssim", "frc50"):
        if name in quality:
            parts.append(f"{name} {quality[name]:.3g}")
    return ", ".join(parts)


def epochs_line(last: dict[str, float], epochs: int) -> str:
    """``1 epoch, final loss -3.25e+06 (NLL +12.3/px over the data's floor), 26.0 groups/s``."""
    text = f"{epochs} epoch{'s' if epochs != 1 else ''}, final loss {last.get('loss', float('nan')):.7g}"
    if "nll_excess" in last:
        text += f" (NLL {last['nll_excess']:+.4g}/px over the data's floor)"
    if "groups_per_s" in last:
        text += f", {last['groups_per_s']:.1f} groups/s"
    return text


class C1Run:
    """One C1 job in this process (see the module docstring for the order of work)."""

    def __init__(self, spec: PhaseConfig, job: JobContext, slot: hub.HubSlot):
        self.spec, self.job, self.slot = spec, job, slot
        self.settings = spec.c1
        self.lock_timeout_s = spec.hub.lock_timeout_s
        self.record = new_record(spec, job, slot, {key: os.environ.get(key, "<unset>") for key in XLA_ENV_KEYS})
        self.outcome_path = job.output_dir / OUTCOME_FILE
        self.timeline = Timeline()
        self.guard: GuardRun | None = None
        self.tracker: tracking.Tracker | None = None
        self.core_timings: dict[str, float] = {}
        self.terminal = None  # progress-bar writer while a terminal is attached
        self.result = None
        self.cxi_inputs: cxi_input.CxiInputs | None = None  # dataset.format=cxi: the conversion (data step)
        self.last_epoch: dict[str, float] = {}  # the last epoch's metrics, for the closing block
        self.epochs_done = 0
        self.inference_batch: int | None = None  # set by the memory pre-flight (data step)
        self.space = diskfull.JobSpace()  # pre-flight, space set aside for the evidence, partial files
        self.blocker_text: str | None = None  # the blocker, when only the MLflow run could take it
        self.tee: FdTee | None = None

    def execute(self) -> PhaseRecord:
        self.slot.make_dirs()
        self.record.save(self.outcome_path)
        banner = f"# {self.record.title}\n# {self.record.utc_time} pid {os.getpid()}\n# {self.record.command}"
        failure = blocked = None
        drop = None if xla.framework_log_shown(self.spec.verbose) else framework_chatter
        with FdTee(self.slot.cli_log, banner, drop) as tee, \
                interrupt.at_signal(lambda sig: self._interrupted(sig, tee)):
            self.terminal, self.tee = tee.terminal(), tee
            try:
                self._run()
            except Exception as exc:
                failure, blocked = exc, self._fail(exc)
            else:
                print(self._summary(), flush=True)
            finally:
                self.space.release()
        tracking.copy_log(self.tracker, self.slot.cli_log, self.spec.tracking.log_artifacts)  # complete now
        if blocked is not None:
            raise blocked from failure
        return self.record

    def _interrupted(self, sig: interrupt.Signal, tee: FdTee) -> None:
        """The evidence of a job ended by ``sig`` (in the interrupt's writer thread, the main thread
        stopped or still in a kernel): guard log, blocker, section and summary entry, the MLflow run
        KILLED (bounded), the closing block; then the CLI log is closed. A job that had ended
        (blocked, or GREEN with its MLflow run closed) keeps its record."""
        self.space.release()  # the process ends with os._exit: nothing after this gives it back
        if self.record.blocker is not None or self.timeline.span("tracking end", "end") is not None:
            tee.close(join_timeout_s=min(outcome.TEE_CLOSE_TIMEOUT_S, sig.remaining()))
            return
        self.lock_timeout_s = min(self.lock_timeout_s, outcome.INTERRUPT_LOCK_TIMEOUT_S)  # the guard's log writer reads it too
        if self.guard is not None:
            self.record.guard = self.guard.stop(interrupt.CHILD_WAIT_S).status
        if self.result is not None:
            self.record.stats_sha1 = self.result.stats_sha1
        outcome.interrupted(self.record, self.slot, sig.name, interrupt.main_stack(), self.job.launch_dir,
                            self.lock_timeout_s, bundle_is_this_runs=self.result is not None)
        self.record.save(self.outcome_path)
        run_id = self.tracker.run_id if self.tracker is not None else None
        if run_id is not None:
            timeout_s = min(outcome.MLFLOW_KILL_TIMEOUT_S, sig.remaining())
            interrupt.say(f"interrupted at step {self.record.step!r}: blocker {self.record.blocker}; "
                          f"ending the MLflow run as KILLED (up to {timeout_s:.1f} s)")
            self.record.mlflow["end"] = outcome.kill_run(self.tracker.client, run_id, self.record, timeout_s)
            if self.record.mlflow["end"] != "KILLED":
                interrupt.say(f"MLflow run {run_id} {self.record.mlflow['end']}: it stays RUNNING there")
            outcome.publish(self.record, self.slot, self.lock_timeout_s)
            self.record.save(self.outcome_path)
        interrupt.say(self._summary())
        tee.close(join_timeout_s=min(outcome.TEE_CLOSE_TIMEOUT_S, sig.remaining()))

    def _summary(self) -> str:
        """The closing block: what ran, how well, where the evidence is; the status line last."""
        record, launch = self.record, self.job.launch_dir
        lines = [f"== {record.title}: {record.status} =="]
        if record.status != GREEN:
            lines.append(f"  failed    at step {record.step!r}: {record.error}")
        if self.result is not None and self.result.quality:
            lines.append(f"  quality   {quality_line(self.result.quality)} "
                         f"(patch phase offsets: {self.settings.phase_offsets})")
        if record.quality_warning:
            lines.append(f"  WARNING   {record.quality_warning}")
        if self.last_epoch:
            lines.append(f"  training  {epochs_line(self.last_epoch, self.epochs_done)}")
        if record.mlflow.get("run_id"):
            lines.append(f"  MLflow    run {record.mlflow['run_id']}: {record.mlflow.get('ui', '-')}")
            lines.append(f"            runs table: {self.tracker.runs_link()}")
            if not self.tracker.uri.startswith(("http://", "https://")):
                uri = self.tracker.uri
                lines.append(f"            (start the UI with: python -m runners.tracking.mlflow_ui --backend-store-uri {uri}; "
                             f"that is MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {uri})")
        if record.tracking:
            lines.append(f"  tracking  {tracking_text(record.tracking)}")
        inventory = display_path(self.slot.inventory, launch)
        if record.status == GREEN:
            lines.append(f"  bundle    {record.paths['bundle']}")
        if record.hub_error:
            lines.append(f"  section   NOT written: {record.hub_error}")
        else:
            lines.append(f"  section   \"{record.title}\" in {inventory}")
        log_error = self.tee.log_error if self.tee is not None else None
        cli_log = record.paths["cli_log"] + (f" (incomplete: {outcome.os_error_line(log_error)})"
                                             if log_error else "")
        lines.append(f"  CLI log   {cli_log}")
        if record.status == GREEN:
            lines.append(f"GREEN: {record.title}; stats.json sha1 {record.stats_sha1}; inventory {inventory}")
        else:
            lines.append(f"blocker: {record.blocker}")
        return "\n".join(lines)

    def _step(self, name: str) -> None:
        self.record.step = name
        self.timeline.mark(name)
        log.info("step: %s", name)

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
        self.result = result
        self.record.quality_warning = quality_warning(result.quality)
        self.core_timings = dict(result.timings_s)
        if self.cxi_inputs is not None:
            for path in cxi_input.write_outputs(self.cxi_inputs, self.slot.run_dir):
                log.info("CXI output: %s", display_path(path, self.job.launch_dir))
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
        threads = determinism.resolve_threads(self.spec.threads)
        if self.spec.backend.name is Backend.tensorflow:
            self.record.xla.update(xla.import_tensorflow())
            self.record.compute = determinism.configure_tensorflow(threads)
        else:
            self.record.compute = determinism.configure_torch(threads, self.spec.backend.device)
        return importlib.import_module(self.spec.backend.workflow)

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

    def _describe_run(self) -> None:
        """The MLflow run's description (its note): title, status, and where the hub keeps the evidence
        (and the blocker itself, when no file could take it)."""
        text = run_description(self.record, display_path(self.slot.inventory, self.job.launch_dir))
        self.tracker.describe(outcome.described(text, self.blocker_text))

    def _load_data(self):
        from ptycho import preflight
        from ptycho.data.contract import file_sha1, load_npz

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
            log.info("%s", self.cxi_inputs.text())
            return self.cxi_inputs.paths
        return dataset_files(self.spec, self.job.launch_dir)

    def _core_arguments(self, train) -> dict:
        """Keyword arguments of ``workflow.run_phase_job`` (the specs are shared by the backends)."""
        settings = self.settings
        base = keras_base() if self.spec.backend.name is Backend.tensorflow else object
        return {
            **core_specs(self.spec, train.N),
            "run_dir": self.slot.run_dir,
            "bundle_dir": self.slot.bundle_dir,
            "do_stitching": settings.do_stitching,
            "phase_offsets": settings.phase_offsets,
            "stitch_from": settings.stitch_from,
            "callbacks": make_callbacks(
                base, wait_for_guard=self._wait_for_guard, log_epoch=self._log_epoch, mark=self._mark_training,
                say=log.info, progress=self.terminal,
            ),
            "nphotons": loss_photons(self.spec.dataset, self.cxi_inputs),
            "inference_batch_size": self.inference_batch,
            **({"device": self.spec.backend.device} if self.spec.backend.name is Backend.pytorch else {}),
        }

    def _wait_for_guard(self) -> None:
        self._step(outcome.GUARD_WAIT_STEP)
        result = self.guard.finish()
        self.record.guard = result.status
        self.timeline.mark("guard_done")
        log.info("guard %s in %.1f s: %s", result.status, result.duration_s, self.record.paths["guard_log"])
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
            log.error("timings and tracking journal not written: %s", outcome.os_error_line(exc))

    def _tracking_failed(self, failure: tracking.TrackingFailure) -> None:
        """The tracker gave up (it logs why): the hub's section and summary entry will say so."""
        self.record.tracking = failed_tracking(failure.operation, failure.error, self.record.step)

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

    def _fail(self, error: Exception) -> PhaseBlocked:
        """Complete the evidence of a failed job; the PhaseBlocked to raise once the CLI log is closed.

        Out of disk space (:mod:`runners.process.diskfull`): one line instead of the stack (the blocker
        keeps it), the run's partial files removed and its reserved space given back first, the
        blocker wherever it fits (hub, launch folder, MLflow run), the error's frames released."""
        full = outcome.report_failure(self.record, error, self.space, logger=log, written=self._written_folders(),
                                      store=tracking.sqlite_file(self.tracker.uri) if self.tracker else None)
        if self.guard is not None:
            try:
                self.record.guard = self.guard.finish().status
            except OSError as exc:  # its log could not be written (the hub's disk is full): the blocker comes first
                log.error("guard log not written: %s", outcome.os_error_line(exc, self.slot.guard_log))
        outcome.block(self.record, self.slot, error, self.job.launch_dir, self.lock_timeout_s,
                      reason=full.line() if full else None, elsewhere=outcome.blocker_in_run(self))
        if full is not None:
            diskfull.release(error)
        outcome.save_record(self.record, self.outcome_path)
        if self.tracker is not None:  # a degraded tracker (no run) still keeps its journal
            try:
                self._end_tracking(green=False)
            except Exception:  # the blocker is written; MLflow trouble must not hide the first error
                log.exception("could not close the MLflow run %s as FAILED", self.tracker.run_id)
        print(self._summary(), file=sys.stderr, flush=True)
        return PhaseBlocked(self.record.error, self.record.blocker, announced=True)

    def _written_folders(self) -> list[Path]:
        return written_folders(self.spec, self.job.launch_dir, self.slot)

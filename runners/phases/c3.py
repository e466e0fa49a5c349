"""Phase C3: an iterative reference reconstruction (``python -m runners.phase c3=iterative``).

cdtools (the extra ``iterative``, adapted in ``ptycho.iterative``) reconstructs the object from
the data C1 trains on, with the data's probe held fixed, so that a network's reconstruction can
be set beside a classical one of the same data, also on real data without ground truth (in the
MLflow UI: filter on ``tags.dataset.test_sha1``, which C1 and C3 runs of the same data share).
The evidence is C1's: quality against ``objectGuess`` with the constant-object floor (when the
data carry it), the debug bundle, an MLflow run, the inventory section and summary entry, or
a blocker.

The object starts flat (``c3.init=flat``: the constant amplitude the data imply) or from a trained
network's reconstruction of the same data (``c3.init=pinn``, ``c3.network``; ``runners.inputs.network_start``:
the network's backend is imported beside cdtools). Data the network cannot serve block the run at its
``pinn`` step with the mismatch named (``ptycho.network.check_serves``); data far from its training
data give a warning.

Order of work (:class:`C3Run`): import cdtools (missing: a blocker that names the install
command) and the network's backend, open the MLflow run, load the data (C1's files or simulation;
``c3.positions`` picks the test file, the train file or both), the network's object (``pinn``),
reconstruct, place the object on C1's canvas, quality, bundle, MLflow results, hub. Slot
``iterative_reference/phase_c3_<variant>[__<sweep suffix>]`` (``hub.slot`` replaces it):
``analysis/forward_parity_debug_iterative/`` (the bundle), ``run_<variant>/`` (``reconstruction.npz``:
the canvas as C1 writes it plus the whole reconstructed object and its origin; ``history.json``: the
loss per epoch; ``timings.json``: the iterations' seconds and, with ``pinn``, the network's), and with
``pinn`` the network's own outputs: ``run_<variant>/pinn/`` (its reconstruction.npz, network.json)
and ``analysis/forward_parity_debug_pinn/`` (its bundle).
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
from omegaconf import OmegaConf

from ptycho import determinism, disk_preflight
from runners import tracking
from runners.evidence import PhaseRecord, quality_warning, warning_tags
from runners.evidence import hub, outcome
from runners.evidence.outcome import PhaseConfigError, display_path
from runners.job import JobContext
from runners.phases.base import PhaseRun, running_record, slot_name
from runners.phases.c1_start import run_in_fresh_process
from runners.inputs.network_start import NetworkStart, pinn_network
from runners.phases.closing import quality_line
from runners.inputs.datasets import dataset_files
from runners.phases.disk import data_disk_needs, store_disk_needs, store_folder, within_memory
from runners.process import xla
from runners.process.tee import framework_chatter
from runners.schema import C3Init, PhaseConfig

log = logging.getLogger(__name__)
TAG = "iterative"
BACKEND = "cdtools"
GUARD_NAME = "c3_iterative"  # names the blocker files; no guard test runs before a C3 job
RECONSTRUCTION_FILE = "reconstruction.npz"
HISTORY_FILE = "history.json"
TIMINGS_FILE = "timings.json"
BUNDLE_DUPLICATES = ("quality", "iterative")  # stats.json sections logged under their own names


def c3_slot(spec: PhaseConfig, job: JobContext) -> hub.HubSlot:
    """``iterative_reference/phase_c3_<variant>`` with C1's rules (``hub.slot``, sweep suffix)."""
    stem = f"phase_c3_{spec.c3.variant}"
    name = slot_name(spec, job, f"{TAG}_reference/{stem}")
    return hub.resolve_slot(job.launch_dir / spec.hub.root, name, tag=TAG, phase_stem=stem,
                            variant=spec.c3.variant, guard_name=GUARD_NAME, log_verb="reconstruct")


def new_record(spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, env: dict[str, str]) -> PhaseRecord:
    """The RUNNING record of a C3 job."""
    settings = spec.c3
    shown = {"cli_log": slot.cli_log, "bundle": slot.bundle_dir, "run_dir": slot.run_dir}
    parameters = {
        "library": BACKEND, "engine": settings.engine.value, "epochs": settings.epochs,
        "learning_rate": "default" if settings.learning_rate is None else settings.learning_rate,
        "batch_size": settings.batch_size, "positions": settings.positions.value, "seed": settings.seed,
        "init": settings.init.value, **({"network": settings.network} if settings.init is C3Init.pinn else {}),
    }
    return running_record(job, slot, f"Phase C3 — {settings.title}", env, parameters, shown,
                          guard="NOT RUN (no guard for an iterative reconstruction)")


def run_c3(spec: PhaseConfig, job: JobContext) -> PhaseRecord:
    """Run phase C3 for ``spec``; returns the GREEN record or raises PhaseBlocked/PhaseConfigError."""
    try:
        slot = c3_slot(spec, job)
        network = pinn_network(spec, job) if spec.c3.init is C3Init.pinn else None
    except ValueError as exc:
        raise PhaseConfigError(str(exc)) from exc
    if network is not None and job.parent is None and network[1].needs_fresh_process():
        return run_in_fresh_process(job, slot)
    return C3Run(spec, job, slot, network).execute()


class C3Run(PhaseRun):
    """One C3 job (see the module docstring for the order of work)."""

    def __init__(self, spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, network: tuple | None = None):
        super().__init__(spec, job, slot, new_record(spec, job, slot, {}))
        self.settings = spec.c3
        self.pinn = None if network is None else NetworkStart(*network, slot, spec.c3.network)  # c3.init=pinn
        self.outcome_lines: list[str] = []  # quality and time, printed above the GREEN line
        if self.pinn is not None:
            self.record.parameters.update(self.pinn.parameters(job.launch_dir))
            self.record.paths["pinn_bundle"] = display_path(self.pinn.bundle_dir, job.launch_dir)

    def _green_text(self) -> str:
        return "\n".join([*self.outcome_lines, super()._green_text()])

    def _dropped_lines(self):
        if self.pinn is None or xla.framework_log_shown(self.spec.verbose):
            return super()._dropped_lines()
        return framework_chatter

    def _run(self) -> None:
        self._step("disk pre-flight")
        self._check_disk()
        self._step("imports")
        from ptycho import iterative

        self.record.versions[iterative.DISTRIBUTION] = iterative.library_version()
        threads = determinism.resolve_threads(self.spec.threads)
        self.record.compute = determinism.configure_torch(threads)
        loaded = None
        if self.pinn is not None:  # after cdtools' torch settings: a PyTorch network's device prevails
            loaded = self.pinn.runner.load(threads)
            self.record.compute, self.record.xla = {**self.record.compute, **loaded.compute}, dict(loaded.xla)
        self._step("tracking")
        self.tracker = tracking.Tracker(tracking.absolute_uri(self.spec.tracking.uri, self.job.launch_dir),
                                        self.spec.tracking.experiment)
        self._start_tracking()
        self._step("data")
        data = self._load_data()
        start = None
        if loaded is not None:
            self._step("pinn")
            source = " + ".join(display_path(path, self.job.launch_dir) for path in self.data_files)
            start = self.pinn.start(loaded.workflow, data, source)
        self._step("reconstruction")
        settings = self.settings
        result = iterative.reconstruct(data, iterative.IterativeSpec(
            engine=settings.engine.value, epochs=settings.epochs, learning_rate=settings.learning_rate,
            batch_size=settings.batch_size, seed=settings.seed,
        ), on_epoch=lambda epoch, loss: self.tracker.log_metrics({"loss": loss}, step=epoch), start=start)
        log.info("%s %s: %d epochs in %.1f s, final loss %.4g", iterative.DISTRIBUTION, settings.engine.value,
                 len(result.loss_history), result.seconds, result.loss_history[-1])
        self._step("bundle")
        stats, quality = self._write_outputs(data, result)
        self.outcome_lines = [
            *(self.pinn.lines(self.job.launch_dir) if self.pinn else []),
            f"  reconstruction  {iterative.DISTRIBUTION} {settings.engine.value}, {len(result.loss_history)} epochs, "
            f"{data.n_images} positions, {result.seconds:.1f} s ({result.cpu_seconds:.1f} s CPU)",
            "  quality         " + (quality_line(quality) if quality else "not measured (no objectGuess)"),
        ]
        if self.pinn is not None:
            self.outcome_lines.append(f"  total           {self.pinn.seconds + result.seconds:.1f} s (network "
                                      f"{self.pinn.seconds:.1f} s, iterations {result.seconds:.1f} s)")
        warnings = [*(self.pinn.warnings() if self.pinn else []), *filter(None, [quality_warning(quality)])]
        self.record.quality_warning = "; ".join(warnings) or None
        self.outcome_lines += [f"  WARNING         {warning}" for warning in warnings]
        self._step("tracking results")
        self._log_results(stats, quality, result)
        self._step("hub")
        outcome.mark_green(self.record, self.slot, self.lock_timeout_s)
        self._step("tracking end")
        self._end_tracking(green=True)
        self.record.save(self.outcome_path)

    def _check_disk(self) -> None:
        """The disk pre-flight (``runners.process.diskfull.JobSpace``, as in C1): the dataset cache when it is to be
        made, reconstruction.npz (the stitched canvas and cdtools' object), the bundle and the logs in the
        slot, the run's rows in a SQLite store, against each file system's free space; then space set
        aside for the evidence on the hub's and the store's file systems."""
        launch, slot = self.job.launch_dir, self.slot
        needs = []
        found = data_disk_needs(self.spec, launch)
        if found is not None:  # data files that cannot be read: the data step reports them
            N, canvas, needs = found
            outputs = disk_preflight.reconstruction_outputs(slot.run_dir, slot.bundle_dir, slot.cli_log.parent, N=N,
                                                            canvas_px=canvas, setting="hub.root")
            outputs.append(disk_preflight.DiskNeed("reconstructed object", slot.run_dir, canvas**2 * 8, "hub.root"))
            if self.pinn is not None:  # the network's reconstruction and bundle
                outputs += disk_preflight.reconstruction_outputs(self.pinn.run_dir, self.pinn.bundle_dir,
                                                                 slot.cli_log.parent, N=N, canvas_px=canvas,
                                                                 setting="hub.root")[:2]
            needs = needs + within_memory(outputs) + store_disk_needs(self.spec, launch)
        self.space.claim(needs, [slot.dir, *store_folder(self.spec, launch)],
                         [slot.run_dir, slot.bundle_dir.parent])

    def _start_tracking(self) -> None:
        spec, record = self.spec, self.record
        tags = {"backend": BACKEND, "phase": "c3", "phase_variant": self.settings.variant, "slot": self.slot.name,
                "engine": self.settings.engine.value, "git_commit": record.git_commit, "status": record.status,
                "init": self.settings.init.value, **(self.pinn.tags() if self.pinn else {}),
                **{f"compute.{key}": value for key, value in record.compute.items()}}
        run_id = self.tracker.start(self.slot.name, tags, self.job.parent_run_id)
        record.mlflow = {"run_id": run_id, "experiment": spec.tracking.experiment, "tracking_uri": self.tracker.uri,
                         "ui": self.tracker.run_link()}
        if self.job.parent_run_id:
            record.mlflow["parent_run_id"] = self.job.parent_run_id
        record.save(self.outcome_path)
        self._describe_run()
        config = OmegaConf.to_container(OmegaConf.structured(spec), enum_to_str=True)
        self.tracker.log_params(tracking.flatten(config))

    def _load_data(self):
        """The data files the positions need, loaded, validated and logged; the data to reconstruct."""
        paths = dict(zip(("train", "test"), dataset_files(self.spec, self.job.launch_dir)))
        return self._load_positions(paths, self.settings.positions, "c3.positions")

    def _write_outputs(self, data, result) -> tuple[dict, dict]:
        """reconstruction.npz, history.json and the debug bundle; (stats.json content, quality)."""
        from ptycho.evaluation import bundle
        from ptycho import iterative, stitching
        from ptycho.evaluation.quality import floor_comparison

        stitched = iterative.stitched(result, data)
        quality, truth = {}, (None, None)
        if data.has_ground_truth:
            quality = stitching.stitched_quality(stitched, data.object_guess)
            constant = np.where(stitched.covered, iterative.constant_amplitude(data.diffraction, data.probe), 0)
            floor = stitching.stitched_quality(replace(stitched, canvas=constant.astype(np.complex64)),
                                               data.object_guess)
            quality.update(floor_comparison(quality, floor))
            truth = stitching.ground_truth_window(data.object_guess, stitched)
        run_dir = self.slot.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez(run_dir / RECONSTRUCTION_FILE, canvas=stitched.canvas, covered=stitched.covered,
                 offsets_xy=stitched.offsets_xy, centre_xy=stitched.centre_xy, crop=stitched.crop,
                 object=result.obj, origin_rc=np.asarray(result.origin_rc))
        hub.atomic_write_text(run_dir / HISTORY_FILE, json.dumps({"loss": list(result.loss_history)}, indent=2))
        timings = {"reconstruction_s": result.seconds, "reconstruction_cpu_s": result.cpu_seconds}
        if self.pinn is not None:
            timings.update(self.pinn.timings(result.seconds))
        hub.atomic_write_text(run_dir / TIMINGS_FILE, json.dumps(timings, indent=2))
        about = {"library": f"{iterative.DISTRIBUTION} {result.version}", "engine": self.settings.engine.value,
                 "epochs": len(result.loss_history), "final_loss": result.loss_history[-1],
                 "n_positions": data.n_images}  # no wall times: the same job gives the same stats.json sha1
        if self.pinn is not None:
            about.update({"init": self.settings.init.value, "network_stats_sha1": self.pinn.result.stats_sha1,
                          "network_quality": self.pinn.result.quality})
        bundle.write_debug_bundle(
            self.slot.bundle_dir, iterative.object_patches(result, data), stitched.offsets_xy, stitched.canvas,
            canvas_mask=stitched.covered, intensity_scale=1.0, history={"loss": list(result.loss_history)},
            ground_truth=truth[0], ground_truth_mask=truth[1], extra_stats={"quality": quality, "iterative": about},
        )
        self.record.stats_sha1 = bundle.stats_sha1(self.slot.bundle_dir)
        return bundle.read_bundle_stats(self.slot.bundle_dir), quality

    def _log_results(self, stats: dict, quality: dict, result) -> None:
        self.tracker.log_metrics({
            **tracking.numeric_leaves({k: v for k, v in stats.items() if k not in BUNDLE_DUPLICATES}, "bundle."),
            **tracking.numeric_leaves(quality, "quality."),
            "timing.reconstruction_s": result.seconds, "timing.reconstruction_cpu_s": result.cpu_seconds,
            "n_positions": float(self.record.parameters["n_positions"]),
            **(self.pinn.metrics(result.seconds) if self.pinn else {}),
        })
        network_warnings = self.pinn.warnings() if self.pinn else []
        self.tracker.set_tags({"stats_sha1": self.record.stats_sha1, "library_version": result.version,
                               **warning_tags(self.record),
                               **({"network_warning": "; ".join(network_warnings)} if network_warnings else {})})
        if self.spec.tracking.log_artifacts:
            self.tracker.log_artifacts(self.slot.bundle_dir, "bundle")
            if self.pinn is not None:
                self.tracker.log_artifacts(self.pinn.bundle_dir, "pinn_bundle")
            self.tracker.log_artifacts(self.slot.run_dir / HISTORY_FILE, "run")
            self.tracker.log_artifacts(self.job.output_dir / ".hydra", "hydra")

    def _end_tracking(self, green: bool) -> None:
        if not green and self.tracker.run_id is None:  # failed before its MLflow run started: nothing to close
            return
        blocker = {"blocker": self.record.blocker} if self.record.blocker else {}
        self.tracker.set_tags({"status": self.record.status, **blocker})
        if not green:
            self.tracker.rename(f"{self.slot.name} [{self.record.status}]")
        self._describe_run()
        # the CLI log follows when it is complete (execute)
        self.space.end_run(self.tracker, green, {"status": self.record.status, "blocker": self.record.blocker or "-",
                                                 "error": self.record.error or "-"})

"""Reconstruct with a trained network (``python -m runners.phase reconstruct=trained reconstruct.network=<...>``).

The network of a C1 run (``runners.inputs.networks.find_network``: an MLflow run id, a hub slot or a
folder holding its card) is applied to any dataset the runner loads (``dataset=``: simulated, lines,
NPZ files, CXI): groups of every position, scaled with the network's own intensity scale, predicted,
stitched, with quality against ``objectGuess`` when the data carry it (``ptycho.pipeline.reconstruct_job``).
The backend is the network's (its card's), not the ``backend=`` default; an explicit ``backend=`` that
differs is a config error. The evidence is every phase's: the debug bundle, an MLflow run, the
inventory section and summary entry, or a blocker. Data the network cannot serve (another N, probe
shape) block the run at its data step with the mismatch named; data it can serve but did not train
on (photon scale, probe) give a warning in the closing block, the section and the MLflow tags.

Order of work (:class:`ReconstructRun`): disk pre-flight, imports, the MLflow run, the network (its
card and probe), the data, the reconstruction, MLflow results, hub. Slot
``<tag>_reconstruct/phase_reconstruct_<variant>[__<sweep suffix>]`` (``hub.slot`` replaces it):
``run_<variant>/reconstruction.npz`` (the canvas, ``covered``, ``centre_xy``, ``origin_xy`` and
``pixel_size_m``: ``ptycho.pipeline.reconstruct_job``), ``network.json`` (the card applied),
``timings.json``; ``analysis/forward_parity_debug_<tag>/`` (the bundle and its PNGs).
"""
from __future__ import annotations

import json
import shutil

from omegaconf import OmegaConf

from ptycho import disk_preflight
from ptycho.network import CARD_FILE
from ptycho.pipeline import RECONSTRUCTION_FILE
from runners import tracking
from runners.evidence import PhaseRecord, quality_warning, warning_tags
from runners.evidence import hub, outcome
from runners.evidence.outcome import PhaseConfigError, display_path
from runners.job import JobContext
from runners.inputs import cxi as cxi_input
from runners.phases.backends import CONF_DIR, network_backend, runner_backend
from runners.phases.base import PhaseRun, running_record, slot_name
from runners.phases.c1_start import run_in_fresh_process
from runners.phases.closing import mlflow_lines, quality_line
from runners.inputs.datasets import dataset_files
from runners.phases.disk import data_disk_needs, store_disk_needs, store_folder, within_memory
from runners.inputs.networks import NetworkNotFound, find_network
from runners.process import xla
from runners.process.tee import framework_chatter
from runners.dataset_schema import DataFormat
from runners.schema import BackendConfig, PhaseConfig

GUARD_NAME = "reconstruct"  # names the blocker files; no guard test runs before a reconstruction
TIMINGS_FILE = "timings.json"
BUNDLE_DUPLICATES = ("quality",)  # stats.json sections logged under their own names


def _backend_label(tag: str) -> str:
    """The label (``TF``, ``PyTorch``) of the ``backend`` group's option whose tag is ``tag``."""
    for path in sorted((CONF_DIR / "backend").glob("*.yaml")):
        option = OmegaConf.load(path)
        if option.tag == tag:
            return option.label
    return tag


def reconstruct_slot(spec: PhaseConfig, job: JobContext, backend: BackendConfig) -> hub.HubSlot:
    """``<tag>_reconstruct/phase_reconstruct_<variant>`` with C1's rules (``hub.slot``, sweep suffix)."""
    variant = spec.reconstruct.variant
    stem = f"phase_reconstruct_{variant}"
    name = slot_name(spec, job, f"{backend.tag}_reconstruct/{stem}")
    return hub.resolve_slot(job.launch_dir / spec.hub.root, name, tag=backend.tag, phase_stem=stem, variant=variant,
                            guard_name=GUARD_NAME, log_verb="reconstruct")


def _located(spec: PhaseConfig, job: JobContext):
    """(the network, read back: ``ptycho.network.TrainedNetwork``; its BackendConfig), or ValueError
    naming the key."""
    from ptycho.network import NetworkError, load_network

    folder = find_network(spec.reconstruct.network, launch_dir=job.launch_dir,
                          hub_root=job.launch_dir / spec.hub.root,
                          tracking_uri=tracking.absolute_uri(spec.tracking.uri, job.launch_dir),
                          download_to=job.output_dir / "network_download")
    try:
        trained = load_network(folder)
    except NetworkError as exc:
        raise NetworkNotFound(f"reconstruct.network: {exc}") from exc
    return trained, network_backend(spec, job, trained.backend)


def slot_of(spec: PhaseConfig, job: JobContext) -> hub.HubSlot:
    """The job's slot (the post-hook's view): the network's backend names it."""
    return reconstruct_slot(spec, job, _located(spec, job)[1])


def new_record(spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, env: dict[str, str]) -> PhaseRecord:
    """The RUNNING record of a reconstruction (``slot.tag`` names the network's backend)."""
    settings = spec.reconstruct
    label = _backend_label(slot.tag)
    shown = {"cli_log": slot.cli_log, "bundle": slot.bundle_dir, "run_dir": slot.run_dir}
    parameters = {"network": settings.network, "positions": settings.positions.value}
    return running_record(job, slot, f"Reconstruction — {label} {settings.title}", env, parameters, shown,
                          guard="NOT RUN (no guard for a reconstruction with a trained network)")


def run_reconstruct(spec: PhaseConfig, job: JobContext) -> PhaseRecord:
    """Run the reconstruction for ``spec``; the GREEN record, or PhaseBlocked/PhaseConfigError."""
    try:
        trained, backend = _located(spec, job)
        slot = reconstruct_slot(spec, job, backend)
        runner = runner_backend(backend)
        runner.check_installed()
    except ValueError as exc:
        raise PhaseConfigError(str(exc)) from exc
    if job.parent is None and runner.needs_fresh_process():
        return run_in_fresh_process(job, slot)
    return ReconstructRun(spec, job, slot, trained, backend).execute()


class ReconstructRun(PhaseRun):
    """One reconstruction with a trained network (see the module docstring for the order of work)."""

    def __init__(self, spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, trained, backend: BackendConfig):
        super().__init__(spec, job, slot, new_record(spec, job, slot, {}))
        self.settings, self.trained = spec.reconstruct, trained
        self.backend = runner_backend(backend)
        self.outcome_lines: list[str] = []  # printed above the GREEN line
        self._describe_network()

    def _green_text(self) -> str:
        return "\n".join([*self.outcome_lines, super()._green_text()])

    def _dropped_lines(self):
        return None if xla.framework_log_shown(self.spec.verbose) else framework_chatter

    def _run(self) -> None:
        self._step("disk pre-flight")
        self._check_disk()
        self._step("imports")
        from ptycho import determinism

        loaded = self.backend.load(determinism.resolve_threads(self.spec.threads))
        self.record.compute, self.record.xla = loaded.compute, dict(loaded.xla)
        self._step("tracking")
        self.tracker = tracking.Tracker(tracking.absolute_uri(self.spec.tracking.uri, self.job.launch_dir),
                                        self.spec.tracking.experiment, self.spec.tracking.timeout_s,
                                        self._tracking_failed)
        trained = self.trained
        self._start_tracking(trained)
        self._step("data")
        data, pixel_size_m = self._load_data()
        self._step("reconstruction")
        result = loaded.workflow.reconstruct(trained, data, run_dir=self.slot.run_dir,
                                             bundle_dir=self.slot.bundle_dir, source=self._source(),
                                             pixel_size_m=pixel_size_m, **self.backend.job_options())
        self.bundle_written = True
        self.record.stats_sha1 = result.stats_sha1
        shutil.copyfile(trained.folder / CARD_FILE, self.slot.run_dir / CARD_FILE)
        hub.atomic_write_text(self.slot.run_dir / TIMINGS_FILE, json.dumps(result.timings_s, indent=2) + "\n")
        self._summarise(trained, data, result)
        self._step("tracking results")
        self._log_results(result)
        self._step("hub")
        outcome.mark_green(self.record, self.slot, self.lock_timeout_s)
        self._step("tracking end")
        self._end_tracking(green=True)
        self.record.save(self.outcome_path)

    def _check_disk(self) -> None:
        """The disk pre-flight (as C3's): the dataset cache when it is to be made, reconstruction.npz, the
        bundle and the logs in the slot, the run's rows in a SQLite store."""
        launch, slot = self.job.launch_dir, self.slot
        needs = []
        found = data_disk_needs(self.spec, launch)
        if found is not None:
            N, canvas, needs = found
            outputs = disk_preflight.reconstruction_outputs(slot.run_dir, slot.bundle_dir, slot.cli_log.parent, N=N,
                                                            canvas_px=canvas, setting="hub.root")
            needs = needs + within_memory(outputs) + store_disk_needs(self.spec, launch)
        self.space.claim(needs, [slot.dir, *store_folder(self.spec, launch)], [slot.run_dir, slot.bundle_dir.parent])

    def _describe_network(self) -> None:
        """The record's parameters name the network: its backend, N, gridsize, folder, C1 run and slot."""
        trained = self.trained
        provenance = trained.card.get("provenance", {})
        self.record.parameters.update({
            "network_backend": trained.backend, "N": trained.spec.N, "gridsize": trained.spec.gridsize,
            "network_folder": display_path(trained.folder, self.job.launch_dir),
            "network_run_id": provenance.get("mlflow_run_id", "-"), "network_slot": provenance.get("slot", "-"),
        })

    def _start_tracking(self, trained) -> None:
        spec, record = self.spec, self.record
        provenance = trained.card.get("provenance", {})
        tags = {"backend": trained.backend, "phase": spec.phase.value, "phase_variant": self.settings.variant,
                "slot": self.slot.name, "xla_mode": spec.xla.mode.value, "gridsize": trained.spec.gridsize,
                "git_commit": record.git_commit, "status": record.status,
                "network.reference": self.settings.network, "network.run_id": provenance.get("mlflow_run_id", "-"),
                "network.slot": provenance.get("slot", "-"),
                **{f"compute.{key}": value for key, value in record.compute.items()}}
        run_id = self.tracker.start(self.slot.name, tags, self.job.parent_run_id)
        found = {"run_id": run_id, "experiment": spec.tracking.experiment, "tracking_uri": self.tracker.uri,
                 "ui": self.tracker.run_link()}
        record.mlflow = {key: value for key, value in found.items() if value}
        if self.job.parent_run_id:
            record.mlflow["parent_run_id"] = self.job.parent_run_id
        record.save(self.outcome_path)
        self._describe_run()
        config = OmegaConf.to_container(OmegaConf.structured(spec), enum_to_str=True)
        self.tracker.log_params(tracking.flatten(config))

    def _load_data(self):
        """The data to reconstruct, loaded, validated and logged; (data, object pixel size in m or None)."""
        pixel_size_m = None
        if self.spec.dataset.format is DataFormat.cxi:
            inputs = cxi_input.prepare(self.spec, self.job.launch_dir)
            self.log.info("%s", inputs.text())
            paths, pixel_size_m = dict(zip(("train", "test"), inputs.paths)), inputs.reports[1].object_pixel_m
        else:
            paths = dict(zip(("train", "test"), dataset_files(self.spec, self.job.launch_dir)))
        return self._load_positions(paths, self.settings.positions, "reconstruct.positions"), pixel_size_m

    def _source(self) -> str:
        return " + ".join(display_path(path, self.job.launch_dir) for path in self.data_files)

    def _summarise(self, trained, data, result) -> None:
        """The record's warnings and the lines above the GREEN line."""
        warnings = [*result.warnings, *filter(None, [quality_warning(result.quality)])]
        self.record.quality_warning = "; ".join(warnings) or None
        seconds = sum(result.timings_s.get(key, 0.0) for key in ("data_prep", "load", "inference", "stitching"))
        reconstruction = display_path(self.slot.run_dir / RECONSTRUCTION_FILE, self.job.launch_dir)
        self.outcome_lines = [
            f"== {self.record.title} ==",
            f"  network         {display_path(trained.folder, self.job.launch_dir)} "
            f"({trained.backend}, N={trained.spec.N}, gridsize={trained.spec.gridsize})",
            f"  reconstruction  {data.n_images} positions, {result.n_groups} groups in {seconds:.1f} s "
            "(grouping, loading the network, inference, stitching)",
            "  quality         " + (quality_line(result.quality) if result.quality
                                     else "not measured (no objectGuess)"),
            *[f"  WARNING         {warning}" for warning in warnings],
            f"  object          {reconstruction} (canvas, origin_xy, pixel_size_m)",
            f"  bundle          {self.record.paths['bundle']}",
        ]
        if self.record.mlflow.get("run_id"):
            self.outcome_lines += mlflow_lines(self.record, self.tracker)

    def _log_results(self, result) -> None:
        self.tracker.log_metrics({
            **tracking.numeric_leaves({k: v for k, v in result.bundle_stats.items() if k not in BUNDLE_DUPLICATES},
                                      "bundle."),
            **tracking.numeric_leaves(result.quality, "quality."),
            **{f"timing.{key}_s": value for key, value in result.timings_s.items()},
            "n_positions": float(self.record.parameters["n_positions"]),
        })
        self.tracker.set_tags({"stats_sha1": self.record.stats_sha1, **warning_tags(self.record),
                               **({"network_warning": "; ".join(result.warnings)} if result.warnings else {})})
        if self.spec.tracking.log_artifacts:
            self.tracker.log_artifacts(self.slot.bundle_dir, "bundle")
            self.tracker.log_artifacts(self.slot.run_dir / CARD_FILE, "network")
            self.tracker.log_artifacts(self.job.output_dir / ".hydra", "hydra")

    def _end_tracking(self, green: bool) -> None:
        if not green and (self.tracker is None or self.tracker.run_id is None):
            return
        blocker = {"blocker": self.record.blocker, "error": self.record.error or "-"} if self.record.blocker else {}
        self.tracker.set_tags({"status": self.record.status, **blocker})
        if not green:
            self.tracker.rename(f"{self.slot.name} [{self.record.status}]")
        self._describe_run()
        self.space.end_run(self.tracker, green, {"status": self.record.status, "blocker": self.record.blocker or "-",
                                                 "error": self.record.error or "-"})

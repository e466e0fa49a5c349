"""Phase C3 started from a trained network's object (``c3.init=pinn``, ``c3.network``).

The network is found as the reconstruct phase finds its own (``runners.inputs.networks.find_network``,
errors naming ``c3.network``) and applied to the C3 data with ``ptycho.pipeline.reconstruct_job``
through its backend's workflow (the same checks: data it cannot serve raise the mismatch, data far
from its training data give warnings). Its stitched object goes onto the solver's grid with
``ptycho.iterative.start_from_canvas``. :class:`NetworkStart` holds what the C3 record, its MLflow
run and its closing block say of it: the network, its own quality and the seconds of its part
(PINN_STEPS and the placing; its bundle is evidence, not counted).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from ptycho.network import CARD_FILE
from ptycho.pipeline import RECONSTRUCTION_FILE
from runners import tracking
from runners.evidence import hub
from runners.evidence.outcome import display_path
from runners.inputs.networks import NetworkNotFound, find_network
from runners.job import JobContext
from runners.phases.backends import RunnerBackend, network_backend, runner_backend
from runners.phases.closing import quality_line
from runners.schema import PhaseConfig

NETWORK_KEY = "c3.network"
FOLDER = "pinn"  # run_<variant>/pinn/: the network's reconstruction.npz and network.json
BUNDLE = "forward_parity_debug_pinn"  # beside the slot's bundle
PINN_STEPS = ("data_prep", "load", "inference", "stitching")  # reconstruct_job's timings the network's part counts


def pinn_network(spec: PhaseConfig, job: JobContext) -> tuple:
    """(the network ``c3.network`` names, ``ptycho.network.TrainedNetwork``; the runner's side of its
    backend, installed), or ValueError naming ``c3.network``."""
    from ptycho.network import NetworkError, load_network

    folder = find_network(spec.c3.network, launch_dir=job.launch_dir, hub_root=job.launch_dir / spec.hub.root,
                          tracking_uri=tracking.absolute_uri(spec.tracking.uri, job.launch_dir),
                          download_to=job.output_dir / "network_download", key=NETWORK_KEY)
    try:
        trained = load_network(folder)
    except NetworkError as exc:
        raise NetworkNotFound(f"{NETWORK_KEY}: {exc}") from exc
    runner = runner_backend(network_backend(spec, job, trained.backend))
    runner.check_installed()
    return trained, runner


class NetworkStart:
    """The network of one C3 job with ``c3.init=pinn``; ``result`` and ``seconds`` once :meth:`start` ran."""

    def __init__(self, trained, runner: RunnerBackend, slot: hub.HubSlot, reference: str):
        self.trained, self.runner, self.reference = trained, runner, reference
        self.run_dir = slot.run_dir / FOLDER
        self.bundle_dir = slot.bundle_dir.with_name(BUNDLE)
        self.result = None  # ptycho.pipeline.Reconstruction
        self.seconds = 0.0

    @property
    def provenance(self) -> dict:
        return self.trained.card.get("provenance", {})

    def parameters(self, launch_dir: Path) -> dict:
        """The record's parameters naming the network: its backend, N, gridsize, folder, C1 run and slot."""
        trained = self.trained
        return {"network_backend": trained.backend, "N": trained.spec.N, "gridsize": trained.spec.gridsize,
                "network_folder": display_path(trained.folder, launch_dir),
                "network_run_id": self.provenance.get("mlflow_run_id", "-"),
                "network_slot": self.provenance.get("slot", "-")}

    def tags(self) -> dict[str, str]:
        return {"network.reference": self.reference, "network.backend": self.trained.backend,
                "network.run_id": self.provenance.get("mlflow_run_id", "-"),
                "network.slot": self.provenance.get("slot", "-")}

    def warnings(self) -> list[str]:
        """Data far from the network's training data (``ptycho.network.check_serves``)."""
        return list(self.result.warnings) if self.result is not None else []

    def start(self, workflow, data, source: str) -> np.ndarray:
        """The network applied to ``data`` (named ``source``; its reconstruction.npz and bundle in the slot),
        its stitched object placed on the solver's grid: the initial object (H, W) complex64."""
        from ptycho import iterative

        self.result = workflow.reconstruct(self.trained, data, run_dir=self.run_dir, bundle_dir=self.bundle_dir,
                                           source=source, **self.runner.job_options())
        shutil.copyfile(self.trained.folder / CARD_FILE, self.run_dir / CARD_FILE)
        clock = time.perf_counter()
        with np.load(self.run_dir / RECONSTRUCTION_FILE) as saved:
            start = iterative.start_from_canvas(data, saved["canvas"], saved["covered"], saved["centre_xy"])
        self.seconds = sum(self.result.timings_s.get(key, 0.0) for key in PINN_STEPS) + time.perf_counter() - clock
        return start

    def lines(self, launch_dir: Path) -> list[str]:
        """The closing block's lines of the network's part."""
        trained, quality = self.trained, self.result.quality
        return [
            f"  initial guess   network {display_path(trained.folder, launch_dir)} ({trained.backend}, "
            f"N={trained.spec.N}, gridsize={trained.spec.gridsize}): {self.result.n_groups} groups in "
            f"{self.seconds:.1f} s (grouping, loading the network, inference, stitching, placing)",
            "  network alone   " + (quality_line(quality) if quality else "no quality (no objectGuess)"),
        ]

    def timings(self, iterations_s: float) -> dict:
        """timings.json's entries of the network's part."""
        return {"pinn_s": self.seconds, "total_s": self.seconds + iterations_s, "pinn_steps_s": self.result.timings_s}

    def metrics(self, iterations_s: float) -> dict[str, float]:
        """Its seconds, the whole time and its object's quality alone (``pinn.quality.*``)."""
        return {"timing.pinn_s": self.seconds, "timing.total_s": self.seconds + iterations_s,
                **tracking.numeric_leaves(self.result.quality, "pinn.quality.")}

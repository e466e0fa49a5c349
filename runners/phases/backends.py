"""The runner's side of each backend: what a C1 job does differently on TensorFlow and on PyTorch.

The core's steps are the same for both (``ptycho.pipeline.JobBackend``, filled in by
``ptycho.tf.workflow`` and ``ptycho.torch.workflow``). What differs around them is here, one
class per backend: how the framework is imported and set up (TensorFlow under the job's XLA
environment, which is recorded; PyTorch with its device), the training callbacks' base class,
the options ``run_phase_job`` takes besides the shared ones, and whether the job must run in a
fresh process. :func:`runner_backend` picks the class of ``backend.name``.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from omegaconf import OmegaConf

from ptycho import determinism
from runners.phases.callbacks import keras_base
from runners.process import xla
from runners.job import JobContext
from runners.schema import Backend, BackendConfig, PhaseConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass(frozen=True)
class LoadedBackend:
    """A backend once imported: its workflow module (``run_phase_job``), the determinism settings in
    force (``ptycho.determinism``) and the XLA state TensorFlow was imported under (empty for PyTorch)."""

    workflow: ModuleType
    compute: dict[str, str]
    xla: dict[str, str]


class RunnerBackend:
    """What every backend shares; a subclass per backend fills in the rest."""

    def __init__(self, config: BackendConfig):
        self.config = config

    def check_installed(self) -> None:
        """The backend's workflow module (``run_phase_job``) must be installed; ValueError naming it if not."""
        try:
            found = importlib.util.find_spec(self.config.workflow) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ValueError(
                f"backend.workflow: module {self.config.workflow!r} (backend={self.config.name.value}) "
                "is not installed in this environment"
            )

    def needs_fresh_process(self) -> bool:
        """True when this process cannot run the job as configured (it then runs in a fresh one)."""
        return False

    def load(self, threads: int) -> LoadedBackend:
        """Import and set up the framework for ``threads`` CPU threads; the workflow module."""
        raise NotImplementedError

    def callback_base(self) -> type:
        """The base class of the runner's training callbacks (``runners.phases.callbacks``)."""
        return object

    def job_options(self) -> dict:
        """``run_phase_job``'s options of this backend alone."""
        return {}


class TensorFlowBackend(RunnerBackend):
    """TensorFlow reads its XLA variables once, at import: it is imported inside the job (under the
    job's ``hydra.job.env_set``) and a job whose XLA environment differs from the one TensorFlow was
    loaded under runs in a fresh process (``runners.process.xla``)."""

    def needs_fresh_process(self) -> bool:
        return xla.needs_isolation()

    def load(self, threads: int) -> LoadedBackend:
        state = xla.import_tensorflow()
        compute = determinism.configure_tensorflow(threads)
        return LoadedBackend(importlib.import_module(self.config.workflow), compute, state)

    def callback_base(self) -> type:
        return keras_base()


class TorchBackend(RunnerBackend):
    """PyTorch trains and predicts on ``backend.device``, checked when it is set up (before any work)."""

    def load(self, threads: int) -> LoadedBackend:
        compute = determinism.configure_torch(threads, self.config.device)  # before torch loads (OpenMP)
        return LoadedBackend(importlib.import_module(self.config.workflow), compute, {})

    def job_options(self) -> dict:
        return {"device": self.config.device}


RUNNER_BACKENDS: dict[Backend, type[RunnerBackend]] = {
    Backend.tensorflow: TensorFlowBackend,
    Backend.pytorch: TorchBackend,
}


def runner_backend(config: BackendConfig) -> RunnerBackend:
    """The runner's side of ``config.name``'s backend."""
    return RUNNER_BACKENDS[config.name](config)


def network_backend(spec: PhaseConfig, job: JobContext, backend: str) -> BackendConfig:
    """The BackendConfig of the network's ``backend``: the composed one when it is that backend, else the
    ``backend`` group's option of that name; ValueError when ``backend=`` was chosen and differs."""
    if spec.backend.name.value == backend:
        return spec.backend
    chosen = [o.split("=", 1)[1] for o in job.overrides if o.lstrip("+~").split("=", 1)[0] == "backend"]
    if chosen:
        raise ValueError(f"backend: the network was trained on {backend}, but backend={chosen[-1]} was chosen "
                         f"(leave backend= out: a network runs on its own backend)")
    option = OmegaConf.load(CONF_DIR / "backend" / f"{backend}.yaml")
    return BackendConfig(name=Backend(backend), label=option.label, tag=option.tag, workflow=option.workflow)

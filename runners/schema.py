"""Typed schema of the phase runner's config (runners/conf/phase.yaml), registered in Hydra's ConfigStore.

The dataclasses make composition strict: an unknown key or a wrong type fails while Hydra
composes. Range and cross-field checks run in ``__post_init__`` when :func:`to_spec` turns
the composed config into objects; they raise ``ValueError`` whose message starts with the
dotted key (``c1.gridsize: ...``) and says what is allowed. Checks that need the dataset
itself (how many scan positions a file holds) are in ``runners.inputs.datasets.check_dataset_size``. The dataset
group's schema is ``runners.dataset_schema``.

A setting the core also has takes its default from the core's dataclass (``ModelSpec``,
``TrainSpec``, ``GroupingSpec``, ``IterativeSpec``), so the runner and the library cannot
disagree; the options in runners/conf/ restate some of them (tests/runner/test_runner_config.py
checks that they agree).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from ptycho.architecture import OVERLAP_MODES
from ptycho.evaluation.compare import DEFAULT_TOLERANCE
from ptycho.iterative import IterativeSpec
from ptycho.pipeline import STITCH_SOURCES
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.stitching import PHASE_OFFSETS
from ptycho.torch.device import DEVICE_NAMES, check_device_name
from runners.dataset_schema import DatasetConfig

INITIATIVE_ID = "FIX-PYTORCH-FORWARD-PARITY-001"


class Backend(str, Enum):
    tensorflow = "tensorflow"
    pytorch = "pytorch"


class XlaMode(str, Enum):
    on = "on"
    off = "off"


class PhaseKind(str, Enum):
    """Phase kinds the runner dispatches on (``runners.phases.registry.PHASE_RUNNERS``)."""

    c1 = "c1"
    c2 = "c2"
    c3 = "c3"
    reconstruct = "reconstruct"


class IterativeEngine(str, Enum):
    """cdtools reconstructors of Phase C3 (``ptycho.iterative.ENGINES``)."""

    lbfgs = "lbfgs"
    adam = "adam"


class C3Init(str, Enum):
    """Phase C3's initial object: the flat start, or a trained network's stitched reconstruction."""

    flat = "flat"
    pinn = "pinn"


class PositionSet(str, Enum):
    """Which scan positions Phase C3 reconstructs: the test file's, the train file's, or both."""

    test = "test"
    train = "train"
    all = "all"


def _require(ok: bool, key: str, allowed: str, got: object) -> None:
    if not ok:
        raise ValueError(f"{key}: must be {allowed}; got {got!r}")


@dataclass
class BackendConfig:
    """The core a phase runs on: ``workflow`` is the module holding ``run_phase_job``.

    ``device``: where the PyTorch backend trains and predicts (``ptycho.torch.device``: cpu,
    cuda, cuda:<index>, auto); a GPU that is named but missing blocks the run at its imports.
    TensorFlow places its ops itself, so it takes only ``cpu``.
    """

    name: Backend = MISSING
    label: str = MISSING
    tag: str = MISSING
    workflow: str = MISSING
    device: str = "cpu"

    def __post_init__(self) -> None:
        _require(self.tag.isidentifier(), "backend.tag", "a short identifier (used in file names)", self.tag)
        _require(_is_device_name(self.device), "backend.device", "one of " + ", ".join(DEVICE_NAMES), self.device)
        _require(self.name != Backend.tensorflow or self.device == "cpu", "backend.device",
                 "cpu for backend=tensorflow (TensorFlow places its ops itself)", self.device)


def _is_device_name(name) -> bool:
    try:
        check_device_name(name)
    except ValueError:
        return False
    return True


@dataclass
class XlaConfig:
    mode: XlaMode = MISSING


@dataclass
class ModelConfig:
    """The trainable settings of ``ptycho.spec.ModelSpec``, with its defaults."""

    n_filters_scale: int = ModelSpec.n_filters_scale
    object_big: bool = ModelSpec.object_big
    probe_mask: bool = ModelSpec.probe_mask
    intensity_scale_trainable: bool = ModelSpec.intensity_scale_trainable
    nll_weight: float = ModelSpec.nll_weight
    mae_weight: float = ModelSpec.mae_weight
    realspace_weight: float = ModelSpec.realspace_weight
    diffraction_mae_weight: float = ModelSpec.diffraction_mae_weight
    learning_rate: float = ModelSpec.learning_rate
    overlap: str = ModelSpec.overlap  # how a group's patches are averaged in the forward model (ptycho.architecture.OVERLAP_MODES)
    refine_probe: bool = ModelSpec.refine_probe  # train the probe with the network, at the given probe's energy
    probe_learning_rate_factor: float = ModelSpec.probe_learning_rate_factor  # how fast the refined probe moves

    def __post_init__(self) -> None:
        _require(self.n_filters_scale >= 1, "c1.model.n_filters_scale", ">= 1", self.n_filters_scale)
        _require(self.overlap in OVERLAP_MODES, "c1.model.overlap", f"one of {', '.join(OVERLAP_MODES)}",
                 self.overlap)
        _require(self.learning_rate > 0, "c1.model.learning_rate", "> 0", self.learning_rate)
        _require(self.probe_learning_rate_factor > 0, "c1.model.probe_learning_rate_factor", "> 0",
                 self.probe_learning_rate_factor)
        for key in ("nll_weight", "diffraction_mae_weight", "mae_weight", "realspace_weight"):
            _require(getattr(self, key) >= 0, f"c1.model.{key}", ">= 0", getattr(self, key))


@dataclass
class C1Config:
    """Phase C1: train, infer, stitch and bundle one baseline. ``variant`` names the slot.

    ``memory_budget_gb``: the job's memory limit for the data step's pre-flight
    (``ptycho.preflight``), which refuses before loading the data when the estimated peak
    exceeds it; null: 75% of the memory available when the job starts.
    """

    variant: str = MISSING
    title: str = MISSING
    n_images: Optional[int] = GroupingSpec.n_images
    n_groups: Optional[int] = MISSING  # null: one group seeded at every training position
    batch_size: int = MISSING
    gridsize: int = MISSING
    neighbor_count: int = MISSING
    max_epochs: int = MISSING
    do_stitching: bool = True
    phase_offsets: str = "com"  # how stitching sets each patch's own phase offset (ptycho.stitching.PHASE_OFFSETS)
    stitch_from: str = "canvas"  # canvas: the patches the forward model diffracts; patches: the decoder's (ptycho.pipeline)
    quiet: bool = TrainSpec.quiet
    seed: int = TrainSpec.seed  # also GroupingSpec's and ModelSpec's
    validation_split: float = TrainSpec.validation_split
    memory_budget_gb: Optional[float] = None
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        _require(self.variant.isidentifier(), "c1.variant", "an identifier (used in the slot name)", self.variant)
        _require(self.gridsize >= 1, "c1.gridsize (shorthand: gridsize)", ">= 1", self.gridsize)
        _require(self.stitch_from in STITCH_SOURCES, "c1.stitch_from", f"one of {', '.join(STITCH_SOURCES)}",
                 self.stitch_from)
        _require(self.phase_offsets in PHASE_OFFSETS, "c1.phase_offsets", f"one of {', '.join(PHASE_OFFSETS)}",
                 self.phase_offsets)
        channels = self.gridsize**2
        _require(
            self.neighbor_count >= channels, "c1.neighbor_count",
            f">= gridsize**2 = {channels} (a group takes gridsize**2 of the K nearest neighbours)",
            self.neighbor_count,
        )
        _require(self.n_groups is None or self.n_groups >= 1, "c1.n_groups",
                 "null (one group per training position) or >= 1", self.n_groups)
        _require(self.batch_size >= 1, "c1.batch_size", ">= 1", self.batch_size)
        _require(self.max_epochs >= 1, "c1.max_epochs", ">= 1", self.max_epochs)
        _require(self.seed >= 0, "c1.seed", ">= 0", self.seed)
        _require(0 <= self.validation_split < 1, "c1.validation_split", "in [0, 1)", self.validation_split)
        budget = self.memory_budget_gb
        _require(budget is None or (math.isfinite(budget) and budget > 0), "c1.memory_budget_gb",
                 "null (75% of the available memory) or a finite number of GB > 0", budget)
        if self.n_images is not None:
            _require(self.n_images >= 1, "c1.n_images", "null (all) or >= 1", self.n_images)
            self.check_against(self.n_images, "c1.n_images")

    def check_against(self, n_positions: int, source: str) -> None:
        """Raise ValueError when ``n_positions`` scan positions cannot give the requested groups."""
        _require(
            self.n_groups is None or self.n_groups <= n_positions, "c1.n_groups",
            f"<= {n_positions} (each group needs a distinct seed position; {source} = {n_positions})",
            self.n_groups,
        )
        if self.gridsize > 1:
            _require(
                self.neighbor_count <= n_positions, "c1.neighbor_count",
                f"<= {n_positions} ({source} = {n_positions})", self.neighbor_count,
            )


@dataclass
class C2Config:
    """Phase C2: compare TF and PyTorch bundles. Bundle paths (folder or stats.json) are taken
    relative to the launch folder; when both are null, MLflow is searched for C1 runs: the pair of
    ``parity_key``, else the newest pair and the other pairs of its sweep (runners/phases/c2_inputs.py)."""

    variant: str = MISSING
    title: str = MISSING
    tolerance: float = DEFAULT_TOLERANCE
    atol: float = 1e-6
    phase_atol_rad: float = 1e-3
    tf_bundle: Optional[str] = None
    torch_bundle: Optional[str] = None
    parity_key: Optional[str] = None

    def __post_init__(self) -> None:
        _require(self.variant.isidentifier(), "c2.variant", "an identifier (used in the slot name)", self.variant)
        _require(self.tolerance > 0, "c2.tolerance", "> 0 (e.g. 0.10 for +-10%)", self.tolerance)
        _require(self.atol >= 0, "c2.atol", ">= 0", self.atol)
        _require(self.phase_atol_rad >= 0, "c2.phase_atol_rad", ">= 0", self.phase_atol_rad)
        given = (self.tf_bundle is not None, self.torch_bundle is not None)
        if any(given) and not all(given):
            missing = "c2.torch_bundle" if given[0] else "c2.tf_bundle"
            raise ValueError(f"{missing}: must be set too when the other bundle path is set")


@dataclass
class C3Config:
    """Phase C3: an iterative reference reconstruction (cdtools, probe known) of the same data.
    ``learning_rate`` null: the engine's default; ``batch_size``: positions per Adam step (L-BFGS
    takes all); ``seed``: the order batches visit the positions (ptycho/iterative.py). ``init``: the
    initial object, ``flat`` (the constant amplitude the data imply) or ``pinn`` (the stitched object of
    the trained network ``network`` names, as ``reconstruct.network``: an MLflow run id, a hub slot or a
    folder; required with ``pinn`` and only then)."""

    variant: str = MISSING
    title: str = MISSING
    engine: IterativeEngine = IterativeEngine(IterativeSpec.engine)
    epochs: int = IterativeSpec.epochs
    learning_rate: Optional[float] = IterativeSpec.learning_rate
    batch_size: int = IterativeSpec.batch_size
    positions: PositionSet = PositionSet.test
    seed: int = IterativeSpec.seed
    init: C3Init = C3Init.flat
    network: str = ""

    def __post_init__(self) -> None:
        _require(self.variant.isidentifier(), "c3.variant", "an identifier (used in the slot name)", self.variant)
        _require(bool(self.network.strip()) == (self.init is C3Init.pinn), "c3.network", "an MLflow run id, a hub "
                 "slot or a folder holding network.json with c3.init=pinn, and empty with c3.init=flat", self.network)
        _require(self.epochs >= 1, "c3.epochs", ">= 1", self.epochs)
        _require(self.learning_rate is None or (math.isfinite(self.learning_rate) and self.learning_rate > 0),
                 "c3.learning_rate", "null (the engine's default) or a finite number > 0", self.learning_rate)
        _require(self.batch_size >= 1, "c3.batch_size", ">= 1", self.batch_size)
        _require(self.seed >= 0, "c3.seed", ">= 0", self.seed)


@dataclass
class ReconstructConfig:
    """Reconstruct with a trained network (runners/phases/reconstruct.py): ``network`` is an MLflow run
    id of a C1 run, a hub slot (``tf_baseline/phase_c1_scaled``) or a folder (a run folder holding the
    network card, ``network.json``); ``positions``: the dataset's files reconstructed (as ``c3.positions``).
    The backend is the network's."""

    variant: str = MISSING
    title: str = MISSING
    network: str = ""
    positions: PositionSet = PositionSet.test

    def __post_init__(self) -> None:
        _require(self.variant.isidentifier(), "reconstruct.variant", "an identifier (used in the slot name)",
                 self.variant)
        _require(bool(self.network.strip()), "reconstruct.network",
                 "an MLflow run id, a hub slot or a folder holding network.json", self.network)


@dataclass
class GuardConfig:
    """The pytest selector run before training; ``name`` is the stem of its log and blockers."""

    name: str = MISSING
    selector: str = MISSING
    cwd: Optional[str] = None
    timeout_s: float = 600.0
    autoload_plugins: bool = False

    def __post_init__(self) -> None:
        _require(self.name.isidentifier(), "guard.name", "an identifier (used in file names)", self.name)
        _require(bool(self.selector.strip()), "guard.selector", "a pytest selector", self.selector)
        _require(self.timeout_s > 0, "guard.timeout_s", "> 0", self.timeout_s)


@dataclass
class TrackingConfig:
    """MLflow. ``timeout_s``: how long one tracking operation may take before the job goes on
    without MLflow (``runners.tracking.Tracker``; ``python -m runners.tracking.sync`` logs it later)."""

    uri: str = "sqlite:///mlflow.db"
    experiment: str = INITIATIVE_ID
    log_artifacts: bool = True
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _require(bool(self.uri.strip()), "tracking.uri", "a tracking URI", self.uri)
        _require(bool(self.experiment.strip()), "tracking.experiment", "a name", self.experiment)
        _require(math.isfinite(self.timeout_s) and self.timeout_s > 0, "tracking.timeout_s",
                 "> 0 (seconds)", self.timeout_s)


@dataclass
class HubConfig:
    root: str = MISSING
    slot: Optional[str] = None
    lock_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        _require(self.lock_timeout_s > 0, "hub.lock_timeout_s", "> 0", self.lock_timeout_s)


@dataclass
class PhaseConfig:
    """Root of conf/phase.yaml. ``gridsize`` is the top-level shorthand that c1 follows;
    ``threads``: the job's fixed compute threads (``ptycho.determinism``; null: every CPU in
    the process's affinity mask), so a rerun on the same machine repeats bit for bit;
    ``force``: run even when the slot holds a GREEN record of the same work (``runners.evidence.resume``);
    ``verbose``: keep TensorFlow's native log lines (start-up notes, its C++ INFO and WARNING lines)
    in the console and the CLI log (by default they are left out, unless ``TF_CPP_MIN_LOG_LEVEL=0``)."""

    initiative: str = INITIATIVE_ID
    phase: PhaseKind = PhaseKind.c1
    gridsize: int = GroupingSpec.gridsize
    threads: Optional[int] = None
    force: bool = False
    verbose: bool = False
    dataset: DatasetConfig = MISSING
    guard: GuardConfig = MISSING
    backend: BackendConfig = MISSING
    xla: XlaConfig = MISSING
    c1: Optional[C1Config] = None
    c2: Optional[C2Config] = None
    c3: Optional[C3Config] = None
    reconstruct: Optional[ReconstructConfig] = None
    tracking: TrackingConfig = MISSING
    hub: HubConfig = MISSING

    def __post_init__(self) -> None:
        _require(self.threads is None or self.threads >= 1, "threads",
                 "null (every CPU this job may use) or an integer >= 1", self.threads)
        if self.phase is PhaseKind.c1:
            _require(self.c1 is not None, "c1", "a c1 option (scaled, baseline, gs1) for phase=c1", None)
            simulation = self.dataset.simulation
            if not self.dataset.uses_files and simulation is not None:
                if self.c1.n_images is not None:
                    _require(
                        self.c1.n_images <= simulation.n_train, "c1.n_images",
                        f"<= {simulation.n_train} (train images of the simulated dataset)", self.c1.n_images,
                    )
                else:
                    self.c1.check_against(simulation.n_train, "simulated train images")
        elif self.phase is PhaseKind.c2:
            _require(self.c2 is not None, "c2", "a c2 option (tf_vs_torch) for phase=c2", None)
        elif self.phase is PhaseKind.c3:
            _require(self.c3 is not None, "c3", "a c3 option (iterative) for phase=c3", None)
        elif self.phase is PhaseKind.reconstruct:
            _require(self.reconstruct is not None, "reconstruct",
                     "a reconstruct option (trained) for phase=reconstruct", None)

    @property
    def phase_settings(self) -> C1Config | C2Config | C3Config | ReconstructConfig:
        """The settings of the selected phase."""
        return getattr(self, self.phase.value)


def register_configs() -> None:
    """Register the schema as ``phase_schema`` (the first entry of conf/phase.yaml's defaults)."""
    ConfigStore.instance().store(name="phase_schema", node=PhaseConfig)


def to_spec(cfg: DictConfig) -> PhaseConfig:
    """Resolve and validate a composed config (without its ``hydra`` node) into a PhaseConfig.

    Raises ValueError naming the offending key.
    """
    spec = OmegaConf.to_object(cfg)
    if not isinstance(spec, PhaseConfig):
        raise ValueError("config: not composed from the phase_schema (conf/phase.yaml)")
    return spec

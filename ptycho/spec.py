"""The settings and the result of one phase job, shared by both backends (no TensorFlow, no PyTorch).

:class:`GroupingSpec` (which groups), :class:`ModelSpec` (the network), :class:`TrainSpec`
(the fit) go into ``run_phase_job`` of ``ptycho.tf.workflow`` or ``ptycho.torch.workflow``;
both return a :class:`JobResult`. Each spec checks its fields when built and names the
field and the allowed values in its ``ValueError``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ptycho.architecture import AMPLITUDE_START_RANGE, OVERLAP_MODES
from ptycho.data.contract import SUPPORTED_N

LOSS_TERMS = ("loss", "poisson_nll", "diffraction_mae", "amplitude_mae", "realspace_mse")
UNSUPERVISED_TERMS = ("poisson_nll", "diffraction_mae")  # need no ground-truth object
LOSS_WEIGHTS = ("nll_weight", "diffraction_mae_weight", "mae_weight", "realspace_weight")  # ModelSpec fields
# Fixed rules of every fit, on both backends: Poisson NLL on I + epsilon; ReduceLROnPlateau on
# val_loss; EarlyStopping on val_loss when a validation split exists, else on loss. Patiences 5 and
# 10, not the reference's 2 and 3: the network starts at the constant object and its first epochs
# are a plateau whose loss may rise while it leaves it; patience 3 stopped a 30-epoch run after 4
# epochs, at the floor. The training loss is the wrong monitor there: its first epoch's mean, taken
# while the network is still at the constant object, stayed the lowest for 10 epochs of c1=baseline
# (16 steps each) while val_loss improved, and stopped it at epoch 11, at the floor (findings round 10).
INTENSITY_EPSILON = 1e-12
LR_FACTOR, LR_PATIENCE, LR_MIN = 0.5, 5, 1e-5
EARLY_STOPPING_PATIENCE = 10


def early_stopping_monitor(has_validation: bool) -> str:
    """The history key EarlyStopping watches (module rules above)."""
    return "val_loss" if has_validation else "loss"


class NonFiniteLossError(RuntimeError):
    """A training or validation loss became NaN or Inf."""


class LossTerms:
    """Which loss terms a fit computes, and their weights; shared by both backends' ``PinnLoss``.

    A backend's subclass supplies one static method per term name (``poisson_nll``,
    ``diffraction_mae``, ``amplitude_mae``, ``realspace_mse``: ``(targets, outputs) -> scalar``) and ``__call__``
    summing ``terms_of`` with its framework's arithmetic. Terms with weight 0 are not computed.
    """

    def __init__(self, nll_weight: float = 1.0, mae_weight: float = 0.0, realspace_weight: float = 0.0,
                 diffraction_mae_weight: float = 0.0):
        self.weights = {"poisson_nll": nll_weight, "diffraction_mae": diffraction_mae_weight,
                        "amplitude_mae": mae_weight, "realspace_mse": realspace_weight}
        self.terms = [name for name, weight in self.weights.items() if weight > 0]
        if not self.terms:
            raise ValueError("PinnLoss: at least one loss weight must be > 0")

    @property
    def term_names(self) -> list[str]:
        return ["loss", *self.terms]

    @property
    def needs_ground_truth(self) -> bool:
        return any(name not in UNSUPERVISED_TERMS for name in self.terms)

    @classmethod
    def of(cls, spec: "ModelSpec") -> "LossTerms":
        """The loss of a :class:`ModelSpec`'s weights."""
        return cls(spec.nll_weight, spec.mae_weight, spec.realspace_weight, spec.diffraction_mae_weight)

    def terms_of(self, targets, outputs) -> dict:
        """{term: scalar} of every active term (without the weighted total)."""
        return {name: getattr(self, name)(targets, outputs) for name in self.terms}


@dataclass(frozen=True)
class ModelSpec:
    """Settings of the network; arrays (the probe) are passed separately.

    N: patch side (64, 128, 256). gridsize: g, C = g**2 channels. n_filters_scale: s of the
    filter ladder (``architecture.filter_ladder``). object_big: reassemble the C patches on a canvas and
    re-extract them inside the forward path. canvas_size: side M (pixels) of that canvas;
    required when object_big and C > 1, computed from the groups' offsets by
    ``stitching.canvas_size_for`` (never a fixed guess). probe_mask: multiply the probe by a disk
    of radius N/4. intensity_scale: s, initial exp(log_scale). encoder_input_rms: the RMS of the
    data's amplitudes ``A_file`` (set by ``batches.prepare_job_data``); the encoder sees
    ``X / exp(log_scale) / encoder_input_rms``, unit RMS whatever the data's physical scale
    (the forward model and the loss keep the physical scale). initial_amplitude: a0, the
    object amplitude the network starts at everywhere (``architecture.amplitude_head_biases``;
    ``prepare_job_data`` sets it from the data by Parseval). intensity_scale_trainable:
    whether log_scale trains. use_xla_translate: translation path (None: ptycho.tf.ops decides;
    the USE_XLA_TRANSLATE environment variable overrides). nll_weight, mae_weight,
    realspace_weight, diffraction_mae_weight: loss weights (``amplitude_mae`` and real-space
    compare with the true object and need ground truth; ``diffraction_mae``, mean |A_pred -
    sqrt(I_obs)| over the diffraction amplitudes, the reference's "MAE loss", does not). learning_rate:
    Adam's (1e-4: at 1e-3 the first Adam steps killed 40-60% of the bottleneck ReLUs). seed: of
    the initial weights (``architecture.initial_weights``, the same numbers for both backends).
    overlap: how a group's patches are averaged into the object each of its patterns sees, when
    ``reassembles``: 'weighted' (default; each patch's central N/2 square at weight 1, its outer ring at
    ``architecture.RING_WEIGHT``, every patch moved straight into each position's frame) or 'uniform'
    (every pixel at weight 1 through the shared canvas, the reference's and this project's before
    issue 22; see ``architecture.overlap_weights``). amplitude_scale: f, the object's amplitude is f times
    the amplitude head's sigmoid (1 unless the data's amplitude lies outside the sigmoid's starting range;
    set by ``prepare_job_data`` from ``architecture.amplitude_start``). refine_probe: train the probe with
    the network, starting from the given one, at the given probe's total energy sum |P|**2 (the intensity
    scale and the object's amplitude keep their meaning; ``architecture.probe_field_start``).
    probe_learning_rate_factor: k, how fast the refined probe moves: an Adam step moves a probe pixel by up to
    about learning_rate * k of the starting probe's peak amplitude (the weights move by learning_rate).
    """

    N: int = 64
    gridsize: int = 2
    n_filters_scale: int = 2
    object_big: bool = True
    probe_mask: bool = False
    intensity_scale: float = 988.2
    encoder_input_rms: float = 1.0
    initial_amplitude: float = 0.5
    intensity_scale_trainable: bool = True
    use_xla_translate: bool | None = None
    nll_weight: float = 1.0
    mae_weight: float = 0.0
    realspace_weight: float = 0.0
    diffraction_mae_weight: float = 0.0
    learning_rate: float = 1e-4
    canvas_size: int | None = None
    seed: int = 0
    overlap: str = "weighted"
    amplitude_scale: float = 1.0
    refine_probe: bool = False
    probe_learning_rate_factor: float = 10.0

    def __post_init__(self) -> None:
        _require(_is_int(self.N) and self.N in SUPPORTED_N, "N", f"one of {SUPPORTED_N}", self.N)
        for name in ("gridsize", "n_filters_scale"):
            _require(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1",
                     getattr(self, name))
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        for name in ("intensity_scale", "encoder_input_rms", "learning_rate", "amplitude_scale",
                     "probe_learning_rate_factor"):
            value = getattr(self, name)
            _require(_is_number(value) and value > 0, name, "a finite number > 0", value)
        for name in LOSS_WEIGHTS:
            value = getattr(self, name)
            _require(_is_number(value) and value >= 0, name, "a finite number >= 0", value)
        _require(sum(getattr(self, name) for name in LOSS_WEIGHTS) > 0, "nll_weight",
                 f"at least one of {', '.join(LOSS_WEIGHTS)} > 0", self.nll_weight)
        for name in ("object_big", "probe_mask", "intensity_scale_trainable", "refine_probe"):
            _require(isinstance(getattr(self, name), bool), name, "a bool", getattr(self, name))
        low, high = AMPLITUDE_START_RANGE
        _require(_is_number(self.initial_amplitude) and low <= self.initial_amplitude <= high,
                 "initial_amplitude", f"a number in [{low}, {high}]", self.initial_amplitude)
        _require(self.use_xla_translate is None or isinstance(self.use_xla_translate, bool),
                 "use_xla_translate", "None or a bool", self.use_xla_translate)
        _require(self.canvas_size is None or (_is_int(self.canvas_size) and self.canvas_size >= self.N),
                 "canvas_size", f"None or an integer >= N={self.N}", self.canvas_size)
        _require(self.overlap in OVERLAP_MODES, "overlap", f"one of {OVERLAP_MODES}", self.overlap)

    @property
    def channels(self) -> int:
        """C = gridsize**2."""
        return self.gridsize**2

    @property
    def reassembles(self) -> bool:
        """True when the forward path reassembles patches on a canvas (object_big and C > 1)."""
        return self.object_big and self.channels > 1


@dataclass(frozen=True)
class TrainSpec:
    """max_epochs >= 1; batch_size >= 1 groups; seed: the batch order (``batches.epoch_order``,
    shared with the PyTorch port) and Keras' seeds;
    validation_split in [0, 1): the last fraction of the groups (Keras' rule, at least one
    training group) is held out for val_* metrics; quiet: no progress bar."""

    max_epochs: int = 50
    batch_size: int = 16
    seed: int = 0
    validation_split: float = 0.05
    quiet: bool = True

    def __post_init__(self) -> None:
        for name in ("max_epochs", "batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"TrainSpec.{name}: expected an integer >= 1; got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"TrainSpec.seed: expected an integer >= 0; got {self.seed!r}")
        split = self.validation_split
        if not isinstance(split, (int, float)) or isinstance(split, bool) or not 0 <= split < 1:
            raise ValueError(f"TrainSpec.validation_split: expected a number in [0, 1); got {split!r}")
        if not isinstance(self.quiet, bool):
            raise ValueError(f"TrainSpec.quiet: expected a bool; got {self.quiet!r}")


@dataclass(frozen=True)
class GroupingSpec:
    """gridsize g (C = g**2 per group); neighbor_count K; n_groups training groups (None: one
    seeded at every training position, so every position trains); n_images: size of the compact
    train subset (None: all train positions); seed."""

    gridsize: int = 2
    neighbor_count: int = 7
    n_groups: int | None = 32
    n_images: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("gridsize", "neighbor_count"):
            _require_int(getattr(self, name), f"GroupingSpec.{name}", 1)
        if self.n_groups is not None:
            _require_int(self.n_groups, "GroupingSpec.n_groups", 1)
        if self.n_images is not None:
            _require_int(self.n_images, "GroupingSpec.n_images", 1)
        _require_int(self.seed, "GroupingSpec.seed", 0)

    def groups_for(self, n_positions: int) -> int:
        """The number of training groups drawn from ``n_positions`` training positions."""
        return n_positions if self.n_groups is None else self.n_groups


@dataclass(frozen=True)
class JobResult:
    """Outcome of ``run_phase_job`` (``ptycho.pipeline``).

    history: per-epoch metrics (names in ``ptycho.pipeline``); stats_sha1: sha1 of the bundle's
    stats.json; quality: reconstruction metrics (empty without ground truth or stitching);
    throughput_groups_per_s: training groups per second, median over epochs after the
    first (the first epoch alone when there is only one); intensity_scale: final
    exp(log_scale); bundle_stats: the stats.json content; timings_s: seconds per step
    (data_prep, first_epoch, training, inference, stitching, bundle); model_spec: the
    resolved spec (data scale, canvas size) the weights belong to.
    """

    history: dict[str, list[float]]
    stats_sha1: str
    bundle_dir: Path
    weights_path: Path
    quality: dict[str, float]
    throughput_groups_per_s: float
    n_groups_train: int
    intensity_scale: float
    bundle_stats: dict
    timings_s: dict[str, float] = field(default_factory=dict)
    model_spec: ModelSpec | None = None


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _require(condition: bool, field: str, expected: str, got) -> None:
    if not condition:
        raise ValueError(f"ModelSpec.{field}: expected {expected}; got {got!r}")


def _require_int(value, name: str, minimum: int) -> None:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}; got {value!r}")

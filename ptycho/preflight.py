"""Pre-flight of a phase job: refuse bad data, and jobs that cannot fit in memory, before any
large array is allocated.

The runner calls :func:`inspect_file` on the train and test files, then :func:`check_job` with
the job's specs, and only then loads the data (``ptycho.data.npz.load_npz``). What is read: the zip
directory and the .npy header of every contract member (``data.read_npz_headers``, which also
refuses headers that declare more than the file can hold), and the scan positions, two small
members read once their headers have passed.

Refused with a DataContractError naming the file and the key:

* what ``data.read_npz_headers`` and ``data.check_layout`` refuse; non-finite coordinates and
  coordinates beyond ``data.MAX_COORD_PX``;
* a member whose declared size alone exceeds the memory budget;
* test frames of another N than the train frames;
* two or more images whose positions all coincide (no scan);
* duplicates beyond what grouping can use. At gridsize > 1 a group is a seed plus C - 1 of its
  K = neighbor_count nearest neighbours; where K or more images share one position, the K
  nearest neighbours of a seed there are all copies and its group collapses onto one point
  (no offsets, no overlap). So at gridsize > 1 no position may hold K or more images (the
  test file's groups use K = min(neighbor_count, n)). Fewer copies, and any number at
  gridsize 1, are accepted.

Refused with :class:`MemoryBudgetError`: an estimated peak above the budget. The error names
the file and key (or the spec field) behind the largest part of the estimate, the estimate,
the budget and where it came from, and, when a canvas is a quarter of the estimate or more,
the scan positions far from the median position (index and coordinates).

Memory estimate (bytes; an estimate of the job's peak from its shapes, not a measurement):

    loaded           every member of both files as stored, plus its cast copy when the
                     contract's dtype differs
    grouped          train groups 2 * B*C*N*N * (4 inputs + 4 labels [+ 8 true patches]) and
                     the train subset n_images*N*N*4; test groups n_test*C*N*N * (4 inputs
                     + 8 predicted patches + 8 their flat copy)
    network          16 bytes per parameter (weights, gradients, Adam's two moments; counted
                     from ``architecture.conv_layers``) plus 12 bytes (activation, gradient,
                     workspace) per filter and pixel of every convolution, per group in a batch
    model canvas     (object_big and C > 1) per group in a batch M*M*(32*C + 12) bytes: the C
                     placed patches (real, imaginary), the canvas repeated C times for the
                     extraction, their gradients, the sum and the overlap count
    stitched canvas  (do_stitching) M_s*M_s*STITCH_BYTES_PER_PX: the shift-and-sum totals,
                     the complex canvas and its temporaries, the coverage mask, the figure;
                     plus n_test*C*(N/2+1)**2*16 for the phase synchronisation's moved copies

    peak = loaded + grouped + max(network + model canvas, stitched canvas)

(stitching runs after training has released the model). The canvases are the job's own:
groups are formed on the positions with the same calls as ``batches.prepare_job_data``
(compact subset, training groups, every test position the seed of an inference group), and
M, M_s come from ``stitching.canvas_size_for`` and ``stitching.required_canvas_size``.

Default budget (``MemoryBudget.of(None, ...)``): DEFAULT_BUDGET_FRACTION of the memory
available when the check runs (``psutil.virtual_memory().available``, which already counts
what this process holds), leaving room for the estimate's error and for other processes.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from ptycho import architecture, stitching
from ptycho.data import grouping
from ptycho.data.contract import LEGACY_DIFFRACTION_KEY, DataContractError, check_layout
from ptycho.data.npz import NpyHeader, load_positions, read_npz_headers
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec

DEFAULT_BUDGET_FRACTION = 0.75
BYTES_PER_GB = 10**9
STITCH_BYTES_PER_PX = 100
ACTIVATION_BYTES = 12  # per filter and pixel of a convolution: activation, gradient, workspace
PARAMETER_BYTES = 16  # weight, gradient, Adam's two moments (float32)
FORWARD_BYTES = 4  # per filter and pixel of a convolution at inference: the activation alone
INFERENCE_BATCH_MAX = 16  # groups: most of the speed of larger batches (findings round 12), a quarter of their memory
OUTLIER_FACTOR = 10  # far: more than this many median distances from the median position
SHOWN_POSITIONS = 5
_CONTRACT_DTYPE = {"diffraction": np.float32, LEGACY_DIFFRACTION_KEY: np.float32, "probeGuess": np.complex64,
                   "objectGuess": np.complex64, "Y": np.complex64, "scan_index": np.int64}  # else float64


class MemoryBudgetError(ValueError):
    """The job's estimated peak memory exceeds the budget; ``key`` and ``source`` name its largest part."""

    def __init__(self, message: str, key: str, source: str | None, estimate: "MemoryEstimate",
                 budget: "MemoryBudget"):
        super().__init__(message)
        self.key, self.source, self.estimate, self.budget = key, source, estimate, budget


@dataclass(frozen=True)
class MemoryBudget:
    """``bytes`` a job may use; ``origin`` says where the number came from (shown in errors)."""

    bytes: int
    origin: str

    @classmethod
    def of(cls, budget_gb: float | None, key: str) -> "MemoryBudget":
        """``budget_gb`` GB, or None: DEFAULT_BUDGET_FRACTION of the available memory. ``key``
        names the setting in messages. Raises ValueError for a budget that is not a number > 0."""
        if budget_gb is None:
            available = psutil.virtual_memory().available
            share = f"{DEFAULT_BUDGET_FRACTION:.0%} of the {available / BYTES_PER_GB:.3g} GB available"
            return cls(int(DEFAULT_BUDGET_FRACTION * available), f"{key} = null: {share}")
        if isinstance(budget_gb, bool) or not (math.isfinite(budget_gb) and budget_gb > 0):
            raise ValueError(f"{key}: must be null (a share of the available memory) or a finite number "
                             f"of GB > 0; got {budget_gb!r}")
        return cls(int(budget_gb * BYTES_PER_GB), f"{key} = {budget_gb:g}")

    def describe(self) -> str:
        return f"{_gb(self.bytes)} ({self.origin})"


@dataclass(frozen=True, eq=False)
class DatasetFile:
    """What the pre-flight reads of one NPZ file: its headers and its scan positions (n,) float64 px.

    ``xcoords``, ``ycoords`` and ``n_images`` are all ``stitching.inference_groups`` reads of a
    PtychoData, so the test groups are formed by the job's own function.
    """

    path: Path
    headers: dict[str, NpyHeader]
    xcoords: np.ndarray
    ycoords: np.ndarray

    @property
    def diffraction_key(self) -> str:
        return "diffraction" if "diffraction" in self.headers else LEGACY_DIFFRACTION_KEY

    @property
    def n_images(self) -> int:
        return self.headers[self.diffraction_key].shape[0]

    @property
    def N(self) -> int:
        return self.headers[self.diffraction_key].shape[-1]


def inspect_file(path: str | os.PathLike) -> DatasetFile:
    """Headers (checked against the contract) and positions of one NPZ file. Raises DataContractError."""
    path = Path(path)
    headers = read_npz_headers(path)
    check_layout(headers, str(path))
    xcoords, ycoords = load_positions(path)
    return DatasetFile(path, headers, xcoords, ycoords)


@dataclass(frozen=True)
class Term:
    """One part of the estimate: ``bytes``, and what drives it: an NPZ ``key`` of the file
    ``source``, or (source None) a spec field ``key`` and its ``setting`` (e.g. 'ModelSpec.n_filters_scale = 2')."""

    name: str
    bytes: int
    key: str
    source: DatasetFile | None = None
    setting: str = ""


@dataclass(frozen=True)
class MemoryEstimate:
    """The job's estimated memory (module docstring); canvas sides in pixels, None when unused."""

    loaded: Term
    grouped: Term
    network: Term
    model_canvas: Term
    stitched_canvas: Term
    model_canvas_px: int | None
    stitch_canvas_px: int | None

    @property
    def peak_bytes(self) -> int:
        training = self.network.bytes + self.model_canvas.bytes
        return self.loaded.bytes + self.grouped.bytes + max(training, self.stitched_canvas.bytes)

    def largest_first(self) -> list[Term]:
        terms = (self.loaded, self.grouped, self.network, self.model_canvas, self.stitched_canvas)
        return sorted((t for t in terms if t.bytes > 0), key=lambda t: t.bytes, reverse=True)


def check_job(train: DatasetFile, test: DatasetFile, *, grouping: GroupingSpec, model_spec: ModelSpec,
              train_spec: TrainSpec, do_stitching: bool, budget: MemoryBudget) -> MemoryEstimate:
    """Refuse the job before its data is loaded (module docstring); returns the estimate.

    Raises DataContractError (the files) or MemoryBudgetError (the estimate over the budget).
    """
    for found in (train, test):
        _check_members_fit(found, budget)
    if test.N != train.N:
        raise DataContractError(str(test.path), test.diffraction_key, f"frame size N = {train.N} (as in {train.path})",
                                f"N = {test.N}")
    _check_distinct_positions(train, grouping.gridsize, grouping.neighbor_count)
    _check_distinct_positions(test, grouping.gridsize, min(grouping.neighbor_count, test.n_images))
    estimate = estimate_job_memory(train, test, grouping=grouping, model_spec=model_spec, train_spec=train_spec,
                                   do_stitching=do_stitching)
    if estimate.peak_bytes > budget.bytes:
        raise _budget_error(estimate, budget)
    return estimate


def estimate_job_memory(train: DatasetFile, test: DatasetFile, *, grouping: GroupingSpec, model_spec: ModelSpec,
                        train_spec: TrainSpec, do_stitching: bool) -> MemoryEstimate:
    """The job's memory estimate (module docstring), from the headers, the positions and the specs."""
    train_groups, test_groups = _job_groups(train, test, grouping)
    N, C = model_spec.N, model_spec.channels
    batch = max(min(train_spec.batch_size, train_groups.n_groups), min(train_spec.batch_size, test.n_images))
    model_px = stitch_px = None
    model_canvas = Term("model canvas", 0, "xcoords")
    if model_spec.reassembles:
        sides = [stitching.canvas_size_for(N, g.coords_relative) for g in (train_groups, test_groups)]
        model_px = max(sides)
        drives = train if sides[0] >= sides[1] else test
        model_canvas = Term(f"model canvas {model_px} x {model_px} px (batches of {batch}, C = {C})",
                            batch * model_px**2 * (32 * C + 12), _axis_key(drives), drives)
    stitched = Term("stitched canvas", 0, "xcoords")
    if do_stitching:
        offsets, _ = stitching.global_offsets(test_groups)
        stitch_px = stitching.required_canvas_size(N // 2, offsets)
        synchronised = len(offsets) * (N // 2 + 1) ** 2 * 16
        stitched = Term(f"stitched canvas {stitch_px} x {stitch_px} px",
                        stitch_px**2 * STITCH_BYTES_PER_PX + synchronised, _axis_key(test), test)
    return MemoryEstimate(
        loaded=_loaded_term(train, test),
        grouped=_grouped_term(train, test, grouping, model_spec, train_groups.n_groups),
        network=_network_term(model_spec, batch),
        model_canvas=model_canvas,
        stitched_canvas=stitched,
        model_canvas_px=model_px,
        stitch_canvas_px=stitch_px,
    )


def inference_batch_size(estimate: MemoryEstimate, budget: MemoryBudget, model_spec: ModelSpec) -> int:
    """Groups per inference batch: the largest power of two up to INFERENCE_BATCH_MAX whose forward
    activations (FORWARD_BYTES per filter and pixel of every convolution, per group) fit in the budget
    beside the loaded and grouped data; at least 1."""
    room = budget.bytes - estimate.loaded.bytes - estimate.grouped.bytes
    per_group = _activation_pixels(model_spec.N, model_spec.channels, model_spec.n_filters_scale) * FORWARD_BYTES
    batch = INFERENCE_BATCH_MAX
    while batch > 1 and batch * per_group > room:
        batch //= 2
    return batch


def _job_groups(train: DatasetFile, test: DatasetFile, spec: GroupingSpec):
    """(train Groups, test Groups) exactly as ``batches.prepare_job_data`` forms them."""
    x, y = train.xcoords, train.ycoords
    if spec.n_images is not None:
        keep = grouping.compact_subset(x, y, spec.n_images, spec.seed)
        x, y = x[keep], y[keep]
    train_groups = grouping.group_positions(x, y, spec.gridsize, spec.neighbor_count, spec.groups_for(len(x)),
                                            spec.seed)
    return train_groups, stitching.inference_groups(test, spec.gridsize, spec.neighbor_count, spec.seed)


def _loaded_term(train: DatasetFile, test: DatasetFile) -> Term:
    total, largest = 0, (0, "diffraction", train)
    for found in (train, test):
        for key, header in found.headers.items():
            contract = np.dtype(_CONTRACT_DTYPE.get(key, np.float64))
            cast = 0 if header.dtype == contract else math.prod(header.shape) * contract.itemsize
            total += header.nbytes + cast
            largest = max(largest, (header.nbytes, key, found), key=lambda item: item[0])
    return Term("loaded arrays", total, largest[1], largest[2])


def _grouped_term(train: DatasetFile, test: DatasetFile, spec: GroupingSpec, model_spec: ModelSpec,
                  n_groups: int) -> Term:
    frame = model_spec.channels * model_spec.N**2
    truth = "Y" in train.headers and (model_spec.mae_weight > 0 or model_spec.realspace_weight > 0)
    subset = (spec.n_images or train.n_images) * model_spec.N**2 * 4
    total = 2 * n_groups * frame * (8 + 8 * truth) + subset + test.n_images * frame * 20
    name = f"grouped data ({n_groups} train groups, {test.n_images} test groups)"
    given = "" if spec.n_groups is not None else " (None: one per training position)"
    return Term(name, total, "n_groups", setting=f"GroupingSpec.n_groups = {n_groups}{given}")


def _network_term(spec: ModelSpec, batch: int) -> Term:
    layers = architecture.conv_layers(spec.N, spec.gridsize, spec.n_filters_scale)
    parameters = sum(architecture.KERNEL_PX**2 * fan_in * filters + filters for fan_in, filters in layers.values())
    activations = _activation_pixels(spec.N, spec.channels, spec.n_filters_scale)
    total = parameters * PARAMETER_BYTES + batch * activations * ACTIVATION_BYTES
    name = f"network ({parameters:,} parameters, n_filters_scale = {spec.n_filters_scale}, batches of {batch})"
    return Term(name, total, "n_filters_scale", setting=f"ModelSpec.n_filters_scale = {spec.n_filters_scale}")


def _activation_pixels(N: int, channels: int, scale: int) -> int:
    """Sum over the convolutions of filters x output pixels (architecture's ladder and sides)."""
    ladder = architecture.filter_ladder(N, scale)
    encoder = sum(2 * filters * (N >> k) ** 2 for k, filters in enumerate(ladder["encoder"]))
    first_decoder_px = 2 * architecture.BOTTLENECK_PX
    decoder = sum(2 * filters * (first_decoder_px << k) ** 2 for k, filters in enumerate(ladder["decoder"]))
    heads = (2 * ladder["outer"] + channels) * N * N + channels * (N // 2) ** 2
    return encoder + len(architecture.DECODERS) * (decoder + heads)


def _check_members_fit(found: DatasetFile, budget: MemoryBudget) -> None:
    for key, header in found.headers.items():
        if header.nbytes > budget.bytes:
            expected = f"an array within the memory budget of {budget.describe()}"
            got = f"a header declaring {header.shape} {header.dtype} = {_gb(header.nbytes)}"
            raise DataContractError(str(found.path), key, expected, got)


def _check_distinct_positions(found: DatasetFile, gridsize: int, neighbor_count: int) -> None:
    points = np.stack([found.xcoords, found.ycoords], axis=1)
    unique, first, counts = np.unique(points, axis=0, return_index=True, return_counts=True)
    where = f"(x={unique[0, 0]:.6g}, y={unique[0, 1]:.6g})"
    if found.n_images >= 2 and len(unique) == 1:
        raise DataContractError(str(found.path), "xcoords", "scan positions at two or more distinct points",
                                f"all {found.n_images} positions at {where}")
    busiest = int(np.argmax(counts))
    if gridsize > 1 and found.n_images > neighbor_count and counts[busiest] >= neighbor_count:
        x, y = unique[busiest]
        expected = (f"fewer than neighbor_count = {neighbor_count} images at any one position (at gridsize "
                    f"{gridsize} a group is a seed and {gridsize**2 - 1} of its {neighbor_count} nearest "
                    "neighbours: that many copies collapse its groups onto one point)")
        got = f"{counts[busiest]} images at (x={x:.6g}, y={y:.6g}), the first #{first[busiest]}"
        raise DataContractError(str(found.path), "xcoords", expected, got)


def _budget_error(estimate: MemoryEstimate, budget: MemoryBudget) -> MemoryBudgetError:
    terms = estimate.largest_first()
    main = terms[0]
    shown = [t for t in terms if t.bytes >= 0.01 * estimate.peak_bytes]
    parts = "; ".join(f"{t.name}: {_gb(t.bytes)}" for t in shown)
    text = (f"expected a job within the memory budget of {budget.describe()}; got an estimated peak of "
            f"{_gb(estimate.peak_bytes)}: {parts}")
    canvases = (t for t in shown if "canvas" in t.name and t.bytes >= 0.25 * estimate.peak_bytes)
    canvas_files = {id(t.source): t.source for t in canvases}
    text += "".join(f". {_describe_positions(found)}" for found in canvas_files.values())
    source = None if main.source is None else str(main.source.path)
    where = main.setting if source is None else f"{source}: key '{main.key}'"
    return MemoryBudgetError(f"{where}: {text}", main.key, source, estimate, budget)


def _describe_positions(found: DatasetFile) -> str:
    """The positions far from the median position (index and coordinates), or the scan's span."""
    x, y = found.xcoords, found.ycoords
    cx, cy = float(np.median(x)), float(np.median(y))
    distance = np.hypot(x - cx, y - cy)
    typical = float(np.median(distance))
    far = np.flatnonzero(distance > OUTLIER_FACTOR * max(typical, 1.0))
    if far.size == 0:
        return f"The scan in {found.path} spans {np.ptp(x):.6g} x {np.ptp(y):.6g} px (no isolated outlier)"
    far = far[np.argsort(distance[far], kind="stable")[::-1]]
    listed = ", ".join(f"#{i} (x={x[i]:.6g}, y={y[i]:.6g}) {distance[i]:.3g} px away" for i in far[:SHOWN_POSITIONS])
    more = f" and {far.size - SHOWN_POSITIONS} more" if far.size > SHOWN_POSITIONS else ""
    return (f"Positions in {found.path} far from the median position (x={cx:.6g}, y={cy:.6g}; median "
            f"distance {typical:.3g} px): {listed}{more}")


def _axis_key(found: DatasetFile) -> str:
    """'xcoords' or 'ycoords': the axis along which the file's positions reach farthest from the median."""
    reach_x = np.max(np.abs(found.xcoords - np.median(found.xcoords)))
    reach_y = np.max(np.abs(found.ycoords - np.median(found.ycoords)))
    return "xcoords" if reach_x >= reach_y else "ycoords"


def _gb(n_bytes: int) -> str:
    return f"{n_bytes / BYTES_PER_GB:.3g} GB"

"""Iterative reference reconstruction with cdtools (the optional extra ``iterative``).

A classical reconstruction of the same data the network sees, for Phase C3 and the quality
study: the library's own engines, not hand-written ones. cdtools (``cdtools-py``) solves
ptychography by automatic differentiation of its forward model on PyTorch. We use its
``FancyPtycho`` model with the data's probe held fixed (only the object is optimised), its
amplitude-MSE loss, and one of its reconstructors: ``lbfgs`` (full batch; the default) or
``adam`` (minibatches).

How our data map onto cdtools (tests/iterative/test_forward_scaling.py checks it by simulating
our data with the library's forward model):

* intensity: cdtools propagates with ``fftshift(FFT2(ifftshift(psi), norm='ortho'))``, whose
  ``|.|**2`` is our ``I = fftshift(|FFT2(psi)|**2) / N**2`` (the ifftshift only multiplies the
  spectrum by ``(-1)**(k+l)``). It fits intensities, so it is given ``diffraction**2``.
* geometry: wavelength 1, distance 1 and a detector pixel of 1/N make one object pixel one
  length unit; detector axis i is y (rows), j is x (columns).
* positions: cdtools places the top-left corner of the probe window, we place its centre (pixel
  N/2 on ``xcoords``, ``ycoords``), so a corner is ``(y - N/2, x - N/2)``. cdtools takes the
  integer part as the object window and moves the probe by the remainder (a Fourier shift);
  with an integer ``min_translation`` = ``origin_rc`` its object pixel ``obj[a, b]`` is then
  our object pixel ``(row, col) = origin_rc + (a, b)``.

The object starts at the constant amplitude the data imply (Parseval) with phase 0, the
constant object of the quality floor; pixels no probe reaches keep that value. Or it starts
from another reconstruction's stitched canvas (:func:`start_from_canvas`, e.g. a trained
network's: Phase C3's ``c3.init=pinn``), placed on the solver's object grid, the flat start
filling what the canvas does not cover. cdtools and torch are imported when a function needs
them, never at import.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

import numpy as np

from ptycho import stitching
from ptycho.data.contract import PtychoData
from ptycho.data.simulate import extract_patches

DISTRIBUTION = "cdtools-py"
INSTALL_HINT = 'pip install -e ".[iterative]"'
ENGINES = ("lbfgs", "adam")
DEFAULT_LEARNING_RATE = {"lbfgs": 1.0, "adam": 0.02}
PAD_PX = 2  # object pixels beyond the outermost probe window (room for the bilinear patch reads)
CALCULATION_WIDTH = 32  # positions per forward pass inside a batch (speed only, same result)


class IterativeUnavailable(ImportError):
    """cdtools (the extra ``iterative``) is not installed."""


@dataclass(frozen=True)
class IterativeSpec:
    """Settings of one reconstruction; every field is checked (ValueError names it).

    engine: one of ENGINES, cdtools' reconstructor. epochs: passes over the data (an L-BFGS
    epoch is one optimiser step of up to 20 loss evaluations). learning_rate: None for the
    engine's DEFAULT_LEARNING_RATE. batch_size: positions per Adam step (L-BFGS uses all).
    seed: the order in which batches visit the positions.
    """

    engine: str = "lbfgs"
    epochs: int = 10
    learning_rate: float | None = None
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        _require(self.engine in ENGINES, "engine", f"one of {ENGINES}", self.engine)
        _require(_is_int(self.epochs) and self.epochs >= 1, "epochs", "an integer >= 1", self.epochs)
        _require(self.learning_rate is None or (_is_number(self.learning_rate) and self.learning_rate > 0),
                 "learning_rate", "None (the engine's default) or a finite number > 0", self.learning_rate)
        _require(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "an integer >= 1",
                 self.batch_size)
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)

    @property
    def lr(self) -> float:
        return DEFAULT_LEARNING_RATE[self.engine] if self.learning_rate is None else float(self.learning_rate)


@dataclass(frozen=True, eq=False)
class IterativeResult:
    """A reconstructed object and how it was reached.

    obj: (H, W) complex64, ``obj[a, b]`` is the object at pixel (row, col) = origin_rc + (a, b)
    of the data's object frame (that of ``xcoords``/``ycoords`` and ``objectGuess``).
    loss_history: cdtools' loss per epoch (summed amplitude squared error over the total
    measured intensity). seconds, cpu_seconds: wall and process CPU time of the epochs (CPU
    time: every thread's, and less sensitive to other jobs on a shared machine). version:
    cdtools-py's version.
    """

    obj: np.ndarray
    origin_rc: tuple[int, int]
    loss_history: tuple[float, ...]
    seconds: float
    version: str
    cpu_seconds: float = float("nan")


def load_cdtools():
    """The cdtools package, or IterativeUnavailable saying how to install it."""
    try:
        import cdtools
    except ImportError as exc:
        raise IterativeUnavailable(
            f"the iterative reference needs cdtools (package {DISTRIBUTION}), which is not importable "
            f"here ({exc}); install the extra: {INSTALL_HINT}"
        ) from exc
    return cdtools


def library_version() -> str:
    """cdtools-py's installed version (IterativeUnavailable when missing)."""
    load_cdtools()
    return metadata.version(DISTRIBUTION)


def object_frame(xcoords: np.ndarray, ycoords: np.ndarray, N: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(origin_rc, shape) of an object array holding every N x N probe window, PAD_PX around.

    xcoords, ycoords: (n,) window centres in object pixels.
    """
    corners = np.stack([np.asarray(ycoords, np.float64), np.asarray(xcoords, np.float64)], 1) - N / 2
    origin = np.floor(corners.min(axis=0)) - PAD_PX
    shape = np.ceil(corners.max(axis=0)) - origin + N + PAD_PX + 1
    return (int(origin[0]), int(origin[1])), (int(shape[0]), int(shape[1]))


def constant_amplitude(diffraction: np.ndarray, probe: np.ndarray) -> float:
    """The constant object amplitude the data imply: ``sqrt(mean_n sum A**2 / sum |P|**2)`` (Parseval)."""
    energy = float(np.mean(np.sum(np.square(np.asarray(diffraction, np.float64)), axis=(-2, -1))))
    probe_energy = float(np.sum(np.abs(np.asarray(probe)) ** 2))
    if not (math.isfinite(energy) and math.isfinite(probe_energy) and energy > 0 and probe_energy > 0):
        raise ValueError(f"constant_amplitude: the diffraction and the probe must carry finite, non-zero energy; "
                         f"got {energy} and {probe_energy}")
    return math.sqrt(energy / probe_energy)


def reconstruct(data: PtychoData, spec: IterativeSpec, on_epoch: Callable[[int, float], None] | None = None,
                start: np.ndarray | None = None) -> IterativeResult:
    """Reconstruct the object of ``data`` (probe known) with cdtools; ``on_epoch(epoch, loss)`` after each epoch.

    start: the initial object, (H, W) complex on the grid of ``object_frame`` (:func:`start_from_canvas`);
    None: the flat start (the constant amplitude the data imply, phase 0).
    """
    cdtools = load_cdtools()
    import torch

    origin, shape = object_frame(data.xcoords, data.ycoords, data.N)
    if start is None:
        start = np.full(shape, constant_amplitude(data.diffraction, data.probe), np.complex64)
    elif np.shape(start) != shape:
        raise ValueError(f"reconstruct: the initial object must be {shape} (object_frame of the data's positions); "
                         f"got {np.shape(start)}")
    start = np.asarray(start, np.complex64)
    intensities = np.square(data.diffraction.astype(np.float32))
    model, dataset = _model_and_dataset(cdtools, data.probe, data.xcoords, data.ycoords, intensities, start, origin)
    engines = cdtools.reconstructors
    engine = engines.LBFGSReconstructor if spec.engine == "lbfgs" else engines.AdamReconstructor
    reconstructor = engine(model, dataset)
    options = {"lr": spec.lr, "thread": False, "calculation_width": CALCULATION_WIDTH}
    if spec.engine == "adam":
        options["batch_size"] = spec.batch_size
    losses = []
    clock, cpu_clock = time.perf_counter(), time.process_time()
    with torch.random.fork_rng(devices=[]):  # the visiting order is seeded without touching the caller's RNG
        torch.manual_seed(spec.seed)
        for epoch, loss in enumerate(reconstructor.optimize(spec.epochs, **options)):
            losses.append(float(loss))
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"cdtools {spec.engine}: the loss became {losses[-1]} at epoch {epoch}; "
                                         "lower the learning rate")
            if on_epoch is not None:
                on_epoch(epoch, losses[-1])
    seconds, cpu_seconds = time.perf_counter() - clock, time.process_time() - cpu_clock
    obj = model.obj.detach().cpu().numpy().astype(np.complex64)
    return IterativeResult(obj, origin, tuple(losses), seconds, metadata.version(DISTRIBUTION), cpu_seconds)


def start_from_canvas(data: PtychoData, canvas: np.ndarray, covered: np.ndarray,
                      centre_xy: np.ndarray) -> np.ndarray:
    """The initial object (H, W) complex64 on the solver's grid (:func:`object_frame`) from a stitched canvas.

    canvas (M, M) complex, covered (M, M) bool, centre_xy (2,) object pixels [x, y] of canvas pixel
    (M/2, M/2) (``ptycho.stitching.Stitched``; C1's and the reconstruct phase's reconstruction.npz).
    Canvas pixel (i, j) lies on object pixel (row, col) = round(centre_xy[::-1]) - M//2 + (i, j), as in
    ``stitching.ground_truth_window``; the covered pixels inside the grid are placed, every other pixel
    keeps the flat start. The canvas's global factors are set to the flat start's before placing:
    the phase reference (the covered pixels' mean phase, amplitude-weighted) to 0, the flat start's
    phase, and the RMS amplitude over the covered pixels to the flat start's constant amplitude
    (Parseval: the level the data imply), so the two meet without a step the solver must first undo.
    ValueError when no covered pixel lies on the grid.
    """
    canvas, covered = np.asarray(canvas), np.asarray(covered, bool)
    if canvas.ndim != 2 or canvas.shape != covered.shape:
        raise ValueError(f"start_from_canvas: canvas and covered must be one (M, M) shape; got {canvas.shape} "
                         f"and {covered.shape}")
    origin, shape = object_frame(data.xcoords, data.ycoords, data.N)
    flat = constant_amplitude(data.diffraction, data.probe)
    start = np.full(shape, flat, np.complex64)
    top, left = np.round(np.asarray(centre_xy, np.float64)[::-1]).astype(int) - canvas.shape[0] // 2 - origin
    rows = slice(max(top, 0), min(top + canvas.shape[0], shape[0]))
    cols = slice(max(left, 0), min(left + canvas.shape[1], shape[1]))
    window = (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
    placed, inside = canvas[window], covered[window]
    if rows.start >= rows.stop or cols.start >= cols.stop or not inside.any():
        raise ValueError("start_from_canvas: no covered pixel of the canvas lies on the solver's object grid "
                         f"(rows {origin[0]}..{origin[0] + shape[0]}, columns {origin[1]}..{origin[1] + shape[1]})")
    values = placed[inside].astype(np.complex128)
    rms = float(np.sqrt(np.mean(np.abs(values) ** 2)))
    if not (math.isfinite(rms) and rms > 0):
        raise ValueError(f"start_from_canvas: the covered pixels must carry a finite, non-zero amplitude; RMS {rms}")
    reference = np.exp(-1j * np.angle(np.sum(values))) * flat / rms
    start[rows, cols] = np.where(inside, placed * reference, start[rows, cols])
    return start


def simulate_amplitudes(probe: np.ndarray, obj: np.ndarray, origin_rc: tuple[int, int],
                        xcoords: np.ndarray, ycoords: np.ndarray) -> np.ndarray:
    """Diffraction amplitudes (n, N, N) float32 of ``obj`` through cdtools' forward model.

    probe: (N, N) complex; obj: (H, W) complex with ``obj[a, b]`` at object pixel origin_rc + (a, b);
    xcoords, ycoords: (n,) window centres. Comparable with our data's ``diffraction``.
    """
    cdtools = load_cdtools()
    import torch

    n, N = len(xcoords), probe.shape[-1]
    unmeasured = np.zeros((n, N, N), np.float32)
    model, dataset = _model_and_dataset(cdtools, np.asarray(probe, np.complex64), xcoords, ycoords, unmeasured,
                                        np.asarray(obj, np.complex64), origin_rc)
    with torch.no_grad():
        intensity = model(torch.arange(n), dataset.translations)
    return np.sqrt(intensity.cpu().numpy()).astype(np.float32)


def stitched(result: IterativeResult, data: PtychoData, crop: int | None = None) -> stitching.Stitched:
    """The reconstruction on C1's canvas convention (``ptycho.stitching``).

    The canvas is centred on the scan's centre of mass rounded to whole pixels, its side is
    ``required_canvas_size(crop, offsets)`` and ``covered`` marks the crop x crop squares
    (default N/2) around the scan positions, as a gridsize-1 stitch of the same positions;
    canvas pixels outside the reconstructed array are 0.
    """
    crop = data.N // 2 if crop is None else int(crop)
    positions = np.stack([data.xcoords, data.ycoords], 1)
    centre = np.round(positions.mean(axis=0))
    offsets = positions - centre
    size = stitching.required_canvas_size(crop, offsets)
    top, left = (np.round(centre[::-1]).astype(int) - size // 2 - np.asarray(result.origin_rc))
    canvas = np.zeros((size, size), np.complex64)
    height, width = result.obj.shape
    rows = slice(max(top, 0), min(top + size, height))
    cols = slice(max(left, 0), min(left + size, width))
    if rows.start < rows.stop and cols.start < cols.stop:
        canvas[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left] = result.obj[rows, cols]
    return stitching.Stitched(canvas, stitching.covered_mask(size, crop, offsets), offsets, centre, crop)


def object_patches(result: IterativeResult, data: PtychoData) -> np.ndarray:
    """(n, N, N) complex64 patches of the reconstruction at the data's positions (bilinear, as simulated)."""
    row0, col0 = result.origin_rc
    return extract_patches(result.obj, data.xcoords - col0, data.ycoords - row0, data.N)


def _model_and_dataset(cdtools, probe, xcoords, ycoords, intensities, start, origin_rc):
    """cdtools' FancyPtycho (probe (N, N) and background fixed; the object ``start`` trainable) and
    the Ptycho2DDataset of the measured ``intensities`` (n, N, N) at window centres ``xcoords``, ``ycoords``."""
    import torch

    N = probe.shape[-1]
    translations = np.zeros((len(xcoords), 3), np.float32)  # (x, y, z) of each window's top-left corner
    translations[:, 0] = np.asarray(xcoords) - N / 2
    translations[:, 1] = np.asarray(ycoords) - N / 2
    geometry = {"basis": np.array([[0.0, 1.0 / N], [1.0 / N, 0.0], [0.0, 0.0]]), "distance": 1.0}
    dataset = cdtools.datasets.Ptycho2DDataset(translations, intensities, wavelength=1.0, detector_geometry=geometry)
    obj_basis = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
    model = cdtools.models.FancyPtycho(
        1.0, geometry, obj_basis, probe[None], start,
        min_translation=torch.tensor(origin_rc, dtype=torch.float32),
        background=torch.zeros((N, N)), loss="amplitude mse",
    )
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name == "obj")
    return model, dataset


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    is_real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return is_real and math.isfinite(value)


def _require(condition: bool, field: str, expected: str, got) -> None:
    if not condition:
        raise ValueError(f"IterativeSpec.{field}: expected {expected}; got {got!r}")

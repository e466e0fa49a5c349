"""The debug bundle: statistics and pictures of one reconstruction (docs/design.md §8).

A bundle directory holds

    stats.json     amplitude/phase statistics of the patches and the stitched canvas,
                   the intensity scale used, plus caller-supplied sections (extra_stats)
    offsets.json   summary of the per-patch offsets (pixels)
    canvas.json    patch and canvas sizes, number of patch slots, largest |offset|
    patch_amplitude_grid.png  patch_phase_grid.png  canvas_amplitude.png
    canvas_phase.png          loss_curve.png (per-epoch curves and the per-step loss)
    truth_vs_reconstruction.png   only with ground truth: truth | reconstruction | error
                   for amplitude and phase, after the global amplitude scale and phase
                   offset that ``ptycho.evaluation.quality`` fits for its metrics
    arrays.npz     the drawn arrays themselves: ``patches`` (the first 16, (k, N, N)
                   complex64) and ``canvas`` ((M, M) complex64), so a comparison can
                   subtract numbers rather than pictures (``read_bundle_arrays``); with a
                   probe given (a refined one, ``ModelSpec.refine_probe``) also ``probe`` ((N, N)
                   complex64), drawn in probe.png (amplitude | phase)

The key names are those the community's parity scripts read; both backends write the
same keys. JSON is written with sorted keys and indent 2, so the same arrays always give
the same bytes and the same ``stats_sha1``. The bundle is assembled in a hidden sibling
directory and renamed into place: ``bundle_dir`` holds either the previous complete
bundle, nothing, or the new complete bundle, never a partial one.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ptycho.evaluation import plots, quality
from ptycho.data.npz import file_sha1

STATS_FILE = "stats.json"
OFFSETS_FILE = "offsets.json"
CANVAS_FILE = "canvas.json"
ARRAYS_FILE = "arrays.npz"
TRUTH_FIGURE = "truth_vs_reconstruction.png"
PROBE_FIGURE = "probe.png"
FIRST_OFFSETS_SHOWN = 8
STATS_CHUNK = 256  # patches per chunk of the streamed patch statistics
RESERVED_STATS_KEYS = frozenset(
    {"patch_amplitude", "patch_phase", "canvas_amplitude", "canvas_phase", "intensity_scale"}
)


def write_debug_bundle(bundle_dir: str | os.PathLike, patches: np.ndarray,
                       offsets_xy: np.ndarray, canvas: np.ndarray, *, intensity_scale: float,
                       history: Mapping[str, Sequence[float]] | None = None,
                       extra_stats: Mapping[str, object] | None = None,
                       canvas_mask: np.ndarray | None = None,
                       step_loss: Sequence[float] | None = None,
                       ground_truth: np.ndarray | None = None,
                       ground_truth_mask: np.ndarray | None = None,
                       probe: np.ndarray | None = None) -> Path:
    """Write a complete debug bundle to ``bundle_dir``, replacing any previous one.

    patches: (n, N, N) complex, predicted object patches (flatten (B, N, N, C) to
        (B*C, N, N) first). offsets_xy: (n, 2) float, [dx, dy] per patch in pixels.
    canvas: (M, M) complex, the stitched object. canvas_mask: (M, M) bool or None;
        True where the scan covered the canvas. Canvas statistics use only covered pixels.
    intensity_scale: the (final) intensity scale of the model, finite and > 0.
    history: dict name -> per-epoch list of floats, drawn in loss_curve.png.
    step_loss: the training loss of each batch (all epochs, in order), drawn in
        loss_curve.png with the per-epoch curves.
    ground_truth: (M, M) complex, the true object under the canvas
        (``stitching.ground_truth_window``), or None: then no truth_vs_reconstruction.png.
        ground_truth_mask: (M, M) bool, True where the truth is defined (default: all).
        The figure compares the pixels both covered and inside the truth.
    extra_stats: dict of JSON-like sections merged into stats.json under their own keys
        (e.g. "quality", "history_final"); numpy values become Python numbers and
        non-finite floats become null.
    probe: (N, N) complex or None: drawn in probe.png and kept in arrays.npz (a refined probe).
    Raises ValueError for inconsistent shapes, non-finite patches/offsets/canvas or a
    reserved extra_stats key. Returns the bundle directory as a Path.
    """
    patches, offsets_xy, canvas, canvas_mask = _validate_arrays(patches, offsets_xy, canvas,
                                                                canvas_mask)
    documents = {
        STATS_FILE: _stats_document(patches, canvas, canvas_mask, intensity_scale, extra_stats),
        OFFSETS_FILE: offsets_summary(offsets_xy),
        CANVAS_FILE: _canvas_document(patches, offsets_xy, canvas),
    }
    history = _validate_history(history)
    step_loss = None if step_loss is None else _curve(step_loss, "step_loss")
    truth_rows = truth_comparison_rows(canvas, canvas_mask, ground_truth, ground_truth_mask)
    target = Path(bundle_dir)
    if target.exists() and not target.is_dir():
        raise ValueError(f"bundle_dir {target} exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; a bundle is for reading
        for name, document in documents.items():
            (staging / name).write_text(_dumps(document), encoding="utf-8")
        _write_figures(staging, patches, canvas, canvas_mask, history, step_loss, probe)
        if truth_rows is not None:
            plots.save_truth_comparison(staging / TRUTH_FIGURE, *truth_rows)
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def stats_sha1(bundle_dir: str | os.PathLike) -> str:
    """sha1 hex digest of the bundle's stats.json bytes."""
    return file_sha1(_bundle_file(bundle_dir, STATS_FILE))


def read_bundle_stats(bundle_dir: str | os.PathLike) -> dict:
    """The content of the bundle's stats.json as a dict."""
    return json.loads(_bundle_file(bundle_dir, STATS_FILE).read_text(encoding="utf-8"))


def read_bundle_arrays(bundle_dir: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """{'patches', 'canvas'(, 'probe')} of the bundle's arrays.npz, or None for a bundle without one
    (written by another tool or an older version)."""
    path = Path(bundle_dir) / ARRAYS_FILE
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as arrays:
        return {key: arrays[key] for key in arrays.files}


def summary_stats(values: np.ndarray) -> dict[str, float]:
    """{mean, std, min, max} of a real array as Python floats (population std)."""
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(np.mean(values)), "std": float(np.std(values)),
            "min": float(np.min(values)), "max": float(np.max(values))}


def offsets_summary(offsets_xy: np.ndarray) -> dict:
    """offsets.json content for (n, 2) offsets [dx, dy] in pixels.

    std values are population standard deviations. centered_std is the RMS distance of
    the offsets from their centroid, sqrt(mean_i((dx_i - mean dx)**2 + (dy_i - mean dy)**2)).
    """
    offsets_xy = np.asarray(offsets_xy, dtype=np.float64)
    dx, dy = offsets_xy[:, 0], offsets_xy[:, 1]
    centered = offsets_xy - offsets_xy.mean(axis=0)
    return {
        "count": int(offsets_xy.shape[0]),
        "first": [{"dx": float(x), "dy": float(y)}
                  for x, y in offsets_xy[:FIRST_OFFSETS_SHOWN]],
        "dx_mean": float(dx.mean()), "dx_std": float(dx.std()),
        "dy_mean": float(dy.mean()), "dy_std": float(dy.std()),
        "centered_std": float(np.sqrt(np.mean(np.sum(centered**2, axis=1)))),
    }


def _stats_document(patches, canvas, canvas_mask, intensity_scale, extra_stats):
    """stats.json content. var_zero_mean = mean((a - mean(a))**2) of the patch amplitude."""
    scale = _finite_float(intensity_scale, "intensity_scale")
    if scale <= 0:
        raise ValueError(f"intensity_scale must be > 0, got {scale}")
    amplitude, phase = _patch_moments(patches)
    covered = canvas[canvas_mask] if canvas_mask is not None else canvas.ravel()
    stats = {
        "patch_amplitude": {**amplitude.summary(), "var_zero_mean": amplitude.variance},
        "patch_phase": phase.summary(),
        "canvas_amplitude": summary_stats(np.abs(covered)),
        "canvas_phase": summary_stats(np.angle(covered)),
        "intensity_scale": scale,
    }
    for key, section in (extra_stats or {}).items():
        if not isinstance(key, str) or key in RESERVED_STATS_KEYS:
            raise ValueError(f"extra_stats key {key!r} is not a string or clashes with the "
                             f"bundle's own keys {sorted(RESERVED_STATS_KEYS)}")
        stats[key] = _jsonable(section, f"extra_stats[{key!r}]")
    return stats


class _Moments:
    """Count, mean, sum of squared deviations, min and max of values seen chunk by chunk, in float64
    (Chan et al.'s pairwise update: as stable as a two-pass mean and variance)."""

    def __init__(self):
        self.count, self.mean, self.squares = 0, 0.0, 0.0
        self.low, self.high = math.inf, -math.inf

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64)
        count, mean = values.size, float(np.mean(values))
        squares = float(np.sum((values - mean) ** 2))
        total = self.count + count
        delta = mean - self.mean
        self.squares += squares + delta * delta * self.count * count / total
        self.mean += delta * count / total
        self.count = total
        self.low, self.high = min(self.low, float(values.min())), max(self.high, float(values.max()))

    @property
    def variance(self) -> float:
        return self.squares / self.count

    def summary(self) -> dict[str, float]:
        """{mean, std, min, max} as :func:`summary_stats` gives them (population std)."""
        return {"mean": self.mean, "std": math.sqrt(self.variance), "min": self.low, "max": self.high}


def _patch_moments(patches: np.ndarray) -> tuple[_Moments, _Moments]:
    """(amplitude, phase) moments of (n, N, N) patches, STATS_CHUNK patches at a time: the statistics
    never hold a float64 copy of every patch (2048 patches of 64 x 64: 130 MB each)."""
    amplitude, phase = _Moments(), _Moments()
    for begin in range(0, patches.shape[0], STATS_CHUNK):
        chunk = patches[begin:begin + STATS_CHUNK].astype(np.complex128)
        amplitude.add(np.abs(chunk))
        phase.add(np.angle(chunk))
    return amplitude, phase


def _canvas_document(patches, offsets_xy, canvas):
    return {
        "patch_size": int(patches.shape[1]),
        "canvas_size": int(canvas.shape[0]),
        "num_patch_slots": int(patches.shape[0]),
        "max_abs_dx": float(np.max(np.abs(offsets_xy[:, 0]))),
        "max_abs_dy": float(np.max(np.abs(offsets_xy[:, 1]))),
    }


def _write_figures(directory, patches, canvas, canvas_mask, history, step_loss, probe=None):
    n = patches.shape[0]
    shown = patches[:plots.GRID_MAX_PATCHES]
    plots.save_patch_grid(directory / "patch_amplitude_grid.png", np.abs(shown),
                          kind="amplitude", n_total=n)
    plots.save_patch_grid(directory / "patch_phase_grid.png", np.angle(shown),
                          kind="phase", n_total=n)
    plots.save_canvas(directory / "canvas_amplitude.png", np.abs(canvas),
                      kind="amplitude", mask=canvas_mask)
    plots.save_canvas(directory / "canvas_phase.png", np.angle(canvas),
                      kind="phase", mask=canvas_mask)
    plots.save_loss_curve(directory / "loss_curve.png", history, step_loss)
    arrays = {"patches": shown.astype(np.complex64), "canvas": canvas.astype(np.complex64)}
    if probe is not None:
        arrays["probe"] = np.asarray(probe, np.complex64)
        plots.save_probe(directory / PROBE_FIGURE, arrays["probe"])
    np.savez(directory / ARRAYS_FILE, **arrays)


def truth_comparison_rows(canvas, canvas_mask, truth, truth_mask):
    """(rows, mask) for plots.save_truth_comparison, or None without ground truth.

    The reconstruction gets ptycho.evaluation.quality's global fit (phase offset, amplitude scale); its
    phase is unwrapped relative to the truth as quality does, so the error is the wrapped
    difference and the titles' MAE are the metrics' amp_mae and phase_mae.
    """
    if truth is None:
        return None
    truth = _numeric_array(truth, "ground_truth")
    if truth.shape != canvas.shape:
        raise ValueError(f"ground_truth must have the canvas shape {canvas.shape}, got {truth.shape}; "
                         "crop it with stitching.ground_truth_window")
    mask = np.ones(canvas.shape, bool) if canvas_mask is None else canvas_mask
    if truth_mask is not None:
        mask = mask & _check_mask(truth_mask, canvas.shape, "ground_truth_mask")
    if not mask.any():
        raise ValueError("ground_truth does not overlap the covered canvas; nothing to compare")
    fit = quality.reconstruction_quality(canvas, truth, mask=mask)
    aligned = canvas * np.exp(-1j * fit["phase_offset"])
    amp_truth, amp_recon = np.abs(truth), fit["amp_scale"] * np.abs(aligned)
    dphase = np.angle(aligned * np.conj(truth))
    rows = {"amplitude": (amp_truth, amp_recon, amp_recon - amp_truth, fit["amp_mae"]),
            "phase": (np.angle(truth), np.angle(truth) + dphase, dphase, fit["phase_mae"])}
    return rows, mask


def _move_into_place(staging, target):
    """Rename staging to target; an existing target is renamed aside first, then deleted."""
    if not target.exists():
        os.replace(staging, target)
        return
    # An empty directory reserved by mkdtemp; rename(2) may replace an empty directory.
    old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _validate_arrays(patches, offsets_xy, canvas, canvas_mask):
    patches = _numeric_array(patches, "patches", keep_dtype=True)
    offsets_xy = _numeric_array(offsets_xy, "offsets_xy", real=True)
    canvas = _numeric_array(canvas, "canvas")
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2] or patches.shape[0] == 0:
        raise ValueError(f"patches must be (n, N, N) with n >= 1, got shape {patches.shape}; "
                         "flatten (B, N, N, C) to (B*C, N, N) first")
    if offsets_xy.shape != (patches.shape[0], 2):
        raise ValueError(f"offsets_xy must be (n, 2) = ({patches.shape[0]}, 2) [dx, dy] px "
                         f"to match patches, got shape {offsets_xy.shape}")
    if canvas.ndim != 2 or canvas.shape[0] != canvas.shape[1]:
        raise ValueError(f"canvas must be square (M, M), got shape {canvas.shape}")
    if canvas_mask is not None:
        canvas_mask = _check_mask(canvas_mask, canvas.shape, "canvas_mask")
        if not canvas_mask.any():
            raise ValueError("canvas_mask covers no pixel of the canvas")
    return patches, offsets_xy, canvas, canvas_mask


def _check_mask(mask, shape, name):
    mask = np.asarray(mask)
    if mask.shape != shape or mask.dtype != bool:
        raise ValueError(f"{name} must be a bool array of the canvas shape {shape}, "
                         f"got {mask.dtype} {mask.shape}")
    return mask


def _numeric_array(value, name, real=False, keep_dtype=False):
    """``value`` checked numeric (real if ``real``) and finite, as float64/complex128 unless ``keep_dtype``."""
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.number) or (real and np.iscomplexobj(array)):
        raise ValueError(f"{name} must be a {'real' if real else 'numeric'} array, "
                         f"got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf values; a non-finite bundle means the "
                         "run is broken, fix the run instead of recording it")
    if keep_dtype:
        return array
    return array.astype(np.complex128 if np.iscomplexobj(array) else np.float64)


def _validate_history(history):
    if history is None:
        return None
    if not isinstance(history, dict):
        raise ValueError(f"history must be a dict name -> list of floats, got {type(history)}")
    return {str(name): _curve(values, f"history[{name!r}]") for name, values in history.items()}


def _curve(values, name):
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a 1-D list of numbers, got {values!r}")
    return array.astype(np.float64)


def _jsonable(value, where):
    """Convert numpy/Python values to strict-JSON types; non-finite floats become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist(), where)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    raise ValueError(f"{where} has a value of type {type(value).__name__} that JSON cannot hold")


def _finite_float(value, name):
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number, got {value!r}") from error
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _dumps(document):
    return json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _bundle_file(bundle_dir, name):
    path = Path(bundle_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {bundle_dir} is not a complete debug bundle")
    return path


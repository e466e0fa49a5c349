"""PNG figures of the debug bundle: patch grids, stitched canvas, truth vs reconstruction, loss curve.

Every figure is a ``matplotlib.figure.Figure`` rendered by its own ``FigureCanvasAgg``:
no pyplot, no global state, safe to call from several threads. Each figure has a
title, a colour bar with units and axes labelled in pixels.

Colour scales are the data's own: the 1st to 99th percentile of the valid pixels (the
covered canvas, the illuminated centre of each patch), stated on the colour bar; values
outside are clipped (arrows at the bar's ends). A learnt phase is defined only up to a
global offset and rarely spans 2 pi, so on a fixed +-pi scale it is one flat colour: phase
is first wrapped into the 2 pi window centred on its circular mean (values stay equal modulo
2 pi) and drawn with a sequential map. Error maps use a diverging map, symmetric about 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, MultipleLocator, ScalarFormatter

DPI = 100
GRID_MAX_PATCHES = 16
ROBUST_PERCENTILES = (1.0, 99.0)
AMPLITUDE_CMAP = colormaps["viridis"].with_extremes(bad="lightgray")
PHASE_CMAP = colormaps["inferno"].with_extremes(bad="lightgray")
ERROR_CMAP = colormaps["RdBu_r"].with_extremes(bad="lightgray")
UNITS = {"amplitude": "amplitude (arb. units)", "phase": "phase (rad)"}


def save_patch_grid(path: str | Path, images: np.ndarray, *, kind: str, n_total: int) -> Path:
    """Save up to 16 patches as one tiled image with a shared colour scale.

    images: (n, N, N) float64, amplitude or phase (rad) of the first patches.
    kind: "amplitude" or "phase". n_total: number of patches in the bundle (for the title).
    The colour range is the robust range of the central N/2 x N/2 of each patch (the
    illuminated region that stitching keeps). Tiles are laid out row-major, 4 per row;
    ticks give pixels within each patch.
    """
    shown = images[:GRID_MAX_PATCHES]
    n_shown, side = shown.shape[0], shown.shape[1]
    centre = np.zeros(shown.shape, bool)
    centre[:, side // 4:side - side // 4, side // 4:side - side // 4] = True
    if kind == "phase":
        shown = centred_phase(shown, centre)
    cols = min(4, n_shown)
    rows = -(-n_shown // cols)
    mosaic = np.full((rows * side, cols * side), np.nan)
    for i, patch in enumerate(shown):
        r, c = divmod(i, cols)
        mosaic[r * side:(r + 1) * side, c * side:(c + 1) * side] = patch
    width = 1.6 * max(cols, 2) + 1.6
    fig = _figure((width, 1.6 * max(rows, 2) + 0.9), right=1 - 1.3 / width)  # 1.3 in for the colour bar
    ax = fig.add_subplot()
    limits = robust_limits(shown[centre])
    image = _show(ax, mosaic, kind, limits)
    _draw_tile_grid(ax, rows, cols, side, n_shown)
    ax.set_title(f"Patch {kind}: first {n_shown} of {n_total} ({side}x{side} px)", fontsize=10)
    ax.set_xlabel("x within patch (px)")
    ax.set_ylabel("y within patch (px)")
    _colorbar(fig, ax, image, kind, limits, shown)
    return _save(fig, path)


def save_canvas(path: str | Path, image: np.ndarray, *, kind: str,
                mask: np.ndarray | None = None) -> Path:
    """Save the stitched canvas (M, M) float64 amplitude or phase (rad).

    mask: (M, M) bool, True where covered; uncovered pixels are drawn light grey and
    excluded from the colour scale.
    """
    valid = np.ones(image.shape, bool) if mask is None else mask
    if kind == "phase":
        image = centred_phase(image, valid)
    shown = np.ma.masked_array(image, mask=~valid)
    fig = _figure((5.2, 4.4))
    ax = fig.add_subplot()
    limits = robust_limits(image[valid])
    image_artist = _show(ax, shown, kind, limits)
    size = f"{image.shape[1]}x{image.shape[0]} px"
    ax.set_title(f"Stitched object {kind} ({size})", fontsize=10)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    _colorbar(fig, ax, image_artist, kind, limits, image[valid])
    return _save(fig, path)


def save_truth_comparison(path: str | Path, rows: Mapping[str, tuple], mask: np.ndarray) -> Path:
    """Save truth | reconstruction | error, one row per kind ("amplitude", "phase").

    rows: kind -> (truth, reconstruction, error, mae), images (M, M) float64 (phase in rad,
    the reconstruction already fitted to the truth), mae a float. mask: (M, M) bool, the
    compared pixels; the figure shows their bounding box, other pixels light grey. Truth and
    reconstruction share one colour range (robust range of both); the error has its own,
    symmetric about 0 (99th percentile of |error|).
    """
    r_idx, c_idx = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (slice(r_idx[0], r_idx[-1] + 1), slice(c_idx[0], c_idx[-1] + 1))
    extent = (c_idx[0] - 0.5, c_idx[-1] + 0.5, r_idx[-1] + 0.5, r_idx[0] - 0.5)
    fig = Figure(figsize=(13.0, 4.0 * len(rows)), dpi=DPI)
    fig.subplots_adjust(left=0.05, right=0.92, bottom=0.08, top=0.9, wspace=0.5, hspace=0.3)
    FigureCanvasAgg(fig)
    fig.suptitle("Ground truth vs stitched reconstruction (global amplitude scale and phase "
                 "offset fitted as in the quality metrics)", fontsize=11)
    for row, (kind, (truth, recon, error, mae)) in enumerate(rows.items()):
        shared = robust_limits(np.concatenate([truth[mask], recon[mask]]))
        bound = float(np.percentile(np.abs(error[mask]), ROBUST_PERCENTILES[1])) or 1e-12
        panels = ((truth, kind, shared, f"truth {kind}"),
                  (recon, kind, shared, f"reconstruction {kind} (MAE {mae:.3g})"),
                  (error, "error", (-bound, bound), f"error, recon - truth (MAE {mae:.3g})"))
        for col, (values, style, limits, title) in enumerate(panels):
            ax = fig.add_subplot(len(rows), 3, 3 * row + col + 1)
            bar = _masked_panel(fig, ax, values, mask, box, extent, style, limits)
            bar.set_label(_range_label(kind, limits, error=style == "error"), fontsize=8)
            ax.set_title(title, fontsize=9)
    return _save(fig, path)


def save_probe(path: str | Path, probe: np.ndarray) -> Path:
    """Save the probe (N, N) complex: amplitude | phase (rad; drawn where the amplitude exceeds 1% of its peak)."""
    amplitude = np.abs(probe).astype(np.float64)
    lit = amplitude > 0.01 * amplitude.max()
    fig = Figure(figsize=(10.0, 4.4), dpi=DPI)
    fig.subplots_adjust(left=0.08, right=0.9, bottom=0.12, top=0.86, wspace=0.45)
    FigureCanvasAgg(fig)
    fig.suptitle(f"Probe ({probe.shape[1]}x{probe.shape[0]} px)", fontsize=11)
    for col, (kind, values) in enumerate((("amplitude", amplitude),
                                          ("phase", centred_phase(np.angle(probe), lit)))):
        ax = fig.add_subplot(1, 2, col + 1)
        valid = lit if kind == "phase" else np.ones(values.shape, bool)
        limits = robust_limits(values[valid])
        artist = _show(ax, np.ma.masked_array(values, mask=~valid), kind, limits)
        bar = fig.colorbar(artist, ax=ax, fraction=0.046, pad=0.03, extend=_extend(values[valid], limits))
        bar.set_label(_range_label(kind, limits), fontsize=8)
        ax.set_title(f"probe {kind}", fontsize=9)
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    return _save(fig, path)


def _masked_panel(fig, ax, values, mask, box, extent, style, limits):
    """Draw ``values[box]`` (pixels off ``mask`` light grey); returns its colour bar."""
    shown = np.ma.masked_array(values[box], mask=~mask[box])
    artist = _show(ax, shown, style, limits, extent=extent)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    return fig.colorbar(artist, ax=ax, fraction=0.046, pad=0.03, extend=_extend(values[mask], limits))


def save_loss_curve(path: str | Path, history: Mapping[str, Sequence[float]] | None,
                    step_loss: Sequence[float] | None = None) -> Path:
    """Save the training loss per step and the per-epoch curves in one plot.

    history: dict name -> sequence of per-epoch floats, or None. step_loss: the training
    loss of each batch (all epochs, in order), or None. With step_loss the x axis counts
    steps (dotted lines between epochs) and each epoch's value sits at the epoch's last step,
    where Keras logs it; without it the x axis counts epochs. y axis: log when every finite value is
    positive; otherwise (the Poisson NLL is about -3e6) linear, values as they are, with the
    axis offset written at its top. Without any curve the figure says "no training history".
    """
    curves = {k: np.asarray(v, dtype=np.float64) for k, v in (history or {}).items() if len(v)}
    steps = np.asarray(step_loss if step_loss is not None else [], dtype=np.float64)
    fig = _figure((6.4, 4.2), right=0.95)
    ax = fig.add_subplot()
    if not curves and not steps.size:
        ax.set_title("Training history", fontsize=10)
        ax.text(0.5, 0.5, "no training history", ha="center", va="center",
                transform=ax.transAxes, fontsize=12)
        ax.set_axis_off()
        return _save(fig, path)
    n_epochs = max((v.size for v in curves.values()), default=1)
    per_epoch = steps.size / n_epochs if steps.size else 1.0
    if steps.size:
        ax.plot(np.arange(1, steps.size + 1), steps, color="0.35", linewidth=1,
                marker="." if steps.size <= 200 else None, markersize=4, label="loss per step (batch)")
        for epoch in range(1, n_epochs):
            ax.axvline(epoch * per_epoch + 0.5, color="0.6", linestyle=":", linewidth=1)
        ax.set_xlabel("training step (batch); dotted: epoch boundaries")
        ax.set_title(f"Training loss: {steps.size} steps in {n_epochs} epoch(s)", fontsize=10, pad=14)
    else:
        ax.set_xlabel("epoch")
        ax.set_title("Training history (per epoch)", fontsize=10)
    for name, values in sorted(curves.items()):
        x = np.arange(1, values.size + 1) * per_epoch
        ax.plot(x, values, marker="o", markersize=4, linewidth=1.2, label=f"{name} (per epoch)")
    _loss_axis(ax, np.concatenate([steps, *curves.values()]))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def robust_limits(values: np.ndarray) -> tuple[float, float]:
    """(low, high) colour range: the 1st and 99th percentiles of the finite values.

    A constant image gets a narrow band around its value so the scale never collapses;
    no finite value gives (0, 1).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = (float(v) for v in np.percentile(values, ROBUST_PERCENTILES))
    if high <= low:
        pad = max(abs(low) * 1e-3, 1e-6)
        low, high = low - pad, high + pad
    return low, high


def centred_phase(phase: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """phase (rad) wrapped into (c - pi, c + pi], c the circular mean over ``valid`` (bool,
    same shape), so a narrow phase range near +-pi is not split across the wrap."""
    centre = np.angle(np.mean(np.exp(1j * phase[valid]))) if valid.any() else 0.0
    return centre + np.angle(np.exp(1j * (phase - centre)))


def _figure(size_in, right=0.8):
    # A fixed layout: constrained/tight layout would double the drawing time.
    fig = Figure(figsize=size_in, dpi=DPI)
    fig.subplots_adjust(left=0.14, right=right, bottom=0.13, top=0.88)
    FigureCanvasAgg(fig)
    return fig


def _loss_axis(ax, values):
    finite = values[np.isfinite(values)]
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        if finite.max() < 10 * finite.min():  # within a decade only minor ticks get labels
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_ylabel("loss / metric (log)")
        return
    formatter = ScalarFormatter(useOffset=True, useMathText=True)
    formatter.set_powerlimits((-3, 4))
    ax.yaxis.set_major_formatter(formatter)
    ax.set_ylabel("loss / metric (linear)")


def _show(ax, image, style, limits, extent=None):
    cmap = {"phase": PHASE_CMAP, "error": ERROR_CMAP}.get(style, AMPLITUDE_CMAP)
    return ax.imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1],
                     interpolation="nearest", origin="upper", extent=extent)


def _colorbar(fig, ax, image, kind, limits, values):
    ax.apply_aspect()  # the image's real box, so the bar sits right beside it
    box = ax.get_position()
    cax = fig.add_axes((box.x1 + 0.02, box.y0, 0.025, box.height))
    bar = fig.colorbar(image, cax=cax, extend=_extend(values, limits))
    bar.set_label(_range_label(kind, limits), fontsize=9)


def _extend(values, limits):
    """Colour bar arrows for values the range clips."""
    values = np.asarray(values)
    below, above = bool(np.any(values < limits[0])), bool(np.any(values > limits[1]))
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get((below, above), "neither")


def _range_label(kind, limits, error=False):
    """Colour bar label: quantity, unit and the colour range, e.g. 'phase (rad)\nrange -0.2 .. 0.3 rad'."""
    unit = " rad" if kind == "phase" else ""
    name = UNITS[kind].replace(" (", " error (") if error else UNITS[kind]
    shown = f"±{limits[1]:.3g}" if error else f"{limits[0]:.3g} .. {limits[1]:.3g}"
    return f"{name}\nrange {shown}{unit}"


def _draw_tile_grid(ax, rows, cols, side, n_shown):
    """Separate the tiles, number them and show pixel ticks relative to each tile."""
    for r in range(1, rows):
        ax.axhline(r * side - 0.5, color="white", linewidth=1.5)
    for c in range(1, cols):
        ax.axvline(c * side - 0.5, color="white", linewidth=1.5)
    for i in range(n_shown):
        r, c = divmod(i, cols)
        ax.text(c * side + 1, r * side + 1, str(i), color="white", fontsize=7, va="top",
                ha="left", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1, "linewidth": 0})
    local = FuncFormatter(lambda value, _pos: f"{int(round(value)) % side}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MultipleLocator(max(side // 2, 1)))
        axis.set_major_formatter(local)


def _save(fig, path):
    path = Path(path)
    # Fast zlib level: encoding at the default level takes a quarter of the bundle time.
    fig.savefig(path, dpi=DPI, pil_kwargs={"compress_level": 1})
    return path

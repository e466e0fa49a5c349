"""PNG figures of the debug bundle: patch grids, stitched canvas, loss curve.

Every figure is a ``matplotlib.figure.Figure`` rendered by its own ``FigureCanvasAgg``:
no pyplot, no global state, safe to call from several threads. Each figure has a
title, a colour bar with units and axes labelled in pixels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, FuncFormatter, MultipleLocator

DPI = 100
GRID_MAX_PATCHES = 16
AMPLITUDE_CMAP = colormaps["viridis"].with_extremes(bad="lightgray")
PHASE_CMAP = colormaps["twilight"].with_extremes(bad="lightgray")


def save_patch_grid(path: str | Path, images: np.ndarray, *, kind: str, n_total: int) -> Path:
    """Save up to 16 patches as one tiled image with a shared colour scale.

    images: (n, N, N) float64, amplitude or phase (rad) of the first patches.
    kind: "amplitude" or "phase". n_total: number of patches in the bundle (for the title).
    Tiles are laid out row-major, 4 per row; ticks give pixels within each patch.
    """
    shown = images[:GRID_MAX_PATCHES]
    n_shown, side = shown.shape[0], shown.shape[1]
    cols = min(4, n_shown)
    rows = -(-n_shown // cols)
    mosaic = np.full((rows * side, cols * side), np.nan)
    for i, patch in enumerate(shown):
        r, c = divmod(i, cols)
        mosaic[r * side:(r + 1) * side, c * side:(c + 1) * side] = patch
    fig = _figure((1.6 * cols + 1.6, 1.6 * rows + 0.9))
    ax = fig.add_subplot()
    image = _show(ax, mosaic, kind, _limits(shown, kind))
    _draw_tile_grid(ax, rows, cols, side, n_shown)
    ax.set_title(f"Patch {kind}: first {n_shown} of {n_total} ({side}x{side} px)", fontsize=10)
    ax.set_xlabel("x within patch (px)")
    ax.set_ylabel("y within patch (px)")
    _colorbar(fig, ax, image, kind)
    return _save(fig, path)


def save_canvas(path: str | Path, image: np.ndarray, *, kind: str,
                mask: np.ndarray | None = None) -> Path:
    """Save the stitched canvas (M, M) float64 amplitude or phase (rad).

    mask: (M, M) bool, True where covered; uncovered pixels are drawn light grey and
    excluded from the colour scale.
    """
    shown = np.ma.masked_array(image, mask=None if mask is None else ~mask)
    fig = _figure((5.2, 4.4))
    ax = fig.add_subplot()
    covered = shown.compressed()
    image_artist = _show(ax, shown, kind, _limits(covered, kind))
    size = f"{image.shape[1]}x{image.shape[0]} px"
    ax.set_title(f"Stitched object {kind} ({size})", fontsize=10)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    _colorbar(fig, ax, image_artist, kind)
    return _save(fig, path)


def save_loss_curve(path: str | Path, history: Mapping[str, Sequence[float]] | None) -> Path:
    """Save per-epoch training curves: one line per list in ``history``.

    history: dict name -> sequence of per-epoch floats, or None. Log y-axis when every
    finite value is positive. Without any curve the figure says "no training history".
    """
    curves = {k: np.asarray(v, dtype=np.float64) for k, v in (history or {}).items() if len(v)}
    fig = _figure((5.6, 3.8), right=0.95)
    ax = fig.add_subplot()
    ax.set_title("Training history (per epoch)", fontsize=10)
    if not curves:
        ax.text(0.5, 0.5, "no training history", ha="center", va="center",
                transform=ax.transAxes, fontsize=12)
        ax.set_axis_off()
        return _save(fig, path)
    for name, values in sorted(curves.items()):
        ax.plot(np.arange(1, values.size + 1), values, marker="o", markersize=3, label=name)
    finite = np.concatenate([v[np.isfinite(v)] for v in curves.values()])
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        if finite.max() < 10 * finite.min():  # within a decade only minor ticks get labels
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / metric")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _figure(size_in, right=0.8):
    # A fixed layout: constrained/tight layout would double the drawing time.
    fig = Figure(figsize=size_in, dpi=DPI)
    fig.subplots_adjust(left=0.14, right=right, bottom=0.13, top=0.9)
    FigureCanvasAgg(fig)
    return fig


def _limits(values, kind):
    if kind == "phase":
        return -np.pi, np.pi
    if values.size == 0:
        return 0.0, 1.0
    return float(np.min(values)), float(np.max(values))


def _show(ax, image, kind, limits):
    cmap = PHASE_CMAP if kind == "phase" else AMPLITUDE_CMAP
    return ax.imshow(image, cmap=cmap, vmin=limits[0], vmax=limits[1],
                     interpolation="nearest", origin="upper")


def _colorbar(fig, ax, image, kind):
    label = "phase (rad)" if kind == "phase" else "amplitude (arb. units)"
    ax.apply_aspect()  # the image's real box, so the bar sits right beside it
    box = ax.get_position()
    cax = fig.add_axes((box.x1 + 0.02, box.y0, 0.025, box.height))
    fig.colorbar(image, cax=cax).set_label(label)


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

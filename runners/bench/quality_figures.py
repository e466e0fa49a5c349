"""The quality study's figures: quality.png (truth | PINN | error, and the iterative's) and quality_zoom.png
(a crop at the centre of the test canvas, pixel for pixel), drawn from the runs' saved reconstructions.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ptycho import stitching
from ptycho.evaluation import bundle, plots
from ptycho.pipeline import RECONSTRUCTION_FILE
from runners.bench.quality_report import AMPLITUDE_ONLY, NO_OVERLAP, cell_label, cell_of, median_run

FIGURE_GRIDSIZE = 2
ZOOM_SIZE = 64  # px of object per side in quality_zoom.png
ZOOM_PANEL_IN, ZOOM_ROW_IN, ZOOM_BAR_IN = 2.4, 3.0, 1.2  # a panel's width, a dataset row's height, the bar's


def load_stitched(run_dir) -> stitching.Stitched:
    """The stitched test reconstruction a run saved (RECONSTRUCTION_FILE in its run_dir)."""
    with np.load(Path(run_dir) / RECONSTRUCTION_FILE) as saved:
        return stitching.Stitched(saved["canvas"], saved["covered"], saved["offsets_xy"], saved["centre_xy"],
                                  int(saved["crop"]))


def _truth_part(path: Path, stitched, test, dataset: str):
    """truth | reconstruction | error of one stitched canvas (the bundle's truth figure), read back as an image."""
    from matplotlib.image import imread

    truth, inside = stitching.ground_truth_window(test.object_guess, stitched)
    rows, mask = bundle.truth_comparison_rows(stitched.canvas, stitched.covered, truth, inside)
    if dataset in AMPLITUDE_ONLY:
        rows = {"amplitude": rows["amplitude"]}
    return imread(plots.save_truth_comparison(path, rows, mask))


def write_figure(out: Path, runs: list[dict], test_sets: dict, iterative_canvases: dict) -> Path:
    """quality.png: per dataset truth | PINN | error of the median seed, then truth | iterative | error
    (the bundle's truth figure, stacked). iterative_canvases: dataset -> Stitched or None."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    parts = []
    for dataset, test in test_sets.items():
        candidates = [run for run in runs if run["dataset"] == dataset]
        gridsize = FIGURE_GRIDSIZE if any(r["gridsize"] == FIGURE_GRIDSIZE for r in candidates) \
            else max(r["gridsize"] for r in candidates)
        at_gridsize = [r for r in candidates if r["gridsize"] == gridsize]
        cell = cell_of(at_gridsize[0])  # the first (loss, overlap) run at that gridsize
        seeds = [r for r in at_gridsize if cell_of(r) == cell]
        chosen = median_run(seeds)
        stitched = load_stitched(chosen["run_dir"])
        only = ", amplitude only" if dataset in AMPLITUDE_ONLY else ""
        which = f"gridsize {gridsize}" if len({cell_of(r) for r in candidates}) == len(
            {r["gridsize"] for r in candidates}) else cell_label(gridsize, *cell)
        parts.append((f"{dataset}: PINN at {which}, seed {chosen['seed']} (median amp_mae of {len(seeds)} "
                      f"seeds){only}", _truth_part(out / f"quality_{dataset}.png", stitched, test, dataset)))
        if iterative_canvases.get(dataset) is not None:
            parts.append((f"{dataset}: iterative reference (cdtools L-BFGS){only}",
                          _truth_part(out / f"quality_{dataset}_iterative.png", iterative_canvases[dataset], test,
                                      dataset)))
    heights = [image.shape[0] for _, image in parts]
    width = max(image.shape[1] for _, image in parts)
    fig = Figure(figsize=(width / plots.DPI, (sum(heights) + 40 * len(parts)) / plots.DPI), dpi=plots.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(parts), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (title, image) in zip(axes, parts):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(title, fontsize=12)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.97, hspace=0.08)
    path = out / "quality.png"
    fig.savefig(path)
    return path


def _object_crop(image: np.ndarray, top: int, left: int, y0: int, x0: int, size: int) -> np.ndarray:
    """(size, size) float64 of ``image``, whose pixel (0, 0) is object pixel (top, left), over object rows
    y0.. and columns x0..; NaN where the image does not reach."""
    crop = np.full((size, size), np.nan)
    r0, c0 = y0 - top, x0 - left
    rows = slice(max(r0, 0), min(r0 + size, image.shape[0]))
    cols = slice(max(c0, 0), min(c0 + size, image.shape[1]))
    if rows.start < rows.stop and cols.start < cols.stop:
        crop[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0] = image[rows, cols]
    return crop


def _fitted_amplitude(stitched: stitching.Stitched, object_guess: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(the canvas's amplitude after the metrics' global fit, NaN where uncovered; the object row and column
    of its pixel (0, 0))."""
    truth, inside = stitching.ground_truth_window(object_guess, stitched)
    rows, _ = bundle.truth_comparison_rows(stitched.canvas, stitched.covered, truth, inside)
    top, left = np.round(stitched.centre_xy[::-1]).astype(int) - stitched.canvas.shape[0] // 2
    return np.where(stitched.covered, rows["amplitude"][1], np.nan), int(top), int(left)


def zoom_panels(runs: list[dict], test, iterative_canvas, size: int = ZOOM_SIZE) -> tuple[int, int, list]:
    """(y0, x0, [(title, crop or None)]) of one dataset's row of quality_zoom.png: the object rows y0..y0+size-1
    and columns x0..x0+size-1 around the centre of the test canvas (the first run's ``centre_xy``); the truth's
    amplitude, the median seed's of every (gridsize, loss, overlap) cell of ``runs`` in run order and the
    iterative's (None without one), each (size, size) float64 after the metrics' global fit, NaN where uncovered."""
    centre_x, centre_y = np.round(load_stitched(runs[0]["run_dir"]).centre_xy).astype(int)
    y0, x0 = int(centre_y) - size // 2, int(centre_x) - size // 2
    panels = [("truth", _object_crop(np.abs(np.asarray(test.object_guess)), 0, 0, y0, x0, size))]
    for gridsize, loss, overlap in dict.fromkeys((run["gridsize"], *cell_of(run)) for run in runs):
        chosen = median_run([run for run in runs if (run["gridsize"], *cell_of(run)) == (gridsize, loss, overlap)])
        amplitude, top, left = _fitted_amplitude(load_stitched(chosen["run_dir"]), test.object_guess)
        title = (f"PINN gs{gridsize} {loss}" + ("" if overlap == NO_OVERLAP else f"\n{overlap} overlap")
                 + f", seed {chosen['seed']}\namp_mae {chosen['amp_mae']:.4f}")
        panels.append((title, _object_crop(amplitude, top, left, y0, x0, size)))
    if iterative_canvas is None:
        panels.append(("iterative: n/a", None))
    else:
        amplitude, top, left = _fitted_amplitude(iterative_canvas, test.object_guess)
        panels.append(("iterative (cdtools)", _object_crop(amplitude, top, left, y0, x0, size)))
    return y0, x0, panels


def write_zoom_figure(out: Path, runs: list[dict], test_sets: dict, iterative_canvases: dict,
                      size: int = ZOOM_SIZE) -> Path:
    """quality_zoom.png (``runners.bench.quality``'s docstring): one row of ``zoom_panels`` per dataset, drawn
    pixel for pixel (interpolation 'nearest') on the truth crop's colour range (its 1st to 99th percentile)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = len(test_sets), len({(run["gridsize"], *cell_of(run)) for run in runs}) + 2
    width, height = n_cols * ZOOM_PANEL_IN + ZOOM_BAR_IN, n_rows * ZOOM_ROW_IN + 0.5
    fig = Figure(figsize=(width, height), dpi=plots.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    fig.subplots_adjust(left=0.6 / width, right=(n_cols * ZOOM_PANEL_IN) / width, bottom=0.02,
                        top=1 - 0.75 / height, wspace=0.12, hspace=0.3)
    fig.suptitle(f"Amplitude, {size} x {size} px at the centre of the test canvas, one object pixel per block "
                 "(no interpolation),\nafter the metrics' global fit; each row on its truth's colour range",
                 fontsize=9)
    for row, (dataset, test) in enumerate(test_sets.items()):
        y0, x0, panels = zoom_panels([run for run in runs if run["dataset"] == dataset], test,
                                     iterative_canvases.get(dataset), size)
        limits = plots.robust_limits(panels[0][1])
        for ax, (title, image) in zip(axes[row], panels):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_box_aspect(1)
            ax.set_title(title, fontsize=8)
            if image is None:
                ax.text(0.5, 0.5, "no iterative reference\n(cdtools not installed)", ha="center", va="center",
                        fontsize=8, transform=ax.transAxes)
                continue
            artist = ax.imshow(np.ma.masked_invalid(image), cmap=plots.AMPLITUDE_CMAP, vmin=limits[0],
                               vmax=limits[1], interpolation="nearest", origin="upper")
            if title == "truth":
                truth_artist = artist
        axes[row, 0].set_ylabel(f"{dataset}\nobject rows {y0}..{y0 + size - 1}\ncolumns {x0}..{x0 + size - 1}",
                                fontsize=8)
        axes[row, -1].apply_aspect()
        box = axes[row, -1].get_position()
        bar = fig.colorbar(truth_artist, cax=fig.add_axes((box.x1 + 0.2 / width, box.y0, 0.15 / width, box.height)))
        bar.set_label(f"amplitude\n{limits[0]:.3g} .. {limits[1]:.3g}", fontsize=8)
    path = out / "quality_zoom.png"
    fig.savefig(path, dpi=plots.DPI)
    return path

"""Phase C2: compare two debug bundles (e.g. TensorFlow vs PyTorch) and give a verdict.

Pure comparison, no tracking: read two ``stats.json`` (docs/design.md §8 keys; either may come
from the community's own PyTorch pipeline), flatten their numeric statistics to dotted
names (``patch_amplitude.mean``, ``quality.amp_ssim`` ...), and for every statistic the
two have in common compute

    ratio       = b / a          (1.0 when both are 0, inf when only a is 0)
    difference  = b - a

A statistic passes when ``|ratio - 1| <= tolerance`` (default 0.10, i.e. ±10%) or
``|difference| <= atol`` (default 0, for statistics that may sit at zero); a statistic in radians
(its name holds ``phase``) also passes when ``|difference| <= phase_atol_rad``: a phase is an
angle, and a ratio of two small angles (0.0195 vs 0.0200 rad after a short run) says nothing
about agreement. The verdict is
GREEN when every compared statistic passes. Statistics that only one bundle carries are
listed, not judged; the docs/design.md §8 amplitude statistics must be in both.

The figure (:func:`comparison_figure`) puts the two bundles side by side with their
difference. Bundles hold JSON and PNGs only, so by default it shows each bundle's rendered
PNGs (patch amplitude/phase grids, canvas amplitude/phase) and the difference of the
rendered images' luminance: a visual aid, not a numerical difference. When the caller has
the arrays (patches and canvas of both runs), it passes them and the figure shows the
amplitudes, phases and their numerical differences instead.
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DEFAULT_TOLERANCE = 0.10
# A global phase offset is a gauge freedom of ptychography, not a property of the model.
DEFAULT_IGNORED = ("quality.phase_offset",)
REQUIRED_STATISTICS = tuple(
    [f"patch_amplitude.{k}" for k in ("mean", "std", "min", "max", "var_zero_mean")]
    + [f"canvas_amplitude.{k}" for k in ("mean", "std", "min", "max")]
)
ARRAY_KEYS = ("patches", "canvas")
BUNDLE_IMAGES = ("patch_amplitude_grid.png", "patch_phase_grid.png",
                 "canvas_amplitude.png", "canvas_phase.png")


class BundleComparisonError(ValueError):
    """A bundle or statistic needed for the comparison is missing or malformed."""


@dataclass(frozen=True)
class StatisticComparison:
    """One statistic of both bundles: values a and b, ratio b/a, difference b - a."""

    name: str
    a: float
    b: float
    ratio: float
    difference: float
    passed: bool


@dataclass(frozen=True)
class BundleComparison:
    """Result of :func:`compare_stats`; ``labels`` name bundle a and bundle b."""

    labels: tuple[str, str]
    tolerance: float
    atol: float
    statistics: tuple[StatisticComparison, ...]
    only_in_a: tuple[str, ...]
    only_in_b: tuple[str, ...]
    phase_atol_rad: float = 0.0

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.statistics)

    @property
    def verdict(self) -> str:
        """"GREEN" when every compared statistic is within tolerance, else "RED"."""
        return "GREEN" if self.passed else "RED"

    @property
    def failures(self) -> tuple[StatisticComparison, ...]:
        return tuple(s for s in self.statistics if not s.passed)

    def metrics(self) -> dict[str, float]:
        """Flat metrics ``<stat>.ratio`` and ``<stat>.diff`` (finite values only, for MLflow)."""
        flat = {}
        for s in self.statistics:
            for suffix, value in (("ratio", s.ratio), ("diff", s.difference)):
                if math.isfinite(value):
                    flat[f"{s.name}.{suffix}"] = value
        return flat

    def parity(self) -> dict[str, float | str]:
        """At a glance: ``worst_rel_diff`` (the largest finite |ratio - 1|), ``worst_statistic``
        (its name), ``n_outside_tolerance`` and ``n_compared``."""
        finite = [s for s in self.statistics if math.isfinite(s.ratio)]
        worst = max(finite, key=lambda s: abs(s.ratio - 1.0), default=None)
        return {"worst_rel_diff": abs(worst.ratio - 1.0) if worst else 0.0,
                "worst_statistic": worst.name if worst else "-",
                "n_outside_tolerance": len(self.failures), "n_compared": len(self.statistics)}

    def to_dict(self) -> dict:
        """JSON-ready summary; non-finite ratios become None."""
        rows = [{k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                 for k, v in asdict(s).items()} for s in self.statistics]
        return {"verdict": self.verdict, "labels": list(self.labels),
                "tolerance": self.tolerance, "atol": self.atol, "phase_atol_rad": self.phase_atol_rad,
                "statistics": rows,
                "failures": [s.name for s in self.failures], "parity": self.parity(),
                "only_in_a": list(self.only_in_a), "only_in_b": list(self.only_in_b)}


def load_bundle_stats(bundle) -> dict:
    """Read ``stats.json`` from a bundle directory (or the path of a stats.json itself)."""
    path = Path(bundle)
    if path.is_dir():
        path = path / "stats.json"
    if not path.is_file():
        raise BundleComparisonError(f"missing file {path}: not a debug bundle (no stats.json)")
    try:
        stats = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleComparisonError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(stats, dict):
        raise BundleComparisonError(f"{path} must hold a JSON object, got {type(stats).__name__}")
    return stats


def flatten_statistics(stats: dict, prefix: str = "") -> dict[str, float | None]:
    """Numeric leaves of a nested stats dict under dotted names; null leaves map to None.

    Lists, strings and booleans are not statistics and are left out.
    """
    flat = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_statistics(value, f"{name}."))
        elif value is None:
            flat[name] = None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def compare_stats(stats_a: dict, stats_b: dict, *, tolerance: float = DEFAULT_TOLERANCE,
                  atol: float = 0.0, phase_atol_rad: float = 0.0, ignore=DEFAULT_IGNORED,
                  labels: tuple[str, str] = ("a", "b")) -> BundleComparison:
    """Compare two stats.json dicts statistic by statistic (see the module docstring).

    ignore: fnmatch patterns of statistic names left out of the comparison.
    Raises BundleComparisonError when a REQUIRED_STATISTICS entry is missing in either,
    naming the bundle label and the key, or when tolerance/atol are negative.
    """
    if not (tolerance >= 0 and atol >= 0 and phase_atol_rad >= 0):
        raise BundleComparisonError(f"tolerance, atol and phase_atol_rad must be >= 0, got "
                                    f"{tolerance}, {atol}, {phase_atol_rad}")
    flat_a, flat_b = (_judged(flatten_statistics(s), ignore) for s in (stats_a, stats_b))
    for label, flat in zip(labels, (flat_a, flat_b)):
        missing = [k for k in REQUIRED_STATISTICS if flat.get(k) is None]
        if missing:
            raise BundleComparisonError(f"stats.json of {label} lacks required statistics "
                                        f"{missing} (docs/design.md §8 keys)")
    common = sorted(flat_a.keys() & flat_b.keys())
    rows = tuple(_compare_one(k, flat_a[k], flat_b[k], tolerance,
                              max(atol, phase_atol_rad) if "phase" in k else atol) for k in common)
    return BundleComparison(labels=tuple(labels), tolerance=float(tolerance), atol=float(atol),
                            phase_atol_rad=float(phase_atol_rad),
                            statistics=rows, only_in_a=tuple(sorted(flat_a.keys() - flat_b.keys())),
                            only_in_b=tuple(sorted(flat_b.keys() - flat_a.keys())))


def compare_bundles(bundle_a, bundle_b, **options) -> BundleComparison:
    """:func:`compare_stats` of two bundle directories (or stats.json paths).

    Labels default to the paths, so error messages name the file concerned.
    """
    options.setdefault("labels", (str(bundle_a), str(bundle_b)))
    return compare_stats(load_bundle_stats(bundle_a), load_bundle_stats(bundle_b), **options)


def _judged(flat, ignore):
    return {k: v for k, v in flat.items() if not any(fnmatch.fnmatchcase(k, p) for p in ignore)}


def _compare_one(name, a, b, tolerance, atol):
    if a is None or b is None:  # a non-finite statistic (null in JSON) never passes
        return StatisticComparison(name, _nan(a), _nan(b), math.nan, math.nan, False)
    difference = b - a
    if a == 0:
        ratio = 1.0 if b == 0 else math.copysign(math.inf, b)
    else:
        ratio = b / a
    # The relative slack keeps a ratio of exactly 1 + tolerance (in decimal) inside.
    passed = abs(ratio - 1.0) <= tolerance * (1 + 1e-9) or abs(difference) <= atol
    return StatisticComparison(name, a, b, ratio, difference, bool(passed))


def _nan(value):
    return math.nan if value is None else value


def comparison_figure(bundle_a, bundle_b, path, *, labels=("a", "b"), arrays_a=None,
                      arrays_b=None, comparison: BundleComparison | None = None) -> Path:
    """Save a PNG putting bundle a, bundle b and their difference side by side.

    arrays_a, arrays_b: optional dicts with "patches" (n, N, N) complex and/or "canvas"
    (M, M) complex (e.g. the ``canvas`` of a run's reconstruction.npz); given both, rows
    show the amplitude and phase of each key the two share (patches as a grid of the first
    16) and b - a numerically (phase differences wrapped to (-pi, pi]). Otherwise rows show the
    bundles' PNGs (BUNDLE_IMAGES) and the difference of their rendered luminance; a PNG
    missing from a bundle gets a panel naming the missing file. comparison: when given,
    a last row charts every statistic's ratio b/a against the tolerance band.
    Returns the path.
    """
    if (arrays_a is None) != (arrays_b is None):
        raise BundleComparisonError("pass arrays for both bundles or for neither")
    rows = (_array_rows(arrays_a, arrays_b) if arrays_a is not None
            else _image_rows(Path(bundle_a), Path(bundle_b)))
    n_rows = len(rows) + (comparison is not None)
    fig = Figure(figsize=(15, 3.6 * n_rows), dpi=80)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows, 3)
    titles = (labels[0], labels[1], f"{labels[1]} - {labels[0]}")
    for r, (row_name, panels) in enumerate(rows):
        for c, (panel, title) in enumerate(zip(panels, titles)):
            _draw_panel(fig, fig.add_subplot(grid[r, c]), panel, f"{row_name}: {title}")
    if comparison is not None:
        _draw_ratios(fig.add_subplot(grid[-1, :]), comparison)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _draw_ratios(ax, comparison):
    names = [s.name for s in comparison.statistics]
    ratios = [s.ratio if math.isfinite(s.ratio) else 0.0 for s in comparison.statistics]
    colours = ["tab:green" if s.passed else "tab:red" for s in comparison.statistics]
    ax.bar(range(len(names)), ratios, color=colours)
    for bound in (1 - comparison.tolerance, 1 + comparison.tolerance):
        ax.axhline(bound, color="gray", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"ratio {comparison.labels[1]} / {comparison.labels[0]}", fontsize=8)
    ax.set_title(f"Statistics: verdict {comparison.verdict} (tolerance "
                 f"±{comparison.tolerance:.0%}; red = outside)", fontsize=9)


def _image_rows(dir_a, dir_b):
    rows = []
    for name in BUNDLE_IMAGES:
        image_a, image_b = _read_png(dir_a / name), _read_png(dir_b / name)
        if isinstance(image_a, str) or isinstance(image_b, str):
            diff = "no difference: a PNG is missing"
        elif image_a.shape != image_b.shape:
            diff = f"no difference: image sizes differ {image_a.shape[:2]} vs {image_b.shape[:2]}"
        else:
            diff = ("diff", _luminance(image_b) - _luminance(image_a))
        rows.append((f"{name} (rendered)", (image_a, image_b, diff)))
    return rows


def _array_rows(arrays_a, arrays_b):
    keys = [k for k in ARRAY_KEYS if k in arrays_a and k in arrays_b]
    if not keys:
        raise BundleComparisonError(f"arrays share none of the keys {ARRAY_KEYS}: got "
                                    f"{sorted(arrays_a)} and {sorted(arrays_b)}")
    rows = []
    for key in keys:
        a, b = (_array_image(arrays, key) for arrays in (arrays_a, arrays_b))
        if a.shape != b.shape:
            raise BundleComparisonError(f"arrays[{key!r}] shapes differ: {a.shape} vs {b.shape}")
        phase_diff = np.angle(b * np.conj(a))
        rows.append((f"{key} amplitude", (np.abs(a), np.abs(b), ("diff", np.abs(b) - np.abs(a)))))
        rows.append((f"{key} phase", (np.angle(a), np.angle(b), ("diff", phase_diff))))
    return rows


def _array_image(arrays, key):
    values = np.asarray(arrays[key])
    if key == "canvas":
        return values
    shown = values[:16]
    cols = min(4, len(shown))
    rows = -(-len(shown) // cols)
    side = shown.shape[1]
    mosaic = np.zeros((rows * side, cols * side), dtype=np.complex128)
    for i, patch in enumerate(shown):
        r, c = divmod(i, cols)
        mosaic[r * side:(r + 1) * side, c * side:(c + 1) * side] = patch
    return mosaic


def _read_png(path):
    return mpimg.imread(path) if path.is_file() else f"missing file:\n{path}"


def _luminance(image):
    rgb = image[..., :3] if image.ndim == 3 else image[..., None]
    return np.mean(rgb, axis=-1)


def _draw_panel(fig, ax, panel, title):
    ax.set_title(title, fontsize=8)
    if isinstance(panel, str):
        ax.text(0.5, 0.5, panel, ha="center", va="center", fontsize=8, wrap=True,
                transform=ax.transAxes)
        ax.set_axis_off()
    elif isinstance(panel, tuple):  # a difference: symmetric diverging scale
        limit = float(np.max(np.abs(panel[1])))
        if limit == 0:
            ax.set_title(f"{title} (identical)", fontsize=8)
        shown = ax.imshow(panel[1], cmap="RdBu_r", vmin=-(limit or 1.0), vmax=limit or 1.0)
        fig.colorbar(shown, ax=ax, fraction=0.046)
    elif panel.ndim == 3:  # a rendered PNG, already has its own colour bar
        ax.imshow(panel)
        ax.set_axis_off()
    else:
        fig.colorbar(ax.imshow(panel, cmap="viridis"), ax=ax, fraction=0.046)

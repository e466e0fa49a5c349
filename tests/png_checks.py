"""Checks of the PNG figures the code writes: read as pixels, sized as the code lays them out, not blank.

A file's size in bytes says nothing about what it shows; these read the pixels
(``matplotlib.image.imread``) so a test can check the figure's size, that every panel
shows something, and count the bars of a colour to hold them against the numbers drawn.
"""
import json
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.image import imread


def read_png(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of a PNG file (alpha dropped: the figures are opaque)."""
    pixels = imread(Path(path))
    rgb = pixels[..., :3] if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=-1)
    return np.round(rgb * 255).astype(np.uint8)


def assert_figure(path: str | Path, size_in: tuple[float, float], dpi: float) -> np.ndarray:
    """The figure at ``path`` as (H, W, 3) uint8, after checking it.

    size_in: (width, height) inches the code gives the figure, dpi its resolution: the PNG
    is that size to the pixel (matplotlib truncates). Fails on a blank image (one colour).
    """
    image = read_png(path)
    width, height = (side * dpi for side in size_in)
    assert abs(image.shape[1] - width) <= 1 and abs(image.shape[0] - height) <= 1, \
        f"{path}: {image.shape[1]}x{image.shape[0]} px, expected {width:.0f}x{height:.0f} (figure size x dpi)"
    assert not_blank(image), f"{path} is one colour"
    return image


def not_blank(image: np.ndarray) -> bool:
    """True when the pixels are not all one colour."""
    return bool(np.any(image.reshape(-1, image.shape[-1]) != image.reshape(-1, image.shape[-1])[0]))


def assert_cells_not_blank(image: np.ndarray, rows: int, cols: int, *, skip_rows=()) -> None:
    """Every cell of a ``rows`` x ``cols`` grid laid over ``image`` shows more than one colour."""
    height, width = image.shape[0] // rows, image.shape[1] // cols
    for r in set(range(rows)) - set(skip_rows):
        for c in range(cols):
            cell = image[r * height:(r + 1) * height, c * width:(c + 1) * width]
            assert not_blank(cell), f"panel row {r}, column {c} is blank"


def colour_fraction(image: np.ndarray) -> float:
    """Share of the pixels in colour (channels differing by more than 40 of 255): what colour
    maps fill; background, text and axes are grey."""
    channels = image.astype(np.int16)
    return float(np.mean(channels.max(axis=-1) - channels.min(axis=-1) > 40))


def count_bars(image: np.ndarray, colour: str) -> int:
    """How many separate runs of columns hold pixels of exactly ``colour`` (a matplotlib colour
    name, e.g. 'tab:red'): the bars of that colour in a bar chart, whatever their heights."""
    target = np.round(np.array(to_rgb(colour)) * 255).astype(np.uint8)
    columns = np.all(image == target, axis=-1).any(axis=0).astype(np.int8)
    return int(np.count_nonzero(np.diff(np.concatenate([[0], columns])) == 1))


def assert_comparison_figure(analysis: str | Path) -> None:
    """C2's comparison.png in ``analysis`` agrees with comparison.json beside it.

    Laid out by ``ptycho.evaluation.compare.comparison_figure``: 15 in wide at 80 dpi, 3.6 in per row,
    3 panels (tf, torch, difference) per image row: amplitude and phase of each ARRAY_KEYS
    entry (from arrays.npz) or one row per BUNDLE_IMAGES file (rendered PNGs), then the ratio
    chart with one bar per statistic, green where it passed and red where it failed.
    """
    from ptycho.evaluation.compare import ARRAY_KEYS, BUNDLE_IMAGES

    analysis = Path(analysis)
    result = json.loads((analysis / "comparison.json").read_text())
    image_rows = 2 * len(ARRAY_KEYS) if result["figure_from"] == "arrays.npz" else len(BUNDLE_IMAGES)
    rows = image_rows + 1
    image = assert_figure(analysis / "comparison.png", (15, 3.6 * rows), 80)
    assert_cells_not_blank(image, rows, 3, skip_rows=[image_rows])
    chart = image[image_rows * image.shape[0] // rows:]
    for colour, passed in (("tab:green", True), ("tab:red", False)):
        ratios = [abs(s["ratio"]) for s in result["statistics"] if s["passed"] is passed and s["ratio"]]
        tallest = max([abs(s["ratio"]) for s in result["statistics"] if s["ratio"]], default=0.0)
        drawn_for_sure = sum(ratio >= 0.02 * tallest for ratio in ratios)  # 3 px and more
        assert drawn_for_sure <= count_bars(chart, colour) <= len(ratios), (colour, count_bars(chart, colour), ratios)

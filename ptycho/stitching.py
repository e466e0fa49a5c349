"""Canvas sizes, global stitching and its quality: the bookkeeping both backends share.

Nothing here imports TensorFlow or PyTorch. The one step that moves pixels, summing
sub-pixel-shifted windows onto the canvas, is the backend's ``sum_windows`` (given to
:func:`reassemble_by_offsets`; ``ptycho.tf_reassembly`` and ``ptycho.torch.reassembly``
each supply theirs), so both backends place, count and normalise patches the same way.

Inference groups take every test position as the seed of one group, so each one contributes,
also at gridsize > 1. Patch (b, c) belongs to scan position ``coords_nn[b, 0, :, c]``. For
stitching each patch is cropped to its central ``crop`` x ``crop`` pixels (default N/2: the
region the decoders' main branch produces and the probe illuminates) and placed at its global
offset, the scan position minus the canvas centre, which is the scan's centre of mass rounded
to whole pixels. The canvas side is :func:`required_canvas_size` of the crop and the offsets.
Canvas pixel (row r, col c) shows the object at (y, x) = centre_xy[::-1] + (r, c) - M/2, so
the matching ground truth is an integer window of ``objectGuess``.

Normalisation by the overlap count divides by ``max(count, COUNT_FLOOR)``: exact wherever at
least a thousandth of a patch covers a pixel, a smooth fade to 0 at the bilinear rim, and
exactly 0 (never NaN) where no patch lands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ptycho import grouping, quality
from ptycho.data import PtychoData
from ptycho.grouping import Groups

COUNT_FLOOR = 1e-3
STITCH_CHUNK = 128  # patches per streamed stitching chunk: bounded memory, same result
STITCH_CHUNK_PIXELS = 2**22  # window pixels per chunk when no chunk size is given

# sum_windows(stacked (k, N, N, 3) float32 [real, imag, 1], shifts (k, 2) float32 [dx, dy]
# sub-pixel, window W, linear (k*W*W,) int64 canvas indices, n_pixels) -> (n_pixels, 3) float32:
# each stack translated by its shift into a W x W window, summed at the window's canvas pixels.
SumWindows = Callable[[np.ndarray, np.ndarray, int, np.ndarray, int], np.ndarray]


@dataclass(frozen=True, eq=False)
class Stitched:
    """A stitched reconstruction.

    canvas (M, M) complex64; covered (M, M) bool, True under at least one cropped patch;
    offsets_xy (n, 2) float64 [dx, dy] px of each patch centre from the canvas centre, in
    flat order b*C + c; centre_xy (2,) float64 object pixels [x, y] of canvas pixel (M/2, M/2);
    crop: side of the patch region stitched (px).
    """

    canvas: np.ndarray
    covered: np.ndarray
    offsets_xy: np.ndarray
    centre_xy: np.ndarray
    crop: int


def check_offsets(offsets_xy) -> np.ndarray:
    """(n, 2) float64 [dx, dy] offsets, or ValueError naming the shape or the non-finite values."""
    offsets = np.asarray(offsets_xy, dtype=np.float64)
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise ValueError(f"offsets_xy must be (n, 2) [dx, dy]; got shape {offsets.shape}")
    if not np.all(np.isfinite(offsets)):
        raise ValueError("offsets_xy must be finite (found NaN or Inf)")
    return offsets


def flat_offsets(coords_relative) -> np.ndarray:
    """(B, 1, 2, C) group offsets -> (B*C, 2) float64 [dx, dy], in flat order b*C + c."""
    return np.transpose(np.asarray(coords_relative, np.float64)[:, 0], (0, 2, 1)).reshape(-1, 2)


def required_canvas_size(N, offsets_xy) -> int:
    """Smallest even canvas side holding N x N patches centred at ``offsets_xy``.

    N: patch side (pixels); offsets_xy: (n, 2) [dx, dy] pixels relative to the canvas
    centre. Returns ``N + 2 * ceil(max |offset|)``, rounded up to even.
    """
    offsets = check_offsets(offsets_xy)
    if int(N) != N or N < 1:
        raise ValueError(f"required_canvas_size: N must be a positive integer; got {N}")
    reach = float(np.max(np.abs(offsets))) if offsets.size else 0.0
    size = int(N) + 2 * math.ceil(reach)
    return size + size % 2


def canvas_size_for(N: int, *coords_relative: np.ndarray) -> int:
    """Canvas side M holding every group's patches: :func:`required_canvas_size` of all offsets.

    coords_relative: one or more (B, 1, 2, C) arrays (pixels), e.g. the train and test groups.
    """
    return required_canvas_size(N, np.concatenate([flat_offsets(c) for c in coords_relative]))


def check_offsets_fit(spec, coords_relative: np.ndarray) -> None:
    """Raise ValueError when a group's offsets (B, 1, 2, C) would put a patch off the canvas
    of ``spec`` (a ModelSpec)."""
    if not spec.reassembles:
        return
    needed = canvas_size_for(spec.N, coords_relative)
    if needed > spec.canvas_size:
        raise ValueError(
            f"ModelSpec.canvas_size={spec.canvas_size} is too small for these groups: their offsets "
            f"need {needed} px (canvas_size_for(N, coords_relative)); patches would fall off the canvas"
        )


def reassemble_by_offsets(patches, offsets_xy, sum_windows: SumWindows, canvas_size=None,
                          chunk_size=None) -> np.ndarray:
    """Stitch patches into one canvas by shift-and-sum, normalised by the overlap count.

    patches: (n, N, N) complex (or real); offsets_xy: (n, 2) [dx, dy] pixels of each patch
    centre relative to the canvas centre (sub-pixel offsets are bilinear); canvas_size: M,
    default :func:`required_canvas_size`; chunk_size: patches per streamed chunk (default:
    as many as keep a chunk near ``STITCH_CHUNK_PIXELS``). Each patch is translated by its
    sub-pixel remainder into an (N+1)^2 window that is added at its integer position, so the
    cost scales with n * N^2, not n * M^2. Returns (M, M) complex64.
    """
    patches = np.asarray(patches)
    offsets = check_offsets(offsets_xy)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"reassemble_by_offsets: patches must be (n, N, N); got {patches.shape}")
    if patches.shape[0] != offsets.shape[0]:
        raise ValueError(f"reassemble_by_offsets: {patches.shape[0]} patches but {offsets.shape[0]} offsets")
    side = patches.shape[1]
    needed = required_canvas_size(side, offsets)
    size = needed if canvas_size is None else int(canvas_size)
    if size < needed:
        raise ValueError(
            f"reassemble_by_offsets: canvas_size {size} is too small for offsets up to "
            f"{np.max(np.abs(offsets)):.2f} px with N={side}; need at least {needed}"
        )
    if chunk_size is None:
        chunk_size = max(1, STITCH_CHUNK_PIXELS // (side + 1) ** 2)
    elif int(chunk_size) < 1:
        raise ValueError(f"reassemble_by_offsets: chunk_size must be >= 1; got {chunk_size}")
    totals = np.zeros((size * size, 3), np.float32)  # real, imag, count
    for begin in range(0, patches.shape[0], int(chunk_size)):
        chunk = slice(begin, begin + int(chunk_size))
        totals += _chunk_sums(patches[chunk], offsets[chunk], size, sum_windows)
    sums = totals.reshape(size, size, 3)
    count = np.maximum(sums[..., 2], COUNT_FLOOR)
    return ((sums[..., 0] + 1j * sums[..., 1]) / count).astype(np.complex64)


def _chunk_sums(patches, offsets, size, sum_windows: SumWindows) -> np.ndarray:
    """(size*size, 3) [real, imag, count] sums of one chunk of patches."""
    side = patches.shape[1]
    top_left = (size - side) // 2 + offsets[:, ::-1]  # (k, 2) [row, col]
    whole = np.floor(top_left)
    frac = (top_left - whole).astype(np.float32)
    carry = frac >= 1.0  # a remainder that rounds up to 1 in float32 is a whole pixel
    whole, frac = (whole + carry).astype(np.int64), np.where(carry, 0.0, frac)
    stacked = np.stack([patches.real, patches.imag, np.ones(patches.shape)], axis=-1).astype(np.float32)
    window = side + 1
    # Rows/cols past the canvas only ever receive exact zeros (zero remainder), so clip.
    steps = np.arange(window)
    rows = np.minimum(whole[:, 0, None] + steps, size - 1)  # (k, window)
    cols = np.minimum(whole[:, 1, None] + steps, size - 1)
    linear = (rows[:, :, None] * size + cols[:, None, :]).reshape(-1)
    shifts = np.ascontiguousarray(frac[:, ::-1], np.float32)  # [dx, dy]
    return np.asarray(sum_windows(stacked, shifts, window, linear, size * size), np.float32)


def inference_groups(data: PtychoData, gridsize: int, neighbor_count: int, seed: int) -> Groups:
    """Groups of ``data`` with every scan position as the seed of one group (B = n)."""
    if gridsize > 1:
        neighbor_count = min(neighbor_count, data.n_images)
    return grouping.group_positions(data.xcoords, data.ycoords, gridsize, neighbor_count, data.n_images, seed)


def global_offsets(groups: Groups, centre_xy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (B*C, 2) [dx, dy] px in flat order b*C + c, centre_xy (2,)).

    centre_xy defaults to the centre of mass of the groups' positions rounded to whole pixels.
    """
    positions = flat_offsets(groups.coords_nn)
    if centre_xy is None:
        centre_xy = np.round(positions.mean(axis=0))
    centre_xy = np.asarray(centre_xy, np.float64)
    return positions - centre_xy, centre_xy


def stitch_patches(patches: np.ndarray, groups: Groups, reassemble, crop: int | None = None) -> Stitched:
    """Stitch predicted patches (B, N, N, C) complex of ``groups`` into one canvas (module doc).

    reassemble: the backend's ``reassemble_by_offsets(patches, offsets_xy, canvas_size=,
    chunk_size=)``.
    """
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"stitch_patches: patches must be (B, N, N, C); got shape {patches.shape}")
    B, N, _, C = patches.shape
    if groups is None or np.shape(groups.coords_nn) != (B, 1, 2, C):
        got = None if groups is None else np.shape(groups.coords_nn)
        raise ValueError(
            f"stitch_patches: groups.coords_nn must be (B, 1, 2, C) = ({B}, 1, 2, {C}) to match the "
            f"patches; got {got}"
        )
    crop = N // 2 if crop is None else int(crop)
    if not 2 <= crop <= N or crop % 2:
        raise ValueError(f"stitch_patches: crop must be an even number in [2, N={N}]; got {crop}")
    offsets, centre = global_offsets(groups)
    start = (N - crop) // 2
    centres = patches[:, start:start + crop, start:start + crop, :]
    flat = np.transpose(centres, (0, 3, 1, 2)).reshape(B * C, crop, crop)
    size = required_canvas_size(crop, offsets)
    canvas = reassemble(flat, offsets, canvas_size=size, chunk_size=STITCH_CHUNK)
    return Stitched(canvas, covered_mask(size, crop, offsets), offsets, centre, crop)


def covered_mask(size: int, crop: int, offsets_xy: np.ndarray) -> np.ndarray:
    """(size, size) bool: pixels under at least one crop x crop patch at ``offsets_xy`` (rounded)."""
    covered = np.zeros((size, size), bool)
    corners = np.round(np.asarray(offsets_xy)[:, ::-1]).astype(int) + (size - crop) // 2
    for row, col in np.clip(corners, 0, size - crop):
        covered[row:row + crop, col:col + crop] = True
    return covered


def ground_truth_window(object_guess: np.ndarray, stitched: Stitched) -> tuple[np.ndarray, np.ndarray]:
    """(truth (M, M) complex64, inside (M, M) bool): ``objectGuess`` under the canvas, 0 outside it."""
    obj = np.asarray(object_guess)
    if obj.ndim != 2:
        raise ValueError(f"ground_truth_window: object_guess must be (H, W); got shape {obj.shape}")
    size = stitched.canvas.shape[0]
    top, left = np.round(stitched.centre_xy[::-1]).astype(int) - size // 2
    truth = np.zeros((size, size), np.complex64)
    inside = np.zeros((size, size), bool)
    rows = slice(max(top, 0), min(top + size, obj.shape[0]))
    cols = slice(max(left, 0), min(left + size, obj.shape[1]))
    if rows.start < rows.stop and cols.start < cols.stop:
        window = (slice(rows.start - top, rows.stop - top), slice(cols.start - left, cols.stop - left))
        truth[window] = obj[rows, cols]
        inside[window] = True
    return truth, inside


def stitched_quality(stitched: Stitched, object_guess: np.ndarray) -> dict[str, float]:
    """ptycho.quality.reconstruction_quality over the covered pixels that lie inside the object."""
    truth, inside = ground_truth_window(object_guess, stitched)
    mask = stitched.covered & inside
    if not mask.any():
        raise ValueError("stitched_quality: the stitched canvas does not overlap the ground-truth object")
    return quality.reconstruction_quality(stitched.canvas, truth, mask=mask)

"""Inference on a test split, global stitching and reconstruction quality.

Every test position is the seed of one inference group (so each one contributes, also at
gridsize > 1). The model predicts object patches (B, N, N, C); patch (b, c) belongs to scan
position ``coords_nn[b, 0, :, c]``. For stitching each patch is cropped to its central
``crop`` x ``crop`` pixels (default N/2: the region the decoders' main branch produces and
the probe illuminates) and placed at its global offset, the scan position minus the
canvas centre, which is the scan's centre of mass rounded to whole pixels. The canvas side
is ``tf_helper.required_canvas_size(crop, offsets)``, so every offset fits.

Canvas pixel (row r, col c) shows the object at (y, x) = centre_xy[::-1] + (r, c) - M/2,
so the matching ground truth is an integer window of ``objectGuess``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ptycho import grouping, quality, tf_helper
from ptycho.data import PtychoData
from ptycho.grouping import Groups

INFERENCE_BATCH = 16
STITCH_CHUNK = 128  # patches per streamed stitching chunk: bounded memory, same result


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


def inference_groups(data: PtychoData, gridsize: int, neighbor_count: int, seed: int) -> Groups:
    """Groups of ``data`` with every scan position as the seed of one group (B = n)."""
    if gridsize > 1:
        neighbor_count = min(neighbor_count, data.n_images)
    return grouping.group_positions(data.xcoords, data.ycoords, gridsize, neighbor_count, data.n_images, seed)


def predict_patches(model, inputs: dict[str, np.ndarray], batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Object patches (B, N, N, C) complex64 predicted for inputs {'diffraction', ...} (X = s * A).

    Only the encoder and decoders run (``PtychoPINN.predict_step``), ``batch_size`` groups at a time.
    """
    if batch_size < 1:
        raise ValueError(f"predict_patches: batch_size must be >= 1; got {batch_size}")
    outputs = model.predict({"diffraction": inputs["diffraction"]}, batch_size=batch_size, verbose=0)
    return np.asarray(outputs["object"], np.complex64)


def global_offsets(groups: Groups, centre_xy: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(offsets (B*C, 2) [dx, dy] px in flat order b*C + c, centre_xy (2,)).

    centre_xy defaults to the centre of mass of the groups' positions rounded to whole pixels.
    """
    positions = np.transpose(np.asarray(groups.coords_nn, np.float64)[:, 0], (0, 2, 1)).reshape(-1, 2)
    if centre_xy is None:
        centre_xy = np.round(positions.mean(axis=0))
    centre_xy = np.asarray(centre_xy, np.float64)
    return positions - centre_xy, centre_xy


def stitch_patches(patches: np.ndarray, groups: Groups, crop: int | None = None) -> Stitched:
    """Stitch predicted patches (B, N, N, C) complex of ``groups`` into one canvas (module doc)."""
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
    size = tf_helper.required_canvas_size(crop, offsets)
    canvas = tf_helper.reassemble_by_offsets(flat, offsets, canvas_size=size, chunk_size=STITCH_CHUNK)
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

"""Canvas sizes, global stitching and its quality: the bookkeeping both backends share.

Nothing here imports TensorFlow or PyTorch. The one step that moves pixels, summing
sub-pixel-shifted windows onto the canvas, is the backend's ``sum_windows`` (given to
:func:`reassemble_by_offsets`; ``ptycho.tf.reassembly`` and ``ptycho.torch.reassembly``
each supply theirs), so both backends place, count and normalise patches the same way.

Inference groups take every test position as the seed of one group, so each one contributes,
also at gridsize > 1. Patch (b, c) belongs to scan position ``coords_nn[b, 0, :, c]``. For
stitching each patch is cropped to its central ``crop`` x ``crop`` pixels (default N/2: the
region the decoders' main branch produces and the probe illuminates) and placed at its global
offset, the scan position minus the canvas centre, which is the scan's centre of mass rounded
to whole pixels. The canvas side is :func:`required_canvas_size` of the crop and the offsets.
Canvas pixel (row r, col c) shows the object at (y, x) = centre_xy[::-1] + (r, c) - M/2, so
the matching ground truth is an integer window of ``objectGuess``.

Phase offsets (``phase_offsets``): the data fix each patch's phase only up to a constant (at gridsize
g > 1, each group's), because |FFT2(P * O e^{ia})| does not depend on a. A network therefore returns
patches whose phases agree within a patch but carry their own offsets; averaged as they are
(``'none'``), they scramble the phase at large scales and cancel amplitude where offsets differ (true
patches with their own offsets removed: phase_mae 0.68x the constant-object floor on the default data,
against 0.02x stitched as they are). Two ways to set the offsets before summing:

- ``'com'`` (the runner's default): each patch's weighted mean phase is put on the large-scale phase
  that the scan's diffraction centres of mass fix (:mod:`ptycho.com_phase`: data and probe only, no
  reconstruction). On the truth's patches it restores 0.08x the floor from any offsets; on the
  networks of the quality study it takes the phase from 0.83-0.90x the floor to about 0.45x.
- ``'sync'``: every patch is multiplied by the unit factor that makes it agree with the patches it
  overlaps (:func:`synchronise_phases`): the classical phase-synchronisation problem, solved by the
  leading eigenvector of the overlap matrix H[k, l] = sum over the overlap of z_k conj(z_l), refined
  by projected power iterations. Right only for patches that are right up to their offsets: on the
  true patches it restores the ceiling, on the study's networks it made the phase worse (up to 1.8x
  the floor), because it chains the patches' own errors across the scan.

Normalisation by the overlap count divides by ``max(count, COUNT_FLOOR)``: exact wherever at
least a thousandth of a patch covers a pixel, a smooth fade to 0 at the bilinear rim, and
exactly 0 (never NaN) where no patch lands.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import linalg, sparse
from scipy.sparse import csgraph
from scipy.sparse import linalg as sparse_linalg
from scipy.spatial import cKDTree

from ptycho import com_phase
from ptycho.data import grouping
from ptycho.evaluation import quality
from ptycho.data.contract import PtychoData
from ptycho.data.grouping import Groups

COUNT_FLOOR = 1e-3
STITCH_CHUNK = 128  # patches per streamed stitching chunk: bounded memory, same result
STITCH_CHUNK_PIXELS = 2**22  # window pixels per chunk when no chunk size is given
PHASE_OFFSETS = ("com", "sync", "none")  # stitch_patches' phase_offsets (module doc)
# components up to this many patches: dense (LAPACK, top eigenvector only); larger: ARPACK, which on the
# sparse overlap matrix of c1=scaled's 2048 test patches takes 0.5 s where LAPACK took 16 s
SYNC_DENSE_MAX = 256
SYNC_POWER_STEPS = 20  # projected power iterations after the eigenvector
SYNC_MIN_WEIGHT = 1e-12  # relative |(H v)_k| below which a patch keeps its phase (no usable overlap)

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
    phase_corrections: np.ndarray | None = None  # (n,) rad applied to each patch, flat order; None: none applied


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


def stitch_patches(patches: np.ndarray, groups: Groups, reassemble, crop: int | None = None,
                   phase_offsets: str = "none", com: com_phase.ComPhase | None = None) -> Stitched:
    """Stitch predicted patches (B, N, N, C) complex of ``groups`` into one canvas (module doc).

    reassemble: the backend's ``reassemble_by_offsets(patches, offsets_xy, canvas_size=,
    chunk_size=)``. phase_offsets: one of PHASE_OFFSETS (module doc); ``'com'`` needs ``com``, the
    :class:`ptycho.com_phase.ComPhase` of the data the groups index.
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
    factors = _offset_factors(patches, flat, offsets, groups, phase_offsets, com)
    corrections = None
    if factors is not None:
        flat, corrections = (flat * factors[:, None, None]).astype(np.complex64), np.angle(factors)
    size = required_canvas_size(crop, offsets)
    canvas = reassemble(flat, offsets, canvas_size=size, chunk_size=STITCH_CHUNK)
    return Stitched(canvas, covered_mask(size, crop, offsets), offsets, centre, crop, corrections)


def check_phase_offsets(phase_offsets: str, caller: str) -> None:
    """ValueError naming ``caller`` unless ``phase_offsets`` is one of PHASE_OFFSETS."""
    if phase_offsets not in PHASE_OFFSETS:
        raise ValueError(f"{caller}: phase_offsets must be one of {', '.join(PHASE_OFFSETS)}; got {phase_offsets!r}")


def _offset_factors(patches, flat, offsets, groups: Groups, phase_offsets: str, com) -> np.ndarray | None:
    """(B*C,) unit factors of the patches' phase offsets in flat order, or None for 'none'."""
    check_phase_offsets(phase_offsets, "stitch_patches")
    if phase_offsets == "sync":
        return synchronise_phases(flat, offsets)
    if phase_offsets == "none":
        return None
    indices = np.asarray(groups.nn_indices)
    if com is None or indices.size and not 0 <= indices.min() <= indices.max() < len(com.phi):
        raise ValueError("stitch_patches: phase_offsets='com' needs the ComPhase of the data the groups index "
                         f"(positions 0..{indices.max() if indices.size else 0}); got "
                         f"{'none' if com is None else f'{len(com.phi)} positions'}")
    return com_phase.anchor_factors(patches, com.phi[indices], com.probe).reshape(-1)


def synchronise_phases(patches: np.ndarray, offsets_xy) -> np.ndarray:
    """(n,) complex128 unit factors u such that ``patches * u[:, None, None]`` agree in phase where
    they overlap (module doc).

    patches: (n, W, W) complex, placed with their centres at ``offsets_xy`` (n, 2) [dx, dy] px
    (each is first moved bilinearly by its sub-pixel remainder, so overlaps compare the same
    object pixels). Each connected group of overlapping patches is solved on its own; the factors of a
    group have an energy-weighted mean phase of zero, so patches that already agree get 1.
    """
    patches = np.asarray(patches)
    offsets = check_offsets(offsets_xy)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2] or patches.shape[1] < 2 \
            or len(patches) != len(offsets):
        raise ValueError(f"synchronise_phases: patches must be (n, W, W), W >= 2, with one offset each; got "
                         f"{patches.shape} and {offsets.shape[0]} offsets")
    n, side = patches.shape[0], patches.shape[1]
    factors = np.ones(n, np.complex128)
    placed = offsets[:, ::-1]  # [row, col]
    corners = np.floor(placed).astype(np.int64)
    # the moved patch's first and last rows and columns hold only part of a pixel: left out
    aligned = _shift_bilinear(patches.astype(np.complex64), placed - corners)[:, 1:side, 1:side]
    overlap = _overlap_matrix(aligned, corners, side - 1)
    count, labels = csgraph.connected_components(overlap.astype(bool), directed=False)
    energy = np.sum(np.abs(aligned) ** 2, axis=(1, 2), dtype=np.float64)
    for component in range(count):
        members = np.flatnonzero(labels == component)
        if len(members) > 1:
            factors[members] = _leading_phases(overlap[members][:, members], energy[members])
    return factors


def _shift_bilinear(patches: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """(n, W+1, W+1): each (W, W) patch moved down/right by its (row, col) fraction in [0, 1)."""
    fr, fc = fractions[:, 0, None, None], fractions[:, 1, None, None]
    n, side = patches.shape[0], patches.shape[1]
    out = np.zeros((n, side + 1, side + 1), patches.dtype)
    out[:, :side, :side] += (1 - fr) * (1 - fc) * patches
    out[:, 1:, :side] += fr * (1 - fc) * patches
    out[:, :side, 1:] += (1 - fr) * fc * patches
    out[:, 1:, 1:] += fr * fc * patches
    return out


def _overlap_matrix(patches: np.ndarray, corners: np.ndarray, side: int) -> sparse.csr_matrix:
    """Sparse Hermitian (n, n): H[k, l] = sum over the overlap of patches k and l of z_k conj(z_l),
    zero diagonal. corners: (n, 2) integer [row, col] of each patch's placement."""
    n = len(patches)
    pairs = cKDTree(corners).query_pairs(side - 1, p=np.inf, output_type="ndarray") if n > 1 else np.empty((0, 2), int)
    if len(pairs) == 0:
        return sparse.csr_matrix((n, n), dtype=np.complex128)
    k, l = pairs[:, 0], pairs[:, 1]
    shifts = corners[l] - corners[k]  # where l sits in k's frame
    unique, inverse = np.unique(shifts, axis=0, return_inverse=True)
    values = np.empty(len(pairs), np.complex128)
    for index, (dr, dc) in enumerate(unique):
        chosen = np.flatnonzero(inverse.reshape(-1) == index)
        rows_k, cols_k = slice(max(dr, 0), side + min(dr, 0)), slice(max(dc, 0), side + min(dc, 0))
        rows_l, cols_l = slice(max(-dr, 0), side + min(-dr, 0)), slice(max(-dc, 0), side + min(-dc, 0))
        values[chosen] = np.sum(patches[k[chosen], rows_k, cols_k] * np.conj(patches[l[chosen], rows_l, cols_l]),
                                axis=(1, 2), dtype=np.complex128)
    upper = sparse.coo_matrix((values, (k, l)), shape=(n, n))
    return (upper + upper.conj().T).tocsr()


def _leading_phases(overlap: sparse.csr_matrix, energy: np.ndarray) -> np.ndarray:
    """Unit factors u of one connected component: conj of the leading eigenvector's phases of the
    overlap matrix, refined by projected power steps, with zero energy-weighted mean phase."""
    if overlap.shape[0] <= SYNC_DENSE_MAX:
        size = overlap.shape[0]
        vector = linalg.eigh(overlap.toarray(), subset_by_index=[size - 1, size - 1], driver="evr")[1][:, 0]
    else:
        start = np.ones(overlap.shape[0], np.complex128)  # fixed start: the same answer every run
        vector = sparse_linalg.eigsh(overlap, k=1, which="LA", v0=start)[1][:, 0]
    for _ in range(SYNC_POWER_STEPS):
        pushed = overlap @ _unit(vector)
        if not np.any(pushed):
            break
        vector = pushed
    unit = _unit(vector)
    return np.conj(unit) * _unit(np.sum(energy * unit))  # zero energy-weighted mean phase


def _unit(values: np.ndarray) -> np.ndarray:
    """values / |values|, and 1 where |values| is negligible."""
    magnitude = np.abs(values)
    small = magnitude <= SYNC_MIN_WEIGHT * max(float(np.max(magnitude)), np.finfo(float).tiny)
    return np.where(small, 1.0, values / np.where(small, 1.0, magnitude))


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
    """ptycho.evaluation.quality.reconstruction_quality over the covered pixels that lie inside the object."""
    truth, inside = ground_truth_window(object_guess, stitched)
    mask = stitched.covered & inside
    if not mask.any():
        raise ValueError("stitched_quality: the stitched canvas does not overlap the ground-truth object")
    return quality.reconstruction_quality(stitched.canvas, truth, mask=mask)

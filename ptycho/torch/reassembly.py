"""Patches on canvases in PyTorch: extraction at offsets, reassembly, global stitching.

The twins of :mod:`ptycho.tf_reassembly`, same conventions and arithmetic:
``coords_relative`` is (B, 1, 2, C), [x, y] on axis 2, pixels, local offset sign -1; a
patch of side N sits centred on a canvas of side M with its top-left pixel at
``(M - N) // 2``; overlap counts are divided as ``max(count, COUNT_FLOOR)``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ptycho.torch import ops

COUNT_FLOOR = 1e-3
STITCH_CHUNK_PIXELS = 2**22  # window pixels per streamed chunk in reassemble_by_offsets


def extract_patches_at_offsets(canvas: torch.Tensor, coords_relative, N: int) -> torch.Tensor:
    """Crop C patches from each canvas at its group's relative offsets.

    canvas: (B, M, M, 1) complex64 or float32; coords_relative: (B, 1, 2, C) pixels.
    Patch c is the centre N x N of the canvas translated by +coords_relative[..., c].
    Returns (B, N, N, C) of the canvas dtype.
    """
    side = _square_side(canvas, "canvas", "(B, M, M, 1)")
    if side < N:
        raise ValueError(f"extract_patches_at_offsets: canvas side {side} is smaller than N={N}")
    shifts, channels = _flat_shifts(coords_relative, canvas)
    start = (side - N) // 2
    stacked = torch.repeat_interleave(canvas, channels, dim=0)  # (B*C, M, M, 1), b*C + c
    patches = ops.warp(stacked, shifts, (N, N), (start, start))
    return ops.flat_to_channels(patches, channels)


def reassemble_patches(patches: torch.Tensor, coords_relative, canvas_size: int) -> torch.Tensor:
    """Shift-and-sum the C patches of each group onto an M x M canvas, overlap-normalised.

    patches: (B, N, N, C) complex64 (or float32); coords_relative: (B, 1, 2, C) pixels;
    canvas_size: M >= N. Patch c is zero-padded centred to M x M and translated by
    -coords_relative[..., c]; the sum is divided by the translated count of ones.
    Returns (B, M, M, 1) of the patches' dtype.
    """
    side = _square_side(patches, "patches", "(B, N, N, C)")
    if canvas_size < side:
        raise ValueError(f"reassemble_patches: canvas_size {canvas_size} is smaller than N={side}")
    shifts, channels = _flat_shifts(coords_relative, patches)
    flat = ops.to_real_channels(ops.channels_to_flat(patches))  # (B*C, N, N, k)
    with_count = torch.cat([flat, torch.ones_like(flat[..., :1])], dim=-1)
    start = (canvas_size - side) // 2
    placed = ops.warp(with_count, -shifts, (canvas_size, canvas_size), (-start, -start))
    width = with_count.shape[-1]
    summed = placed.reshape(-1, channels, canvas_size, canvas_size, width).sum(dim=1)
    normalised = summed[..., :-1] / summed[..., -1:].clamp_min(COUNT_FLOOR)
    return ops.from_real_channels(normalised, patches.dtype)


def _square_side(x, name, layout):
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise ValueError(f"{name} must be a {layout} tensor with square frames; "
                         f"got {getattr(x, 'shape', type(x))}")
    if name == "canvas" and x.shape[-1] != 1:
        raise ValueError(f"canvas must be (B, M, M, 1); got {tuple(x.shape)}")
    return x.shape[1]


def _flat_shifts(coords_relative, batched):
    """(B, 1, 2, C) offsets -> ((B*C, 2) [dx, dy] float32, C), batch checked against ``batched``."""
    coords = torch.as_tensor(coords_relative).to(torch.float32)
    if coords.ndim != 4 or tuple(coords.shape[1:3]) != (1, 2):
        raise ValueError(f"coords_relative must be (B, 1, 2, C); got shape {tuple(coords.shape)}")
    if coords.shape[0] != batched.shape[0]:
        raise ValueError(f"coords_relative {tuple(coords.shape)} and data {tuple(batched.shape)} "
                         "disagree in batch size")
    return coords[:, 0].permute(0, 2, 1).reshape(-1, 2), coords.shape[3]


def required_canvas_size(N: int, offsets_xy) -> int:
    """Smallest even canvas side holding N x N patches centred at ``offsets_xy``.

    N: patch side (pixels); offsets_xy: (n, 2) [dx, dy] pixels relative to the canvas
    centre. Returns ``N + 2 * ceil(max |offset|)``, rounded up to even.
    """
    offsets = _check_offsets(offsets_xy)
    if int(N) != N or N < 1:
        raise ValueError(f"required_canvas_size: N must be a positive integer; got {N}")
    reach = float(np.max(np.abs(offsets))) if offsets.size else 0.0
    size = int(N) + 2 * math.ceil(reach)
    return size + size % 2


def reassemble_by_offsets(patches, offsets_xy, canvas_size=None, chunk_size=None) -> np.ndarray:
    """Stitch patches into one canvas by shift-and-sum, normalised by the overlap count.

    patches: (n, N, N) complex; offsets_xy: (n, 2) [dx, dy] pixels of each patch centre
    relative to the canvas centre; canvas_size: M, default :func:`required_canvas_size`;
    chunk_size: patches per streamed chunk. Each patch is translated by its sub-pixel
    remainder into an (N+1)^2 window added at its integer position (cost n * N^2).
    Returns (M, M) complex64, as ``tf_reassembly.reassemble_by_offsets``.
    """
    patches = np.asarray(patches)
    offsets = _check_offsets(offsets_xy)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"reassemble_by_offsets: patches must be (n, N, N); got {patches.shape}")
    if patches.shape[0] != offsets.shape[0]:
        raise ValueError(f"reassemble_by_offsets: {patches.shape[0]} patches but "
                         f"{offsets.shape[0]} offsets")
    side = patches.shape[1]
    needed = required_canvas_size(side, offsets)
    size = needed if canvas_size is None else int(canvas_size)
    if size < needed:
        raise ValueError(f"reassemble_by_offsets: canvas_size {size} is too small for offsets up "
                         f"to {np.max(np.abs(offsets)):.2f} px with N={side}; need at least {needed}")
    if chunk_size is None:
        chunk_size = max(1, STITCH_CHUNK_PIXELS // (side + 1) ** 2)
    elif int(chunk_size) < 1:
        raise ValueError(f"reassemble_by_offsets: chunk_size must be >= 1; got {chunk_size}")
    totals = torch.zeros(size * size, 3, dtype=torch.float32)  # real, imag, count
    with torch.no_grad():
        for begin in range(0, patches.shape[0], int(chunk_size)):
            chunk = slice(begin, begin + int(chunk_size))
            _stitch_chunk(totals, patches[chunk], offsets[chunk], size)
    sums = totals.reshape(size, size, 3).numpy()
    count = np.maximum(sums[..., 2], COUNT_FLOOR)
    return ((sums[..., 0] + 1j * sums[..., 1]) / count).astype(np.complex64)


def _check_offsets(offsets_xy):
    offsets = np.asarray(offsets_xy, dtype=np.float64)
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise ValueError(f"offsets_xy must be (n, 2) [dx, dy]; got shape {offsets.shape}")
    if not np.all(np.isfinite(offsets)):
        raise ValueError("offsets_xy must be finite (found NaN or Inf)")
    return offsets


def _stitch_chunk(totals, patches, offsets, size):
    """Add one chunk's [real, imag, count] windows into ``totals`` (size*size, 3) in place."""
    side = patches.shape[1]
    top_left = (size - side) // 2 + offsets[:, ::-1]  # (k, 2) [row, col]
    whole = np.floor(top_left)
    frac = (top_left - whole).astype(np.float32)
    carry = frac >= 1.0  # a remainder that rounds up to 1 in float32 is a whole pixel
    whole, frac = (whole + carry).astype(np.int64), np.where(carry, 0.0, frac)
    layers = [patches.real, patches.imag, np.ones(patches.shape)]
    stacked = torch.from_numpy(np.stack(layers, axis=-1).astype(np.float32))  # (k, N, N, 3)
    window = side + 1
    moved = ops.warp(stacked, torch.from_numpy(np.ascontiguousarray(frac[:, ::-1])),
                     (window, window), (0, 0))
    # Rows/cols past the canvas only ever receive exact zeros (zero remainder), so clip.
    steps = np.arange(window)
    rows = np.minimum(whole[:, 0, None] + steps, size - 1)
    cols = np.minimum(whole[:, 1, None] + steps, size - 1)
    linear = torch.from_numpy((rows[:, :, None] * size + cols[:, None, :]).reshape(-1))
    totals.index_add_(0, linear, moved.reshape(-1, 3))

"""Patches on canvases in PyTorch: extraction at offsets, reassembly, global stitching.

The twins of :mod:`ptycho.tf.reassembly`, same conventions and arithmetic:
``coords_relative`` is (B, 1, 2, C), [x, y] on axis 2, pixels, local offset sign -1; a
patch of side N sits centred on a canvas of side M with its top-left pixel at
``(M - N) // 2``; overlap counts are divided as ``max(count, COUNT_FLOOR)``.
"""
from __future__ import annotations

import numpy as np
import torch

from ptycho import stitching
from ptycho.stitching import COUNT_FLOOR
from ptycho.torch import ops


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


def reassemble_patches(patches: torch.Tensor, coords_relative, canvas_size: int, weights=None) -> torch.Tensor:
    """Shift-and-sum the C patches of each group onto an M x M canvas, overlap-normalised.

    patches: (B, N, N, C) complex64 (or float32); coords_relative: (B, 1, 2, C) pixels;
    canvas_size: M >= N. Patch c is zero-padded centred to M x M and translated by
    -coords_relative[..., c]; the sum is divided by the translated count of ones, or, with
    ``weights`` (N, N) > 0, the weighted sum by the translated sum of weights.
    Returns (B, M, M, 1) of the patches' dtype.
    """
    side = _square_side(patches, "patches", "(B, N, N, C)")
    if canvas_size < side:
        raise ValueError(f"reassemble_patches: canvas_size {canvas_size} is smaller than N={side}")
    shifts, channels = _flat_shifts(coords_relative, patches)
    flat = ops.to_real_channels(ops.channels_to_flat(patches))  # (B*C, N, N, k)
    if weights is None:
        with_count = torch.cat([flat, torch.ones_like(flat[..., :1])], dim=-1)
    else:
        weight = torch.as_tensor(weights, dtype=flat.dtype, device=flat.device).reshape(1, side, side, 1)
        with_count = torch.cat([flat * weight, weight.expand(flat.shape[0], -1, -1, 1)], dim=-1)
    start = (canvas_size - side) // 2
    placed = ops.warp(with_count, -shifts, (canvas_size, canvas_size), (-start, -start))
    width = with_count.shape[-1]
    summed = placed.reshape(-1, channels, canvas_size, canvas_size, width).sum(dim=1)
    normalised = summed[..., :-1] / summed[..., -1:].clamp_min(COUNT_FLOOR)
    return ops.from_real_channels(normalised, patches.dtype)


def overlap_patches(patches: torch.Tensor, coords_relative, weights) -> torch.Tensor:
    """The object each position of a group sees: the group's C patches moved into its frame, averaged.

    The twin of ``ptycho.tf.reassembly.overlap_patches`` (its docstring): patches (B, N, N, C)
    complex64, coords_relative (B, 1, 2, C), weights (N, N) > 0; returns (B, N, N, C) complex64.
    """
    side = _square_side(patches, "patches", "(B, N, N, C)")
    shifts, channels = _flat_shifts(coords_relative, patches)
    shifts = shifts.to(patches.device).reshape(-1, channels, 2)
    shifts = (shifts[:, :, None, :] - shifts[:, None, :, :]).reshape(-1, 2)  # coords[t] - coords[s], (b, t, s)
    weight = torch.as_tensor(weights, dtype=torch.float32, device=patches.device).reshape(1, 1, side, side)
    source = patches.permute(0, 3, 1, 2)  # (B, C_s, N, N)
    stack = torch.stack([source.real * weight, source.imag * weight, weight.expand(source.shape)], dim=-1)
    tiled = stack[:, None].expand(-1, channels, -1, -1, -1, -1).reshape(-1, side, side, 3)
    moved = ops.warp(tiled, shifts, (side, side), (0, 0))
    summed = moved.reshape(-1, channels, channels, side, side, 3).sum(dim=2)  # (B, C_t, N, N, 3)
    total = summed[..., 2].clamp_min(COUNT_FLOOR)
    seen = torch.complex(summed[..., 0] / total, summed[..., 1] / total)
    return seen.permute(0, 2, 3, 1)


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


def reassemble_by_offsets(patches, offsets_xy, canvas_size=None, chunk_size=None) -> np.ndarray:
    """``stitching.reassemble_by_offsets`` with the windows summed in torch (its docstring).

    patches (n, N, N) complex, offsets_xy (n, 2) [dx, dy] px; returns (M, M) complex64, as
    ``tf_reassembly.reassemble_by_offsets``.
    """
    return stitching.reassemble_by_offsets(patches, offsets_xy, _sum_windows, canvas_size, chunk_size)


def _sum_windows(stacked, shifts, window, linear, n_pixels) -> np.ndarray:
    with torch.no_grad():
        moved = ops.warp(torch.from_numpy(stacked), torch.from_numpy(shifts), (window, window), (0, 0))
        totals = torch.zeros(n_pixels, 3, dtype=torch.float32)
        totals.index_add_(0, torch.from_numpy(linear), moved.reshape(-1, 3))
    return totals.numpy()

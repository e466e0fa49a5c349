"""Patches on canvases: extraction at offsets, reassembly, global stitching (TensorFlow).

Conventions (docs/design.md §5): ``coords_relative`` is (B, 1, 2, C), [x, y] on axis 2, in
pixels, with the local offset sign -1 (``-(coords_nn - coords_offsets)``). A patch of
side N sits centred on a canvas of side M when its top-left pixel is at
``(M - N) // 2`` on both axes (the same offset for padding and cropping, so the two are
exact inverses). Every function makes one batched translation call; complex data
travels as stacked real and imaginary channels. The overlap count is separable and costs
two 1-D resamplings.

Normalisation by the overlap count divides by ``max(count, COUNT_FLOOR)`` (see
:mod:`ptycho.stitching`, which holds the global stitching's bookkeeping).
"""
from __future__ import annotations

import tensorflow as tf

from ptycho import stitching
from ptycho.tf import ops as tf_ops
from ptycho.stitching import COUNT_FLOOR


def extract_patches_at_offsets(canvas, coords_relative, N, use_xla=None):
    """Crop C patches from each canvas at its group's relative offsets.

    canvas: (B, M, M, 1) complex64 or float32; coords_relative: (B, 1, 2, C) pixels.
    Patch c is the centre N x N of the canvas translated by +coords_relative[..., c].
    Returns (B, N, N, C) of the canvas dtype.
    """
    canvas = tf.convert_to_tensor(canvas)
    side = _square_side(canvas, "canvas", "(B, M, M, 1)")
    if side < N:
        raise ValueError(f"extract_patches_at_offsets: canvas side {side} is smaller than N={N}")
    shifts, channels = _flat_shifts(coords_relative, canvas)
    start = (side - N) // 2
    stacked = tf.repeat(canvas, channels, axis=0)  # (B*C, M, M, 1), index b*C + c
    patches = tf_ops._warp(
        stacked, shifts, (N, N), (start, start), "bilinear", tf_ops.should_use_xla(use_xla)
    )
    return tf_ops.flat_to_channels(patches, channels)


def reassemble_patches(patches, coords_relative, canvas_size, use_xla=None, weights=None):
    """Shift-and-sum the C patches of each group onto an M x M canvas, overlap-normalised.

    patches: (B, N, N, C) complex64 (or float32); coords_relative: (B, 1, 2, C) pixels;
    canvas_size: M >= N. Patch c is zero-padded centred to M x M and translated by
    -coords_relative[..., c]; the sum is divided by the translated count of ones, or, with
    ``weights`` (N, N) > 0, the weighted sum by the translated sum of weights.
    Returns (B, M, M, 1) of the patches' dtype.
    """
    patches = tf.convert_to_tensor(patches)
    side = _square_side(patches, "patches", "(B, N, N, C)")
    if canvas_size < side:
        raise ValueError(f"reassemble_patches: canvas_size {canvas_size} is smaller than N={side}")
    shifts, channels = _flat_shifts(coords_relative, patches)
    flat = tf_ops.to_real_channels(tf_ops.channels_to_flat(patches))  # (B*C, N, N, k)
    if weights is not None:
        weight = tf.reshape(tf.convert_to_tensor(weights, tf.float32), [1, side, side, 1])
        flat = tf.concat([flat * weight, tf.broadcast_to(weight, tf.shape(flat[..., :1]))], axis=-1)
    start = (canvas_size - side) // 2
    shape, origin = (canvas_size, canvas_size), (-start, -start)
    use_xla = tf_ops.should_use_xla(use_xla)
    placed = tf_ops._warp(flat, -shifts, shape, origin, "bilinear", use_xla)
    depth = placed.shape[-1]
    summed = tf.reduce_sum(tf.reshape(placed, [-1, channels, *shape, depth]), axis=1)
    if weights is None:
        count = _overlap_count(shifts, side, canvas_size, start, channels)
    else:
        summed, count = summed[..., :-1], summed[..., -1:]
    normalised = summed / tf.maximum(count, COUNT_FLOOR)
    return tf_ops.from_real_channels(normalised, patches.dtype)


def overlap_patches(patches, coords_relative, weights, use_xla=None):
    """The object each position of a group sees: the group's C patches moved into its frame, averaged.

    patches: (B, N, N, C) complex64; coords_relative: (B, 1, 2, C) pixels; weights: (N, N) float32 > 0,
    each patch pixel's weight (``architecture.overlap_weights``). Patch s moves into position t's frame
    by +(coords_relative[..., t] - coords_relative[..., s]) (what placing it on a shared canvas and
    cropping at t does), so output t is
        sum_s translate(w * patch_s) / sum_s translate(w)
    One translation per (t, s) pair and none for s = t: a patch reaches its own position without
    interpolation (the canvas round trip interpolates twice). Returns (B, N, N, C) complex64.
    """
    patches = tf.convert_to_tensor(patches)
    side = _square_side(patches, "patches", "(B, N, N, C)")
    shifts, channels = _pair_shifts(coords_relative, patches)
    weight = tf.reshape(tf.convert_to_tensor(weights, tf.float32), [1, 1, side, side])
    source = tf.transpose(patches, [0, 3, 1, 2])  # (B, C, N, N)
    stack = tf.stack([tf.math.real(source) * weight, tf.math.imag(source) * weight,
                      tf.broadcast_to(weight, tf.shape(source))], axis=-1)  # (B, C_s, N, N, 3)
    tiled = tf.reshape(tf.repeat(stack[:, None], channels, axis=1), [-1, side, side, 3])  # (b, t, s) order
    moved = tf_ops._warp(tiled, shifts, (side, side), (0, 0), "bilinear", tf_ops.should_use_xla(use_xla))
    summed = tf.reduce_sum(tf.reshape(moved, [-1, channels, channels, side, side, 3]), axis=2)  # (B, C_t, N, N, 3)
    total = tf.maximum(summed[..., 2], COUNT_FLOOR)
    seen = tf.complex(summed[..., 0] / total, summed[..., 1] / total)
    return tf.transpose(seen, [0, 2, 3, 1])


def _pair_shifts(coords_relative, batched):
    """(B*C*C, 2) [dx, dy] translations coords[t] - coords[s] in (b, t, s) order, and C."""
    flat, channels = _flat_shifts(coords_relative, batched)
    per_group = tf.reshape(flat, [-1, channels, 2])  # (B, C, 2)
    pairs = per_group[:, :, None, :] - per_group[:, None, :, :]  # (B, C_t, C_s, 2)
    return tf.reshape(pairs, [-1, 2]), channels


def _overlap_count(shifts, side, canvas_size, start, channels):
    """(B, M, M, 1) sum over C of the placed, bilinearly translated ones-masks.

    A translated box is the outer product of two translated 1-D boxes, so the count
    costs two 1-D resamplings and one small matmul instead of a third image channel.
    """
    ones = tf.ones([tf.shape(shifts)[0], side, 1])
    profiles = [  # (B*C, M) along y, then x; placement translation is -shifts
        tf_ops._resample_rows(ones, shifts[:, axis] - start, canvas_size, "bilinear")[..., 0]
        for axis in (1, 0)
    ]
    along_y, along_x = (tf.reshape(p, [-1, channels, canvas_size]) for p in profiles)
    return tf.matmul(along_y, along_x, transpose_a=True)[..., None]


def _square_side(x, name, layout):
    if x.shape.rank != 4 or None in x.shape[1:] or x.shape[1] != x.shape[2]:
        raise ValueError(f"{name} must be {layout} with static square frames; got {x.shape}")
    if name == "canvas" and x.shape[-1] != 1:
        raise ValueError(f"canvas must be (B, M, M, 1); got {x.shape}")
    return x.shape[1]


def _flat_shifts(coords_relative, batched):
    """(B, 1, 2, C) offsets -> ((B*C, 2) [dx, dy] float32, C), batch checked against ``batched``."""
    coords = tf.cast(tf.convert_to_tensor(coords_relative), tf.float32)
    if coords.shape.rank != 4 or coords.shape[1:3] != (1, 2) or coords.shape[3] is None:
        raise ValueError(f"coords_relative must be (B, 1, 2, C); got shape {coords.shape}")
    n_coords, n_batched = coords.shape[0], batched.shape[0]
    message = f"coords_relative {coords.shape} and data {batched.shape} disagree in batch size"
    if n_coords is not None and n_batched is not None:
        if n_coords != n_batched:
            raise ValueError(message)
    else:
        check = tf.debugging.assert_equal(tf.shape(coords)[0], tf.shape(batched)[0], message)
        with tf.control_dependencies([check]):
            coords = tf.identity(coords)
    shifts = tf.reshape(tf.transpose(coords[:, 0], [0, 2, 1]), [-1, 2])
    return shifts, coords.shape[3]


def reassemble_by_offsets(patches, offsets_xy, canvas_size=None, chunk_size=None, use_xla=None):
    """``stitching.reassemble_by_offsets`` with the windows summed in TensorFlow (its docstring).

    patches (n, N, N) complex, offsets_xy (n, 2) [dx, dy] px; returns (M, M) complex64.
    """
    use_xla = tf_ops.should_use_xla(use_xla)

    def sum_windows(stacked, shifts, window, linear, n_pixels):
        moved = tf_ops._warp(stacked, shifts, (window, window), (0, 0), "bilinear", use_xla)
        return tf.math.unsorted_segment_sum(tf.reshape(moved, [-1, 3]), linear, num_segments=n_pixels).numpy()

    return stitching.reassemble_by_offsets(patches, offsets_xy, sum_windows, canvas_size, chunk_size)

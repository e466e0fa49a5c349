"""Patches on canvases: extraction at offsets, reassembly, global stitching (TensorFlow).

Conventions (DESIGN §7): ``coords_relative`` is (B, 1, 2, C), [x, y] on axis 2, in
pixels, with the local offset sign -1 (``-(coords_nn - coords_offsets)``). A patch of
side N sits centred on a canvas of side M when its top-left pixel is at
``(M - N) // 2`` on both axes (the same offset for padding and cropping, so the two are
exact inverses). Every function makes one batched translation call; complex data
travels as stacked real and imaginary channels. The overlap count is separable and costs
two 1-D resamplings.

Normalisation by the overlap count divides by ``max(count, COUNT_FLOOR)``: exact
wherever at least a thousandth of a patch covers a pixel, a smooth fade to 0 at the
bilinear rim, and exactly 0 (never NaN) where no patch lands.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from ptycho import tf_helper

COUNT_FLOOR = 1e-3
STITCH_CHUNK_PIXELS = 2**22  # window pixels per streamed chunk in reassemble_by_offsets


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
    patches = tf_helper._warp(
        stacked, shifts, (N, N), (start, start), "bilinear", tf_helper.should_use_xla(use_xla)
    )
    return tf_helper.flat_to_channels(patches, channels)


def reassemble_patches(patches, coords_relative, canvas_size, use_xla=None):
    """Shift-and-sum the C patches of each group onto an M x M canvas, overlap-normalised.

    patches: (B, N, N, C) complex64 (or float32); coords_relative: (B, 1, 2, C) pixels;
    canvas_size: M >= N. Patch c is zero-padded centred to M x M and translated by
    -coords_relative[..., c]; the sum is divided by the translated count of ones.
    Returns (B, M, M, 1) of the patches' dtype.
    """
    patches = tf.convert_to_tensor(patches)
    side = _square_side(patches, "patches", "(B, N, N, C)")
    if canvas_size < side:
        raise ValueError(f"reassemble_patches: canvas_size {canvas_size} is smaller than N={side}")
    shifts, channels = _flat_shifts(coords_relative, patches)
    flat = tf_helper.to_real_channels(tf_helper.channels_to_flat(patches))  # (B*C, N, N, k)
    start = (canvas_size - side) // 2
    shape, origin = (canvas_size, canvas_size), (-start, -start)
    use_xla = tf_helper.should_use_xla(use_xla)
    placed = tf_helper._warp(flat, -shifts, shape, origin, "bilinear", use_xla)
    depth = placed.shape[-1]
    summed = tf.reduce_sum(tf.reshape(placed, [-1, channels, *shape, depth]), axis=1)
    count = _overlap_count(shifts, side, canvas_size, start, channels)
    normalised = summed / tf.maximum(count, COUNT_FLOOR)
    return tf_helper.from_real_channels(normalised, patches.dtype)


def _overlap_count(shifts, side, canvas_size, start, channels):
    """(B, M, M, 1) sum over C of the placed, bilinearly translated ones-masks.

    A translated box is the outer product of two translated 1-D boxes, so the count
    costs two 1-D resamplings and one small matmul instead of a third image channel.
    """
    ones = tf.ones([tf.shape(shifts)[0], side, 1])
    profiles = [  # (B*C, M) along y, then x; placement translation is -shifts
        tf_helper._resample_rows(ones, shifts[:, axis] - start, canvas_size, "bilinear")[..., 0]
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


def required_canvas_size(N, offsets_xy) -> int:
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


def reassemble_by_offsets(patches, offsets_xy, canvas_size=None, chunk_size=None, use_xla=None):
    """Stitch patches into one canvas by shift-and-sum, normalised by the overlap count.

    patches: (n, N, N) complex (or real); offsets_xy: (n, 2) [dx, dy] pixels of each
    patch centre relative to the canvas centre (sub-pixel offsets are bilinear);
    canvas_size: M, default :func:`required_canvas_size`; chunk_size: patches per
    streamed chunk (default: as many as keep a chunk near ``STITCH_CHUNK_PIXELS``).
    Each patch is translated by its sub-pixel remainder into an (N+1)^2 window that is
    added at its integer position, so the cost scales with n * N^2, not n * M^2.
    Returns (M, M) complex64.
    """
    patches = np.asarray(patches)
    offsets = _check_offsets(offsets_xy)
    if patches.ndim != 3 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"reassemble_by_offsets: patches must be (n, N, N); got {patches.shape}")
    if patches.shape[0] != offsets.shape[0]:
        raise ValueError(
            f"reassemble_by_offsets: {patches.shape[0]} patches but {offsets.shape[0]} offsets"
        )
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
    use_xla = tf_helper.should_use_xla(use_xla)
    totals = tf.zeros([size, size, 3], tf.float32)  # real, imag, count
    for begin in range(0, patches.shape[0], int(chunk_size)):
        chunk = slice(begin, begin + int(chunk_size))
        totals += _stitch_chunk(patches[chunk], offsets[chunk], size, use_xla)
    sums = totals.numpy()
    count = np.maximum(sums[..., 2], COUNT_FLOOR)
    return ((sums[..., 0] + 1j * sums[..., 1]) / count).astype(np.complex64)


def _check_offsets(offsets_xy):
    offsets = np.asarray(offsets_xy, dtype=np.float64)
    if offsets.ndim != 2 or offsets.shape[1] != 2:
        raise ValueError(f"offsets_xy must be (n, 2) [dx, dy]; got shape {offsets.shape}")
    if not np.all(np.isfinite(offsets)):
        raise ValueError("offsets_xy must be finite (found NaN or Inf)")
    return offsets


def _stitch_chunk(patches, offsets, size, use_xla):
    """(size, size, 3) [real, imag, count] sums of one chunk of patches."""
    side = patches.shape[1]
    top_left = (size - side) // 2 + offsets[:, ::-1]  # (k, 2) [row, col]
    whole = np.floor(top_left)
    frac = (top_left - whole).astype(np.float32)
    carry = frac >= 1.0  # a remainder that rounds up to 1 in float32 is a whole pixel
    whole, frac = (whole + carry).astype(np.int32), np.where(carry, 0.0, frac)
    layers = [patches.real, patches.imag, np.ones(patches.shape)]
    stacked = np.stack(layers, axis=-1).astype(np.float32)  # (k, N, N, 3)
    window = side + 1
    moved = tf_helper._warp(
        stacked, frac[:, ::-1], (window, window), (0, 0), "bilinear", use_xla
    )
    # Rows/cols past the canvas only ever receive exact zeros (zero remainder), so clip.
    steps = np.arange(window)
    rows = np.minimum(whole[:, 0, None] + steps, size - 1)  # (k, window)
    cols = np.minimum(whole[:, 1, None] + steps, size - 1)
    linear = rows[:, :, None] * size + cols[:, None, :]  # (k, window, window)
    return tf.reshape(
        tf.math.unsorted_segment_sum(
            tf.reshape(moved, [-1, 3]), linear.reshape(-1), num_segments=size * size
        ),
        [size, size, 3],
    )

"""TensorFlow operations of the forward path: translation, layouts, diffraction.

Everything here is graph compatible (``tf.function``, Keras ``train_step``) with static
N and C and a dynamic batch size. Conventions (docs/design.md §5, glossary in ``ptycho``):

* Translating by ``(dx, dy)`` moves image content by +dx columns and +dy rows:
  ``out[b, y, x] = img[b, y - dy_b, x - dx_b]``, bilinear, zero outside the image.
  Integer shifts are exact. ``'nearest'`` rounds the source coordinate half away
  from zero (as ``ImageProjectiveTransformV3`` does).
* Three translation kernels give the same numbers (tests check it):
  ``translate_xla`` (separable gathers, compiles under ``jit_compile=True``),
  ``translate_projective`` (``ImageProjectiveTransformV3``, the non-XLA fast path) and
  ``_translate_images_simple`` (a plain four-corner gather, the readable reference).
  ``translate_core`` and ``translate`` pick one of the first two through
  :func:`should_use_xla`; a benchmark may call any of the three directly.
* Flattened images ``(b*C, H, W, c)`` with translations ``(b, 2)`` get each translation
  repeated C times (flat index ``b*C + c``); any other batch mismatch is a ValueError.

Patch extraction, reassembly and global stitching live in :mod:`ptycho.tf.reassembly`, which
builds on this module; canvas sizes are :mod:`ptycho.stitching`'s.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

XLA_ENV_VAR = "USE_XLA_TRANSLATE"
_ENV_TRUE = ("1", "true", "on", "yes")
_ENV_FALSE = ("0", "false", "off", "no")
INTERPOLATIONS = ("bilinear", "nearest")

__all__ = [
    "INTERPOLATIONS",
    "XLA_ENV_VAR",
    "channels_to_flat",
    "channels_to_grid",
    "flat_to_channels",
    "grid_to_channels",
    "pad_and_diffract",
    "should_use_xla",
    "translate",
    "translate_core",
    "translate_projective",
    "translate_xla",
]


def should_use_xla(flag: bool | None = None) -> bool:
    """Whether translations take the XLA-compatible path.

    The environment variable ``USE_XLA_TRANSLATE`` (read at every call; '1', 'true',
    'on', 'yes' or '0', 'false', 'off', 'no', any case; empty counts as unset) overrides
    ``flag``. Without it, ``flag`` decides; ``None`` means True.
    """
    raw = os.environ.get(XLA_ENV_VAR, "").strip().lower()
    if raw in _ENV_TRUE:
        return True
    if raw in _ENV_FALSE:
        return False
    if raw:
        raise ValueError(
            f"{XLA_ENV_VAR}={os.environ[XLA_ENV_VAR]!r} is not understood; "
            f"use one of {_ENV_TRUE + _ENV_FALSE} (any case) or unset it"
        )
    return True if flag is None else bool(flag)


def translate_core(images, translations, interpolation="bilinear", use_xla_workaround=False):
    """Translate each image by its ``[dx, dy]`` (pixels), bilinear with zero fill.

    images: (b, H, W, c) float32 (float64 and complex also accepted);
    translations: (b', 2) [dx, dy], b' == b or b == b' * C (each translation repeated C
    times). Takes the XLA path when ``use_xla_workaround`` or :func:`should_use_xla`
    is True, else ``ImageProjectiveTransformV3``. Returns images' shape and dtype.
    """
    use_xla = bool(use_xla_workaround) or should_use_xla()
    return _translate_any(images, translations, interpolation, use_xla)


def translate(images, translations, use_xla=None, interpolation="bilinear"):
    """Translate real or complex images; ``use_xla`` is resolved by :func:`should_use_xla`.

    images: (b, H, W, c) float32/float64 or complex64/complex128 (real and imaginary
    parts go through one kernel call as stacked channels); translations (b', 2) [dx, dy]
    pixels, batch rule as in :func:`translate_core`. Returns images' shape and dtype.
    """
    return _translate_any(images, translations, interpolation, should_use_xla(use_xla))


def translate_xla(images, translations, interpolation="bilinear"):
    """XLA-compatible translation (row gathers, arithmetic); arguments as in :func:`translate`."""
    return _translate_any(images, translations, interpolation, use_xla=True)


def translate_projective(images, translations, interpolation="bilinear"):
    """Non-XLA translation by ``ImageProjectiveTransformV3``; arguments as in :func:`translate`."""
    return _translate_any(images, translations, interpolation, use_xla=False)


def _translate_images_simple(images, dx, dy):
    """Reference bilinear translation by a plain four-corner gather, zero fill.

    images: (b, H, W, c) float; dx, dy: (b,) pixels (batch must match). Returns
    (b, H, W, c). Much slower than the other kernels unless jit-compiled; it is the
    readable oracle the tests hold them to, and a third path for benchmarks.
    """
    images = tf.convert_to_tensor(images)
    height, width = images.shape[1], images.shape[2]
    dx = tf.cast(dx, tf.float32)[:, None, None]
    dy = tf.cast(dy, tf.float32)[:, None, None]
    src_y = tf.range(height, dtype=tf.float32)[None, :, None] - dy  # (b, H, 1)
    src_x = tf.range(width, dtype=tf.float32)[None, None, :] - dx  # (b, 1, W)
    y0, x0 = tf.floor(src_y), tf.floor(src_x)
    wy, wx = src_y - y0, src_x - x0
    # A one-pixel zero border plus clipping turns every outside read into a zero.
    padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
    target = tf.stack([tf.shape(images)[0], height, width])

    def corner(rows, cols):
        rows = tf.clip_by_value(tf.cast(rows, tf.int32) + 1, 0, height + 1)
        cols = tf.clip_by_value(tf.cast(cols, tf.int32) + 1, 0, width + 1)
        index = tf.stack([tf.broadcast_to(rows, target), tf.broadcast_to(cols, target)], -1)
        return tf.gather_nd(padded, index, batch_dims=1)

    weights = [((1 - wy) * (1 - wx)), ((1 - wy) * wx), (wy * (1 - wx)), (wy * wx)]
    corners = [corner(y0, x0), corner(y0, x0 + 1), corner(y0 + 1, x0), corner(y0 + 1, x0 + 1)]
    weights = [tf.cast(w[..., None], images.dtype) for w in weights]
    return tf.add_n([w * c for w, c in zip(weights, corners)])


def _translate_any(images, translations, interpolation, use_xla):
    images = tf.convert_to_tensor(images)
    shape = (images.shape[1], images.shape[2]) if images.shape.rank == 4 else None
    return _warp(images, translations, shape, (0, 0), interpolation, use_xla)


def _warp(images, translations, out_shape, origin, interpolation, use_xla):
    """``out[b, y, x] = images[b, y + origin_y - dy_b, x + origin_x - dx_b]``, any dtype.

    A translation fused with a crop (origin > 0, smaller out_shape) or a zero pad
    (origin < 0, larger out_shape). images (b, H, W, c) real or complex; translations
    (b', 2) as in :func:`translate_core`; out_shape (h, w) static; origin (oy, ox) ints.
    Complex images travel as stacked real and imaginary channels in one kernel call.
    """
    images = _check_images(images)
    translations = _expand_translations(images, _check_translations(translations))
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
    kernel = _warp_gather if use_xla else _warp_projective
    real = to_real_channels(images)
    moved = kernel(real, translations[:, 0], translations[:, 1], out_shape, origin, interpolation)
    return from_real_channels(moved, images.dtype)


def to_real_channels(x):
    """(..., c) complex -> (..., 2c) real [real parts, imaginary parts]; real passes through."""
    if x.dtype.is_complex:
        return tf.concat([tf.math.real(x), tf.math.imag(x)], axis=-1)
    return x


def from_real_channels(x, dtype):
    """Inverse of :func:`to_real_channels` for a target ``dtype``."""
    if tf.as_dtype(dtype).is_complex:
        real, imag = tf.split(x, 2, axis=-1)
        return tf.complex(real, imag)
    return x


def _check_images(images):
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise ValueError(
            f"images must be (b, H, W, c) with static H, W, c; got shape {images.shape}"
        )
    if not (images.dtype.is_floating or images.dtype.is_complex):
        raise ValueError(f"images must be float or complex; got {images.dtype.name}")
    return images


def _check_translations(translations):
    translations = tf.cast(tf.convert_to_tensor(translations), tf.float32)
    if translations.shape.rank != 2 or translations.shape[1] != 2:
        raise ValueError(f"translations must be (b, 2) [dx, dy]; got shape {translations.shape}")
    return translations


def _expand_translations(images, translations):
    """Repeat translations C times when images are flattened (b*C, ...) over (b, 2)."""
    n_images, n_shifts = images.shape[0], translations.shape[0]
    message = (
        f"images batch must equal the translations batch or be a multiple of it "
        f"(flattened (b*C, H, W, c) with (b, 2)); got images {images.shape}, "
        f"translations {translations.shape}"
    )
    if n_images is not None and n_shifts is not None:
        if n_images == n_shifts:
            return translations
        if n_shifts == 0 or n_images % n_shifts:
            raise ValueError(message)
        return tf.repeat(translations, n_images // n_shifts, axis=0)
    n_images, n_shifts = tf.shape(images)[0], tf.shape(translations)[0]
    safe_shifts = tf.maximum(n_shifts, 1)
    check = tf.debugging.assert_equal(
        n_images, n_shifts * (n_images // safe_shifts), message=message
    )
    with tf.control_dependencies([check]):
        return tf.repeat(translations, n_images // safe_shifts, axis=0)


def _warp_projective(images, dx, dy, out_shape, origin, interpolation):
    # The op maps output pixel (x, y) to input (x + t2, y + t5); pixel centres sit on
    # integer coordinates, so a pure shift needs no half-pixel correction.
    zeros, ones = tf.zeros_like(dx), tf.ones_like(dx)
    transforms = tf.stack(
        [ones, zeros, origin[1] - dx, zeros, ones, origin[0] - dy, zeros, zeros], axis=1
    )
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.constant(out_shape, tf.int32),
        fill_value=tf.constant(0.0, tf.float32),
        interpolation=interpolation.upper(),
        fill_mode="CONSTANT",
    )


def _warp_gather(images, dx, dy, out_shape, origin, interpolation):
    # A shift is separable: resample rows, transpose, resample rows again, transpose
    # back. Gathering whole rows (contiguous W*c slices) is much faster than gathering
    # single pixels, with or without XLA.
    (_, height, width, depth), (out_h, out_w) = images.shape, out_shape
    rows = tf.reshape(images, [-1, height, width * depth])
    rows = _resample_rows(rows, origin[0] - dy, out_h, interpolation)
    cols = tf.transpose(tf.reshape(rows, [-1, out_h, width, depth]), [0, 2, 1, 3])
    cols = tf.reshape(cols, [-1, width, out_h * depth])
    cols = _resample_rows(cols, origin[1] - dx, out_w, interpolation)
    return tf.transpose(tf.reshape(cols, [-1, out_w, out_h, depth]), [0, 2, 1, 3])


def _resample_rows(rows, start, size, interpolation):
    """Sample rows (b, L, R) on axis 1 at ``start_b + arange(size)``; zero outside; (b, size, R)."""
    length = rows.shape[1]
    coords = tf.range(size, dtype=tf.float32)[None, :] + start[:, None]  # (b, size)
    if interpolation == "nearest":
        taps = [(tf.sign(coords) * tf.floor(tf.abs(coords) + 0.5), tf.ones_like(coords))]
    else:
        lower = tf.floor(coords)
        frac = coords - lower
        taps = [(lower, 1.0 - frac), (lower + 1.0, frac)]
    result = 0.0
    for index, weight in taps:
        inside = tf.logical_and(index >= 0.0, index <= length - 1.0)
        weight = tf.cast(tf.where(inside, weight, 0.0), rows.dtype)[:, :, None]
        index = tf.cast(tf.clip_by_value(index, 0.0, length - 1.0), tf.int32)
        result += tf.gather(rows, index, axis=1, batch_dims=1) * weight
    return result


def channels_to_flat(x):
    """(B, N, N, C) -> (B*C, N, N, 1), flat index b*C + c."""
    x = _check_rank(x, 4, "channels_to_flat", "(B, N, N, C)")
    height, width = x.shape[1], x.shape[2]
    return tf.reshape(tf.transpose(x, [0, 3, 1, 2]), [-1, height, width, 1])


def flat_to_channels(x, C):
    """(B*C, N, N, 1) -> (B, N, N, C), inverse of :func:`channels_to_flat`."""
    x = _check_rank(x, 4, "flat_to_channels", "(B*C, N, N, 1)")
    if x.shape[-1] != 1 or C < 1:
        raise ValueError(f"flat_to_channels: need (B*C, N, N, 1) and C >= 1; got {x.shape}, C={C}")
    if x.shape[0] is not None and x.shape[0] % C:
        raise ValueError(f"flat_to_channels: batch {x.shape[0]} is not a multiple of C={C}")
    height, width = x.shape[1], x.shape[2]
    return tf.transpose(tf.reshape(x, [-1, C, height, width]), [0, 2, 3, 1])


def channels_to_grid(x, gridsize):
    """(B, N, N, C) -> (B, g, g, N, N, 1); channel c goes to cell (c // g, c % g)."""
    x = _check_rank(x, 4, "channels_to_grid", "(B, N, N, C)")
    if x.shape[-1] != gridsize * gridsize:
        raise ValueError(
            f"channels_to_grid: C={x.shape[-1]} channels do not make a {gridsize}x{gridsize} grid"
        )
    height, width = x.shape[1], x.shape[2]
    channels_first = tf.transpose(x, [0, 3, 1, 2])
    return tf.reshape(channels_first, [-1, gridsize, gridsize, height, width, 1])


def grid_to_channels(x):
    """(B, g, g, N, N, 1) -> (B, N, N, g*g), inverse of :func:`channels_to_grid`."""
    x = _check_rank(x, 6, "grid_to_channels", "(B, g, g, N, N, 1)")
    g_rows, g_cols, height, width = x.shape[1:5]
    if g_rows != g_cols or x.shape[-1] != 1:
        raise ValueError(f"grid_to_channels: expected (B, g, g, N, N, 1); got {x.shape}")
    return tf.transpose(tf.reshape(x, [-1, g_rows * g_cols, height, width]), [0, 2, 3, 1])


def _check_rank(x, rank, name, layout):
    x = tf.convert_to_tensor(x)
    if x.shape.rank != rank or None in x.shape[1:]:
        raise ValueError(f"{name}: expected {layout} with static non-batch axes; got {x.shape}")
    return x


def pad_and_diffract(psi):
    """Far-field amplitude ``sqrt(fftshift(|FFT2(psi)|**2) / (N*N))`` per channel.

    psi: (B, N, N, C) complex64 exit waves. Returns (B, N, N, C) float32, zero frequency
    at (N // 2, N // 2); ``sum_xy A**2 == sum_xy |psi|**2``. Computed in complex128 so it
    matches ``ptycho.physics.far_field_amplitude`` to float32 rounding; the square root
    is floored at the smallest float64 so its gradient stays finite at zero intensity.
    """
    psi = _check_rank(psi, 4, "pad_and_diffract", "(B, N, N, C) complex")
    if not psi.dtype.is_complex:
        raise ValueError(f"pad_and_diffract: psi must be complex; got {psi.dtype.name}")
    height, width = psi.shape[1], psi.shape[2]
    frames = tf.transpose(tf.cast(psi, tf.complex128), [0, 3, 1, 2])
    spectrum = tf.signal.fft2d(frames)
    intensity = (tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2) / (height * width)
    intensity = tf.signal.fftshift(intensity, axes=(-2, -1))
    amplitude = tf.sqrt(tf.maximum(intensity, np.finfo(np.float64).tiny))
    return tf.cast(tf.transpose(amplitude, [0, 2, 3, 1]), tf.float32)


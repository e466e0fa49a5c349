"""PyTorch operations of the forward path: translation, layouts, diffraction.

The twins of :mod:`ptycho.tf.ops`, with the same conventions (docs/design.md §5) and the same
arithmetic, so that both backends give the same numbers to float32 rounding:

* Tensors keep the TensorFlow layout ``(b, H, W, c)`` (channels last); the network in
  :mod:`ptycho.torch.model` converts to and from ``(b, c, H, W)`` around its convolutions.
* Translating by ``(dx, dy)`` moves content by +dx columns and +dy rows:
  ``out[b, y, x] = img[b, y - dy_b, x - dx_b]``, bilinear, zero outside the image,
  pixel centres on integer coordinates. Source coordinates are computed in float32 as
  ``arange + (origin - d)``, and the shift is applied separably (columns, then rows), as
  in ``ptycho.tf.ops``' XLA kernel.
* Flattened images ``(b*C, H, W, c)`` with translations ``(b, 2)`` get each translation
  repeated C times (flat index ``b*C + c``); any other batch mismatch is a ValueError.
* Complex images travel as stacked real and imaginary channels.
"""
from __future__ import annotations

import numpy as np
import torch


def translate(images: torch.Tensor, translations: torch.Tensor) -> torch.Tensor:
    """Translate each image by its ``[dx, dy]`` (pixels), bilinear with zero fill.

    images: (b, H, W, c) float32/float64 or complex64/complex128; translations (b', 2)
    [dx, dy] with b' == b or b == b' * C. Returns images' shape and dtype.
    """
    images = _check_images(images)
    return warp(images, translations, tuple(images.shape[1:3]), (0, 0))


def warp(images, translations, out_shape, origin):
    """``out[b, y, x] = images[b, y + origin_y - dy_b, x + origin_x - dx_b]``, zero outside.

    A translation fused with a crop (origin > 0, smaller out_shape) or a zero pad
    (origin < 0, larger out_shape). images (b, H, W, c) real or complex; translations
    (b', 2) as in :func:`translate`; out_shape (h, w) and origin (oy, ox) ints.
    """
    images = _check_images(images)
    shifts = _expand_translations(images, _check_translations(translations))
    real = to_real_channels(images)
    columns = _resample_axis(real, origin[1] - shifts[:, 0], out_shape[1], axis=2)
    moved = _resample_axis(columns, origin[0] - shifts[:, 1], out_shape[0], axis=1)
    return from_real_channels(moved, images.dtype)


def _resample_axis(images, start, size, axis):
    """Sample ``images`` along ``axis`` (1 = rows, 2 = columns) at ``start_b + arange(size)``."""
    length = images.shape[axis]
    coords = torch.arange(size, dtype=torch.float32, device=start.device)[None, :] + start[:, None]  # (b, size)
    lower = torch.floor(coords)
    frac = coords - lower
    batch, _, _, channels = images.shape
    if axis == 1:
        index_shape, full = (batch, size, 1, 1), (batch, size, images.shape[2], channels)
    else:
        index_shape, full = (batch, 1, size, 1), (batch, images.shape[1], size, channels)
    result = 0.0
    for index, weight in ((lower, 1.0 - frac), (lower + 1.0, frac)):
        inside = (index >= 0.0) & (index <= length - 1.0)
        weight = torch.where(inside, weight, torch.zeros_like(weight))
        gather_at = index.clamp(0.0, length - 1.0).to(torch.int64).reshape(index_shape)
        taken = torch.gather(images, axis, gather_at.expand(full))
        result = result + taken * weight.reshape(index_shape).to(images.dtype)
    return result


def to_real_channels(x: torch.Tensor) -> torch.Tensor:
    """(..., c) complex -> (..., 2c) real [real parts, imaginary parts]; real passes through."""
    if x.is_complex():
        return torch.cat([x.real, x.imag], dim=-1)
    return x


def from_real_channels(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`to_real_channels` for a target ``dtype``."""
    if dtype.is_complex:
        real, imag = torch.chunk(x, 2, dim=-1)
        return torch.complex(real, imag)
    return x


def _check_images(images):
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"images must be a (b, H, W, c) torch.Tensor; got "
                         f"{getattr(images, 'shape', type(images))}")
    if not (images.is_floating_point() or images.is_complex()):
        raise ValueError(f"images must be float or complex; got {images.dtype}")
    return images


def _check_translations(translations):
    translations = torch.as_tensor(translations).to(torch.float32)
    if translations.ndim != 2 or translations.shape[1] != 2:
        raise ValueError(f"translations must be (b, 2) [dx, dy]; got shape {tuple(translations.shape)}")
    return translations


def _expand_translations(images, translations):
    """Repeat translations C times when images are flattened (b*C, ...) over (b, 2)."""
    n_images, n_shifts = images.shape[0], translations.shape[0]
    if n_images == n_shifts:
        return translations
    if n_shifts == 0 or n_images % n_shifts:
        raise ValueError(
            f"images batch must equal the translations batch or be a multiple of it "
            f"(flattened (b*C, H, W, c) with (b, 2)); got images {tuple(images.shape)}, "
            f"translations {tuple(translations.shape)}"
        )
    return torch.repeat_interleave(translations, n_images // n_shifts, dim=0)


def channels_to_flat(x: torch.Tensor) -> torch.Tensor:
    """(B, N, N, C) -> (B*C, N, N, 1), flat index b*C + c."""
    _check_rank(x, 4, "channels_to_flat", "(B, N, N, C)")
    return x.permute(0, 3, 1, 2).reshape(-1, x.shape[1], x.shape[2], 1)


def flat_to_channels(x: torch.Tensor, C: int) -> torch.Tensor:
    """(B*C, N, N, 1) -> (B, N, N, C), inverse of :func:`channels_to_flat`."""
    _check_rank(x, 4, "flat_to_channels", "(B*C, N, N, 1)")
    if x.shape[-1] != 1 or C < 1 or x.shape[0] % C:
        raise ValueError(f"flat_to_channels: need (B*C, N, N, 1) with B*C a multiple of C={C}; "
                         f"got {tuple(x.shape)}")
    return x.reshape(-1, C, x.shape[1], x.shape[2]).permute(0, 2, 3, 1)


def channels_to_grid(x: torch.Tensor, gridsize: int) -> torch.Tensor:
    """(B, N, N, C) -> (B, g, g, N, N, 1); channel c goes to cell (c // g, c % g)."""
    _check_rank(x, 4, "channels_to_grid", "(B, N, N, C)")
    if x.shape[-1] != gridsize * gridsize:
        raise ValueError(f"channels_to_grid: C={x.shape[-1]} channels do not make a "
                         f"{gridsize}x{gridsize} grid")
    return x.permute(0, 3, 1, 2).reshape(-1, gridsize, gridsize, x.shape[1], x.shape[2], 1)


def grid_to_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, g, g, N, N, 1) -> (B, N, N, g*g), inverse of :func:`channels_to_grid`."""
    _check_rank(x, 6, "grid_to_channels", "(B, g, g, N, N, 1)")
    g_rows, g_cols, height, width = x.shape[1:5]
    if g_rows != g_cols or x.shape[-1] != 1:
        raise ValueError(f"grid_to_channels: expected (B, g, g, N, N, 1); got {tuple(x.shape)}")
    return x.reshape(-1, g_rows * g_cols, height, width).permute(0, 2, 3, 1)


def _check_rank(x, rank, name, layout):
    if not isinstance(x, torch.Tensor) or x.ndim != rank:
        raise ValueError(f"{name}: expected {layout}; got {getattr(x, 'shape', type(x))}")


def pad_and_diffract(psi: torch.Tensor) -> torch.Tensor:
    """Far-field amplitude ``sqrt(fftshift(|FFT2(psi)|**2) / (N*N))`` per channel.

    psi: (B, N, N, C) complex64 exit waves. Returns (B, N, N, C) float32, zero frequency
    at (N // 2, N // 2). Computed in complex128 like ``tf_helper.pad_and_diffract``; the
    square root is floored at the smallest float64 so its gradient stays finite at zero.
    """
    _check_rank(psi, 4, "pad_and_diffract", "(B, N, N, C) complex")
    if not psi.is_complex():
        raise ValueError(f"pad_and_diffract: psi must be complex; got {psi.dtype}")
    height, width = psi.shape[1], psi.shape[2]
    spectrum = torch.fft.fft2(psi.to(torch.complex128), dim=(1, 2))
    intensity = (spectrum.real**2 + spectrum.imag**2) / (height * width)
    intensity = torch.fft.fftshift(intensity, dim=(1, 2))
    amplitude = torch.sqrt(intensity.clamp_min(np.finfo(np.float64).tiny))
    return amplitude.to(torch.float32)

"""Reconstruction quality against a ground-truth object: errors, SSIM and FRC.

A ptychographic reconstruction is defined only up to a global phase offset and (for a
network with a learnt intensity scale) a global amplitude scale, so both are fitted and
removed before any error is measured:

    phase offset   phi0 = angle(sum(recon * conj(truth)))        (amplitude weighted)
    amplitude      s = sum(|r| |t|) / sum(|r|**2)                (least squares, s |r| ~ |t|)

All arrays are 2-D; objects are (M, M) complex. An optional boolean mask (M, M), True
where the scan covered the object, restricts every metric to the covered region.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from scipy.ndimage import gaussian_filter

SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
FRC_THRESHOLD = 0.5
NYQUIST = 0.5  # cycles per pixel


def align_phase(recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Remove the global phase offset of ``recon`` relative to ``truth``.

    recon, truth: (H, W) complex, same shape. mask: (H, W) bool or None (all pixels).
    Returns recon * exp(-1j * phi0), phi0 = angle(sum over the mask of recon * conj(truth)),
    as complex128.
    """
    recon, truth, mask = _check_pair(recon, truth, mask)
    return recon * np.exp(-1j * _phase_offset(recon, truth, mask))


def reconstruction_quality(recon: np.ndarray, truth: np.ndarray,
                           mask: np.ndarray | None = None) -> dict[str, float]:
    """Quality of a stitched reconstruction against the ground-truth object.

    recon, truth: (M, M) complex (any shape (H, W) works). mask: (M, M) bool, True where
    covered, or None for the whole image. Returns a dict of Python floats:

      amp_mae, amp_rmse   mean absolute / root-mean-square amplitude error after the
                          least-squares amplitude scale ``amp_scale`` is applied to recon
      phase_mae           mean |phase difference| (rad) after removing ``phase_offset``,
                          differences wrapped to (-pi, pi]
      amp_ssim, phase_ssim  SSIM of the aligned amplitude / phase images (see ``ssim``),
                          data_range = the truth's value range over the mask
      frc50               frequency (cycles/pixel) where the FRC of the aligned complex
                          images first drops below 0.5; 0.5 (Nyquist) if it never does
      amp_psnr            PSNR of the fitted amplitude (dB): 20 log10(peak / amp_rmse), peak
                          the truth's largest amplitude over the mask; inf when amp_rmse is 0
      amp_scale, phase_offset  the fitted global factors (phase in rad)
    """
    recon, truth, mask = _check_pair(recon, truth, mask)
    phi0 = _phase_offset(recon, truth, mask)
    aligned = recon * np.exp(-1j * phi0)
    scale = _amplitude_scale(np.abs(aligned[mask]), np.abs(truth[mask]))
    amp_r, amp_t = scale * np.abs(aligned), np.abs(truth)
    # Phase of recon unwrapped relative to truth, so SSIM never sees a 2*pi jump.
    dphase = np.angle(aligned * np.conj(truth))
    phase_r, phase_t = np.angle(truth) + dphase, np.angle(truth)
    amp_err = amp_r[mask] - amp_t[mask]
    amp_rmse = float(np.sqrt(np.mean(amp_err**2)))
    return {
        "amp_mae": float(np.mean(np.abs(amp_err))),
        "amp_rmse": amp_rmse,
        "phase_mae": float(np.mean(np.abs(dphase[mask]))),
        "amp_ssim": ssim(amp_r, amp_t, data_range=_value_range(amp_t[mask]), mask=mask),
        "phase_ssim": ssim(phase_r, phase_t, data_range=_value_range(phase_t[mask]), mask=mask),
        "frc50": frc_threshold_frequency(aligned, truth, mask=mask),
        "amp_psnr": psnr(float(np.max(amp_t[mask])), amp_rmse),
        "amp_scale": float(scale),
        "phase_offset": float(phi0),
    }


def psnr(peak: float, rmse: float) -> float:
    """Peak signal-to-noise ratio in dB, 20 log10(peak / rmse): inf for rmse 0, -inf for peak 0."""
    if rmse == 0:
        return float("inf")
    return float(20 * np.log10(peak / rmse)) if peak > 0 else float("-inf")


def ssim(a: np.ndarray, b: np.ndarray, data_range: float | None = None,
         mask: np.ndarray | None = None) -> float:
    """Mean structural similarity (Wang et al. 2004) of two real (H, W) images.

    Gaussian window (sigma 1.5 px, ``scipy.ndimage.gaussian_filter``, reflect at the
    borders), K1 = 0.01, K2 = 0.03, population (co)variances. data_range defaults to the
    range of both images together (1 if both are constant). With a bool mask the images
    are cropped to the mask's bounding box and the SSIM map is averaged over the mask.
    Returns a float in [-1, 1]; 1 for identical images.
    """
    a, b, mask = _check_pair(a, b, mask, names=("a", "b"), complex_ok=False)
    a, b, mask = _crop_to_mask(a, b, mask)
    if data_range is None:
        data_range = max(a.max(), b.max()) - min(a.min(), b.min()) or 1.0
    elif not (np.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    blur = partial(gaussian_filter, sigma=SSIM_SIGMA, mode="reflect")
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return float(np.mean(ssim_map[mask]))


def fourier_ring_correlation(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two (H, W) images (real or complex).

    Rings are 1 frequency sample wide on the grid of the shorter side L = min(H, W):
    ring k holds frequencies |f| in [(k - 0.5)/L, (k + 0.5)/L), k = 0 .. L // 2.
    Returns (frequencies (L//2 + 1,) float64 in cycles/pixel, frc (L//2 + 1,) float64):
    frc_k = Re(sum F_a conj(F_b)) / sqrt(sum |F_a|**2 * sum |F_b|**2) over ring k,
    0 where a ring holds no energy.
    """
    a, b, _ = _check_pair(a, b, None, names=("a", "b"))
    fa, fb = np.fft.fft2(a), np.fft.fft2(b)
    length = min(a.shape)
    fy, fx = np.meshgrid(np.fft.fftfreq(a.shape[0]), np.fft.fftfreq(a.shape[1]), indexing="ij")
    ring = np.rint(np.hypot(fx, fy) * length).astype(np.int64).ravel()
    n_rings = length // 2 + 1
    keep = ring < n_rings

    def ring_sum(values):
        return np.bincount(ring[keep], weights=values.ravel()[keep], minlength=n_rings)

    cross = ring_sum(np.real(fa * np.conj(fb)))
    power = np.sqrt(ring_sum(np.abs(fa) ** 2) * ring_sum(np.abs(fb) ** 2))
    frc = np.divide(cross, power, out=np.zeros(n_rings), where=power > 0)
    return np.arange(n_rings) / length, frc


def frc_threshold_frequency(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None,
                            threshold: float = FRC_THRESHOLD) -> float:
    """First frequency (cycles/pixel) above DC where the FRC of a and b drops below threshold.

    Linear interpolation between the last ring at or above the threshold and the first
    ring below it; NYQUIST (0.5) when it never drops. With a mask, both images are
    cropped to its bounding box, their mean over the mask is removed and they are zeroed
    outside it: without the mean removal the shared mask edge dominates the spectrum and
    a featureless reconstruction would score the Nyquist frequency.
    """
    a, b, mask = _check_pair(a, b, mask, names=("a", "b"))
    a, b, mask = _crop_to_mask(a, b, mask)
    a = np.where(mask, a - a[mask].mean(), 0)
    b = np.where(mask, b - b[mask].mean(), 0)
    freqs, frc = fourier_ring_correlation(a, b)
    below = np.flatnonzero(frc[1:] < threshold)
    if below.size == 0:
        return NYQUIST
    k = below[0] + 1
    if k == 1:  # below already at the first ring (the DC ring carries no signal once the mean is removed)
        return float(freqs[1])
    step = (frc[k - 1] - threshold) / (frc[k - 1] - frc[k])
    return float(freqs[k - 1] + step * (freqs[k] - freqs[k - 1]))


def _phase_offset(recon, truth, mask):
    return float(np.angle(np.sum(recon[mask] * np.conj(truth[mask]))))


def _value_range(values):
    return float(np.ptp(values)) or 1.0


def _amplitude_scale(amp_recon, amp_truth):
    energy = np.sum(amp_recon**2)
    return np.sum(amp_recon * amp_truth) / energy if energy > 0 else 1.0


def _crop_to_mask(a, b, mask):
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return a[box], b[box], mask[box]


def _check_pair(a, b, mask, names=("recon", "truth"), complex_ok=True):
    """Validate two same-shape finite 2-D images and a mask; return float64/complex128 copies."""
    arrays = []
    for name, x in zip(names, (a, b)):
        x = np.asarray(x)
        if x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D image (H, W), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or (np.iscomplexobj(x) and not complex_ok):
            kind = "numeric" if complex_ok else "real"
            raise ValueError(f"{name} must be a {kind} array, got dtype {x.dtype}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{name} contains NaN or Inf values")
        arrays.append(x.astype(np.complex128 if np.iscomplexobj(x) else np.float64))
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            f"{names[0]} and {names[1]} shapes differ: {arrays[0].shape} vs {arrays[1].shape}"
        )
    return arrays[0], arrays[1], _check_mask(mask, arrays[0].shape)


def _check_mask(mask, shape):
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {shape}")
    if mask.dtype != bool:
        raise ValueError(f"mask must be a bool array (True = covered), got dtype {mask.dtype}")
    if not mask.any():
        raise ValueError("mask selects no pixels; nothing to compare")
    return mask


def floor_comparison(quality: dict[str, float], floor: dict[str, float]) -> dict[str, float]:
    """``floor_amp_mae``, ``floor_phase_mae`` (the constant object a0, phase 0, stitched alike)
    and ``amp_mae_to_floor``, ``phase_mae_to_floor`` (left out where the floor is 0, e.g. the
    phase of an amplitude-only object): below 1 the network beats the constant object."""
    compared = {}
    for name in ("amp_mae", "phase_mae"):
        compared[f"floor_{name}"] = floor[name]
        if floor[name] > 0:
            compared[f"{name}_to_floor"] = quality[name] / floor[name]
    return compared

"""Numpy reference of the ptychographic forward model (docs/design.md §5).

Pure functions, no I/O. Arrays carry frames on their last two axes, ``(..., N, N)``;
leading axes are images (and channels, if the caller keeps them in front). Everything
is computed in double precision so that this module can serve as the oracle the
TensorFlow and PyTorch code are tested against.

    Psi = P * O                                  exit wave
    I   = fftshift(|FFT2(Psi)|**2) / (N * N)     far-field intensity, zero frequency at (N/2, N/2)
    A   = sqrt(I)                                far-field amplitude
    A_obs = sqrt(Poisson(A**2))                  photon-counting observation

With this normalisation Parseval reads ``sum_xy A**2 == sum_xy |Psi|**2``.
"""
from __future__ import annotations

import numpy as np


def illuminate(probe: np.ndarray, obj_patches: np.ndarray) -> np.ndarray:
    """Exit wave ``Psi = P * O``.

    probe: (N, N) complex; obj_patches: (..., N, N) complex.
    Returns (..., N, N) complex128.
    """
    probe = np.asarray(probe, dtype=np.complex128)
    obj_patches = np.asarray(obj_patches, dtype=np.complex128)
    if probe.ndim != 2 or obj_patches.shape[-2:] != probe.shape:
        raise ValueError(
            f"illuminate: probe must be (N, N) and object patches (..., N, N) with the same N; "
            f"got probe {probe.shape}, patches {obj_patches.shape}"
        )
    return probe * obj_patches


def far_field_intensity(psi: np.ndarray) -> np.ndarray:
    """Far-field intensity ``fftshift(|FFT2(psi)|**2) / (H * W)``.

    psi: (..., H, W) complex exit waves. Returns (..., H, W) float64 with the zero
    frequency at pixel (H // 2, W // 2); its sum over the frame equals ``sum |psi|**2``.
    """
    psi = np.asarray(psi, dtype=np.complex128)
    if psi.ndim < 2:
        raise ValueError(f"far_field_intensity: psi must be (..., H, W); got shape {psi.shape}")
    height, width = psi.shape[-2:]
    spectrum = np.fft.fft2(psi, axes=(-2, -1))
    intensity = (spectrum.real**2 + spectrum.imag**2) / (height * width)
    return np.fft.fftshift(intensity, axes=(-2, -1))


def far_field_amplitude(psi: np.ndarray) -> np.ndarray:
    """Far-field amplitude ``A = sqrt(fftshift(|FFT2(psi)|**2) / (H * W))``, (..., H, W) float64."""
    return np.sqrt(far_field_intensity(psi))


def forward_amplitude(probe: np.ndarray, obj_patches: np.ndarray) -> np.ndarray:
    """Noise-free diffraction amplitude of object patches, (..., N, N) float64."""
    return far_field_amplitude(illuminate(probe, obj_patches))


def poisson_observe(amplitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photon-counting observation ``sqrt(Poisson(amplitude**2))``.

    amplitude: real, non-negative, finite, in units of sqrt(photons).
    Returns float64 of the same shape; its square holds non-negative integers.
    """
    amplitude = np.asarray(amplitude, dtype=np.float64)
    if not np.all(np.isfinite(amplitude)) or np.any(amplitude < 0):
        raise ValueError("poisson_observe: amplitude must be finite and non-negative")
    return np.sqrt(rng.poisson(amplitude**2).astype(np.float64))


def intensity_scale(psi: np.ndarray, nphotons: float) -> float:
    """Intensity scale ``s = sqrt(nphotons / mean_images(sum_xy |psi|**2))``.

    psi: (..., N, N) exit waves, or diffraction amplitudes (Parseval gives the same
    energy). Multiplying amplitudes by ``s`` makes the mean photon count per frame
    ``nphotons``. Raises ValueError for non-positive nphotons or zero-energy frames.
    """
    _check_nphotons(nphotons)
    psi = np.asarray(psi)
    if psi.ndim < 2 or psi.size == 0:
        raise ValueError(f"intensity_scale: expected (..., N, N) frames; got shape {psi.shape}")
    energy = np.sum(np.abs(psi).astype(np.float64) ** 2, axis=(-2, -1))
    mean_energy = float(np.mean(energy))
    if not np.isfinite(mean_energy) or mean_energy <= 0:
        raise ValueError(
            f"intensity_scale: mean frame energy must be finite and positive; got {mean_energy}"
        )
    return float(np.sqrt(nphotons / mean_energy))


def closed_form_intensity_scale(nphotons: float, N: int) -> float:
    """Closed-form scale ``sqrt(nphotons) / (N / 2)`` used when no data statistics exist.

    For nphotons = 1e9 and N = 64 this is about 988.2.
    """
    _check_nphotons(nphotons)
    if int(N) != N or N < 2:
        raise ValueError(f"closed_form_intensity_scale: N must be an integer >= 2; got {N}")
    return float(np.sqrt(nphotons) / (N / 2))


def _check_nphotons(nphotons: float) -> None:
    if not np.isfinite(nphotons) or nphotons <= 0:
        raise ValueError(f"nphotons must be finite and positive; got {nphotons}")

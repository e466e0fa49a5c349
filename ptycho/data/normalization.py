"""Dataset intensity scale and the symmetric scaling of model inputs and labels.

The convention (docs/design.md §4, §5), followed by every module:

* An NPZ ``diffraction`` array holds amplitudes normalised like the reference simulator,
  ``A_file = sqrt(counts) / s_sim``, so ``mean_n sum_xy A_file**2 ~= mean_n sum_xy |Psi|**2``.
* The dataset intensity scale is ``s = sqrt(nphotons / mean_n sum_xy A_file**2)``
  (:func:`dataset_intensity_scale`); with no data statistics the closed form
  ``sqrt(nphotons) / (N / 2)`` is used (:func:`closed_form_intensity_scale`).
* Model input ``X = s * A_file`` (:func:`scale_inputs`), in units of sqrt(photons).
* Labels are the intensities of the same scaled amplitudes, ``X**2`` (:func:`intensity_labels`),
  i.e. photon counts: inputs and labels carry the same factor ``s``, once as amplitude and once
  squared as intensity. The model divides its input by ``exp(log_scale)`` (initialised to
  ``log(s)``) and multiplies its predicted amplitude by the same factor before squaring.
"""
from __future__ import annotations

import numpy as np

from ptycho.physics import closed_form_intensity_scale, intensity_scale

__all__ = [
    "amplitude_rms",
    "closed_form_intensity_scale",
    "dataset_intensity_scale",
    "intensity_labels",
    "scale_inputs",
]


def dataset_intensity_scale(diffraction: np.ndarray, nphotons: float = 1e9) -> float:
    """Intensity scale ``s = sqrt(nphotons / mean_n sum_xy A**2)`` of a dataset.

    diffraction: (n, N, N) (or (..., N, N)) real, non-negative amplitudes as stored in the
    NPZ contract. Returns a positive float such that ``s * A`` has a mean of ``nphotons``
    photons per frame. Raises ValueError for negative or non-finite amplitudes, all-zero
    data or non-positive nphotons.
    """
    diffraction = np.asarray(diffraction)
    if np.iscomplexobj(diffraction):
        raise ValueError("dataset_intensity_scale: diffraction must be real amplitudes; got complex")
    if np.any(diffraction < 0) or not np.all(np.isfinite(diffraction)):
        raise ValueError("dataset_intensity_scale: diffraction must be finite and non-negative")
    return intensity_scale(diffraction, nphotons)


def amplitude_rms(diffraction: np.ndarray) -> float:
    """RMS of the amplitudes ``sqrt(mean A**2)`` over every pixel of every frame (float).

    The encoder divides its input by this (``ModelSpec.encoder_input_rms``) so that it sees
    unit-RMS data whatever the dataset's physical scale. Raises ValueError for all-zero or
    non-finite data.
    """
    energy = float(np.mean(np.square(np.asarray(diffraction, dtype=np.float64))))
    if not np.isfinite(energy) or energy <= 0:
        raise ValueError(f"amplitude_rms: the diffraction amplitudes must be finite and not all zero; "
                         f"got mean A**2 = {energy}")
    return float(np.sqrt(energy))


def scale_inputs(diffraction: np.ndarray, scale: float) -> np.ndarray:
    """Model input ``X = scale * A``; same shape as ``diffraction``, float32, sqrt(photons)."""
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale_inputs: scale must be finite and positive; got {scale}")
    return (np.asarray(diffraction, dtype=np.float64) * scale).astype(np.float32)


def intensity_labels(inputs: np.ndarray) -> np.ndarray:
    """Intensity labels ``X**2`` of scaled inputs ``X``; same shape, float32, photons."""
    inputs = np.asarray(inputs, dtype=np.float64)
    return (inputs**2).astype(np.float32)

"""The community's NPZ data contract: what a ptychography dataset holds, checked.

NPZ keys (n images of N x N pixels):

    diffraction    (n, N, N) float32   far-field amplitudes (legacy key ``diff3d``); any real
                                       float dtype is accepted and cast to float32
    probeGuess     (N, N) complex64    complex128 is accepted and cast; a real probe is an error
    xcoords        (n,) float64        patch centres, pixels of the object frame (x = column)
    ycoords        (n,) float64        (y = row)
    objectGuess    (M, H) complex64    optional, the full object (ground truth when simulated)
    Y              (n, N, N) complex64 optional, true object patches ((n, N, N, 1) is accepted)
    scan_index     (n,) int64          optional, index of each image in its scan
    xcoords_start, ycoords_start       optional (n,) float64, accepted but never required

N must be one of SUPPORTED_N. Physically empty data is refused: an all-zero probe, all-zero
diffraction (single dark frames are allowed), an all-zero objectGuess. Coordinates lie within
+-MAX_COORD_PX pixels. Unknown extra keys are ignored. Every violation raises
DataContractError naming the file (or in-memory source), the key, what was expected and what
was found. Reading and writing NPZ files is ``ptycho.data.npz``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np

SUPPORTED_N = (64, 128, 256)
LEGACY_DIFFRACTION_KEY = "diff3d"
REQUIRED_KEYS = ("diffraction", "probeGuess", "xcoords", "ycoords")
OPTIONAL_KEYS = ("objectGuess", "Y", "scan_index", "xcoords_start", "ycoords_start")

# NPZ key -> PtychoData field name
_FIELD_OF_KEY = {
    "diffraction": "diffraction",
    "probeGuess": "probe",
    "xcoords": "xcoords",
    "ycoords": "ycoords",
    "objectGuess": "object_guess",
    "Y": "Y",
    "scan_index": "scan_index",
    "xcoords_start": "xcoords_start",
    "ycoords_start": "ycoords_start",
}
_PER_IMAGE_FIELDS = ("diffraction", "xcoords", "ycoords", "Y", "scan_index", "xcoords_start", "ycoords_start")
# float32 (the model's offsets) holds whole pixels exactly up to 2**24; no canvas that wide fits in memory
MAX_COORD_PX = 2**24


class DataContractError(ValueError):
    """A dataset violates the NPZ contract; the message names source, key, expected and got."""

    def __init__(self, source: str, key: str | None, expected: str, got: str):
        self.source, self.key, self.expected, self.got = source, key, expected, got
        where = f"{source}: key '{key}'" if key else f"{source}"
        super().__init__(f"{where}: expected {expected}; got {got}")


@dataclass(frozen=True, eq=False)
class PtychoData:
    """One validated dataset (or split) in the NPZ contract's dtypes.

    diffraction (n, N, N) float32 amplitudes; probe (N, N) complex64; xcoords, ycoords (n,)
    float64 pixels (patch centres); object_guess (M, H) complex64 or None; Y (n, N, N)
    complex64 or None; scan_index (n,) int64 or None; xcoords_start, ycoords_start (n,)
    float64 or None. Construction validates and casts (raises DataContractError).
    """

    diffraction: np.ndarray
    probe: np.ndarray
    xcoords: np.ndarray
    ycoords: np.ndarray
    object_guess: np.ndarray | None = None
    Y: np.ndarray | None = None
    scan_index: np.ndarray | None = None
    xcoords_start: np.ndarray | None = None
    ycoords_start: np.ndarray | None = None

    def __post_init__(self) -> None:
        checked = _checked_fields(npz_arrays(self), "PtychoData")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    @property
    def N(self) -> int:
        """Frame side in pixels."""
        return int(self.diffraction.shape[-1])

    @property
    def n_images(self) -> int:
        return int(self.diffraction.shape[0])

    @property
    def has_ground_truth(self) -> bool:
        """True when the full object (``objectGuess``) is known."""
        return self.object_guess is not None

    def subset(self, indices: Sequence[int] | np.ndarray) -> "PtychoData":
        """The images at ``indices`` (1-D integers, in the given order); probe and object kept."""
        indices = np.asarray(indices)
        indices = indices.astype(np.int64) if indices.size == 0 else indices
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"subset: indices must be 1-D integers; got {indices.dtype} {indices.shape}")
        if indices.size and (indices.min() < -self.n_images or indices.max() >= self.n_images):
            raise ValueError(f"subset: indices out of range for {self.n_images} images")
        values = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = value[indices] if f.name in _PER_IMAGE_FIELDS and value is not None else value
        return PtychoData(**values)


def check_layout(items: Mapping[str, object], source: str) -> tuple[int, int]:
    """Check the keys, shapes and dtypes of NPZ-keyed arrays or NpyHeaders; returns (n, N).

    Only ``shape``, ``ndim`` and ``dtype`` are read, so headers are checked before their data.
    Raises DataContractError.
    """
    diff_key = "diffraction" if "diffraction" in items else LEGACY_DIFFRACTION_KEY
    present = set(items) | ({"diffraction"} if diff_key in items else set())
    missing = [key for key in REQUIRED_KEYS if key not in present]
    if missing:
        expected = f"required keys {list(REQUIRED_KEYS)} (legacy 'diff3d' for 'diffraction')"
        raise DataContractError(source, missing[0], expected, f"keys {sorted(items)}")
    n, N = _diffraction_layout(items[diff_key], diff_key, source)
    _complex_layout(items["probeGuess"].shape, items["probeGuess"].dtype, "probeGuess", source, (N, N),
                    "(N, N), N = frame size")
    for key in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        if key in items:
            _coords_layout(items[key], key, source, n)
    if "objectGuess" in items:
        _complex_layout(items["objectGuess"].shape, items["objectGuess"].dtype, "objectGuess", source,
                        (None, None), "(M, H)")
    if "Y" in items:
        shape = items["Y"].shape
        shape = shape[:3] if len(shape) == 4 and shape[-1] == 1 else shape
        _complex_layout(shape, items["Y"].dtype, "Y", source, (n, N, N), "(n, N, N)")
    if "scan_index" in items:
        _scan_index_layout(items["scan_index"], source, n)
    return n, N


def validate(data: PtychoData, source: str) -> None:
    """Re-run the contract checks on in-memory data (e.g. after in-place edits)."""
    _checked_fields(npz_arrays(data), source)


def from_npz_arrays(arrays: Mapping[str, np.ndarray], source: str) -> PtychoData:
    """PtychoData of NPZ-keyed arrays, checked against the contract. Raises DataContractError
    naming ``source``."""
    return PtychoData(**_checked_fields(arrays, source))


def npz_arrays(data: PtychoData) -> dict[str, np.ndarray]:
    """{NPZ key: array} of ``data`` (the keys it holds), as ``numpy.savez`` writes them."""
    arrays = {key: getattr(data, name) for key, name in _FIELD_OF_KEY.items()}
    return {key: value for key, value in arrays.items() if value is not None}


def checked_coords(arr: np.ndarray, key: str, source: str) -> np.ndarray:
    """Coordinates (n,) cast to float64, finite and within +-MAX_COORD_PX. Raises DataContractError."""
    arr = arr.astype(np.float64, copy=False)
    _check_finite(arr, key, source)
    beyond = np.flatnonzero(np.abs(arr) > MAX_COORD_PX)
    if beyond.size:
        got = f"{beyond.size} value(s) beyond it, e.g. index {beyond[0]}: {arr[beyond[0]]:.6g}"
        raise DataContractError(source, key, f"pixel coordinates within +-{MAX_COORD_PX} (2**24) px", got)
    return arr


def _checked_fields(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check NPZ-keyed arrays against the contract; return PtychoData fields, cast."""
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    check_layout(arrays, source)
    diff_key = "diffraction" if "diffraction" in arrays else LEGACY_DIFFRACTION_KEY
    out = {"diffraction": _diffraction_values(arrays[diff_key], diff_key, source)}
    out["probe"] = _complex_values(arrays["probeGuess"], "probeGuess", source, "a probe (an illumination)")
    for key in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        if key in arrays:
            out[_FIELD_OF_KEY[key]] = checked_coords(arrays[key], key, source)
    if "objectGuess" in arrays:
        out["object_guess"] = _complex_values(arrays["objectGuess"], "objectGuess", source, "an object")
    if "Y" in arrays:
        out["Y"] = _complex_values(_squeeze_channel(arrays["Y"]), "Y", source)
    if "scan_index" in arrays:
        out["scan_index"] = arrays["scan_index"].astype(np.int64, copy=False)
    return out


def _squeeze_channel(arr: np.ndarray) -> np.ndarray:
    """(n, N, N, 1) -> (n, N, N); anything else unchanged."""
    return arr[..., 0] if arr.ndim == 4 and arr.shape[-1] == 1 else arr


def _diffraction_layout(item, key: str, source: str) -> tuple[int, int]:
    shape = tuple(item.shape)
    if len(shape) != 3:
        raise DataContractError(source, key, "a 3-D array (n, N, N)", f"shape {shape}")
    if not np.issubdtype(item.dtype, np.floating):
        raise DataContractError(source, key, "real floating amplitudes (float32)", f"dtype {item.dtype}")
    if shape[0] == 0:
        raise DataContractError(source, key, "at least one image", "zero images")
    if shape[1] != shape[2]:
        raise DataContractError(source, key, "square frames (n, N, N)", f"shape {shape}")
    if shape[1] not in SUPPORTED_N:
        raise DataContractError(source, key, f"frame size N in {SUPPORTED_N}", f"N = {shape[1]}")
    return shape[0], shape[1]


def _complex_layout(shape: tuple, dtype: np.dtype, key: str, source: str, want: tuple, shape_text: str) -> None:
    shape = tuple(shape)
    if len(shape) != len(want) or any(w is not None and w != got for w, got in zip(want, shape)):
        raise DataContractError(source, key, f"shape {shape_text} = {_shape_text(want)}", f"shape {shape}")
    if not np.issubdtype(dtype, np.complexfloating):
        real = np.issubdtype(dtype, np.number) or dtype == bool
        got = f"real-valued dtype {dtype}" if real else f"dtype {dtype}"
        raise DataContractError(source, key, "a complex array (complex64)", got)


def _coords_layout(item, key: str, source: str, n: int) -> None:
    if item.ndim != 1:
        raise DataContractError(source, key, f"a 1-D array ({n},)", f"shape {tuple(item.shape)}")
    if not (np.issubdtype(item.dtype, np.floating) or _is_integer_dtype(item.dtype)):
        raise DataContractError(source, key, "real pixel coordinates (float64)", f"dtype {item.dtype}")
    if item.shape[0] != n:
        raise DataContractError(source, key, f"length {n} (one per diffraction image)", f"length {item.shape[0]}")


def _scan_index_layout(item, source: str, n: int) -> None:
    if item.ndim != 1 or item.shape[0] != n:
        expected = f"shape ({n},) (one per diffraction image)"
        raise DataContractError(source, "scan_index", expected, f"shape {tuple(item.shape)}")
    if not _is_integer_dtype(item.dtype):
        raise DataContractError(source, "scan_index", "integers", f"dtype {item.dtype}")


def _diffraction_values(arr: np.ndarray, key: str, source: str) -> np.ndarray:
    arr = arr.astype(np.float32, copy=False)
    _check_finite(arr, key, source)
    if np.any(arr < 0):
        raise DataContractError(source, key, "non-negative amplitudes", f"minimum {float(arr.min())}")
    if not np.any(arr):  # single dark frames are allowed; a dataset without photons is not
        raise DataContractError(source, key, "amplitudes that are not all zero", f"all {arr.shape[0]} frames zero")
    return arr


def _complex_values(arr: np.ndarray, key: str, source: str, nonzero: str | None = None) -> np.ndarray:
    """Cast to complex64 and check finite; ``nonzero`` (what the array is) also refuses all zeros."""
    arr = arr.astype(np.complex64, copy=False)
    _check_finite(arr, key, source)
    if nonzero and not np.any(arr):
        raise DataContractError(source, key, f"{nonzero} that is not all zero", f"all {arr.size} values zero")
    return arr


def _check_finite(arr: np.ndarray, key: str, source: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        raise DataContractError(source, key, "finite values", f"{bad} NaN or Inf value(s)")


def _is_integer_dtype(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) and dtype != bool


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"

"""The community's NPZ data contract: load, validate and save ptychography datasets.

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

N must be one of SUPPORTED_N. Loading never unpickles. Every violation raises
DataContractError naming the file (or in-memory source), the key, what was expected and
what was found. Unknown extra keys are ignored.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path
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
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")


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
        checked = _checked_fields(_npz_arrays(self), "PtychoData")
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


def load_npz(path: str | os.PathLike) -> PtychoData:
    """Load and validate an NPZ dataset (never unpickles). Raises DataContractError."""
    path = Path(path)
    source = str(path)
    _check_is_zip(path, source)
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataContractError(source, None, "a complete NPZ archive", f"unreadable file ({exc})") from exc
    with archive:
        wanted = (*REQUIRED_KEYS, LEGACY_DIFFRACTION_KEY, *OPTIONAL_KEYS)
        arrays = {key: _read_member(archive, key, source) for key in wanted if key in archive.files}
    return PtychoData(**_checked_fields(arrays, source))


def validate(data: PtychoData, source: str) -> None:
    """Re-run the contract checks on in-memory data (e.g. after in-place edits)."""
    _checked_fields(_npz_arrays(data), source)


def save_npz(path: str | os.PathLike, data: PtychoData) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    validate(data, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **_npz_arrays(data))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def file_sha1(path: str | os.PathLike) -> str:
    """Hex sha1 of a file's bytes."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _npz_arrays(data: PtychoData) -> dict[str, np.ndarray]:
    arrays = {key: getattr(data, name) for key, name in _FIELD_OF_KEY.items()}
    return {key: value for key, value in arrays.items() if value is not None}


def _check_is_zip(path: Path, source: str) -> None:
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise DataContractError(source, None, "an NPZ archive", "an empty file (0 bytes)")
    if head not in _ZIP_MAGIC:
        raise DataContractError(source, None, "an NPZ (zip) archive", f"a file starting with {head!r}")


def _read_member(archive: np.lib.npyio.NpzFile, key: str, source: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            got = "a pickled object array (refused)"
            raise DataContractError(source, key, "a numeric array", got) from exc
        raise DataContractError(source, key, "a readable array", f"a corrupt member ({exc})") from exc
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise DataContractError(source, key, "a readable array", f"a corrupt member ({exc})") from exc


def _checked_fields(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check NPZ-keyed arrays against the contract; return PtychoData fields, cast."""
    diff_key = "diffraction" if "diffraction" in arrays else LEGACY_DIFFRACTION_KEY
    present = set(arrays) | ({"diffraction"} if diff_key in arrays else set())
    missing = [key for key in REQUIRED_KEYS if key not in present]
    if missing:
        expected = f"required keys {list(REQUIRED_KEYS)} (legacy 'diff3d' for 'diffraction')"
        raise DataContractError(source, missing[0], expected, f"keys {sorted(arrays)}")
    diffraction = _check_diffraction(np.asarray(arrays[diff_key]), diff_key, source)
    n, N = diffraction.shape[0], diffraction.shape[1]
    out = {"diffraction": diffraction}
    out["probe"] = _check_complex(arrays["probeGuess"], "probeGuess", source, (N, N), "(N, N), N = frame size")
    for key in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        if key in arrays:
            out[_FIELD_OF_KEY[key]] = _check_coords(arrays[key], key, source, n)
    if "objectGuess" in arrays:
        out["object_guess"] = _check_complex(arrays["objectGuess"], "objectGuess", source, (None, None), "(M, H)")
    if "Y" in arrays:
        out["Y"] = _check_complex(_squeeze_channel(arrays["Y"]), "Y", source, (n, N, N), "(n, N, N)")
    if "scan_index" in arrays:
        out["scan_index"] = _check_scan_index(np.asarray(arrays["scan_index"]), source, n)
    return out


def _squeeze_channel(arr) -> np.ndarray:
    """(n, N, N, 1) -> (n, N, N); anything else unchanged."""
    arr = np.asarray(arr)
    return arr[..., 0] if arr.ndim == 4 and arr.shape[-1] == 1 else arr


def _check_diffraction(arr: np.ndarray, key: str, source: str) -> np.ndarray:
    if arr.ndim != 3:
        raise DataContractError(source, key, "a 3-D array (n, N, N)", f"shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataContractError(source, key, "real floating amplitudes (float32)", f"dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise DataContractError(source, key, "at least one image", "zero images")
    if arr.shape[1] != arr.shape[2]:
        raise DataContractError(source, key, "square frames (n, N, N)", f"shape {arr.shape}")
    if arr.shape[1] not in SUPPORTED_N:
        raise DataContractError(source, key, f"frame size N in {SUPPORTED_N}", f"N = {arr.shape[1]}")
    arr = arr.astype(np.float32, copy=False)
    _check_finite(arr, key, source)
    if np.any(arr < 0):
        raise DataContractError(source, key, "non-negative amplitudes", f"minimum {float(arr.min())}")
    return arr


def _check_complex(arr, key: str, source: str, shape: tuple, shape_text: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != len(shape) or any(want is not None and want != got for want, got in zip(shape, arr.shape)):
        expected = f"shape {shape_text} = {_shape_text(shape)}"
        raise DataContractError(source, key, expected, f"shape {arr.shape}")
    if not np.iscomplexobj(arr):
        raise DataContractError(source, key, "a complex array (complex64)", f"real-valued dtype {arr.dtype}")
    arr = arr.astype(np.complex64, copy=False)
    _check_finite(arr, key, source)
    return arr


def _check_coords(arr, key: str, source: str, n: int) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise DataContractError(source, key, f"a 1-D array ({n},)", f"shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or _is_integer_dtype(arr.dtype)):
        raise DataContractError(source, key, "real pixel coordinates (float64)", f"dtype {arr.dtype}")
    if arr.shape[0] != n:
        expected = f"length {n} (one per diffraction image)"
        raise DataContractError(source, key, expected, f"length {arr.shape[0]}")
    arr = arr.astype(np.float64, copy=False)
    _check_finite(arr, key, source)
    return arr


def _check_scan_index(arr: np.ndarray, source: str, n: int) -> np.ndarray:
    if arr.ndim != 1 or arr.shape[0] != n:
        expected = f"shape ({n},) (one per diffraction image)"
        raise DataContractError(source, "scan_index", expected, f"shape {arr.shape}")
    if not _is_integer_dtype(arr.dtype):
        raise DataContractError(source, "scan_index", "integers", f"dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_finite(arr: np.ndarray, key: str, source: str) -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        bad = int(arr.size - np.count_nonzero(finite))
        raise DataContractError(source, key, "finite values", f"{bad} NaN or Inf value(s)")


def _is_integer_dtype(dtype: np.dtype) -> bool:
    return np.issubdtype(dtype, np.integer) and dtype != bool


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"

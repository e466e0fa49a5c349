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

N must be one of SUPPORTED_N. Physically empty data is refused: an all-zero probe, all-zero
diffraction (single dark frames are allowed), an all-zero objectGuess. Coordinates lie within
+-MAX_COORD_PX pixels. Unknown extra keys are ignored.

Loading never unpickles and reads the .npy headers of every member before any array
(:func:`read_npz_headers`, :func:`check_layout`): a header that declares more data than the
file holds, a corrupt or encrypted member or a wrong shape or dtype is refused without
allocating what the header declares. Every violation raises DataContractError naming the
file (or in-memory source), the key, what was expected and what was found.
"""
from __future__ import annotations

import hashlib
import math
import os
import stat
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
# float32 (the model's offsets) holds whole pixels exactly up to 2**24; no canvas that wide fits in memory
MAX_COORD_PX = 2**24
# deflate expands a stream at most ~1032 times (258-byte matches from ~2-bit codes)
MAX_DEFLATE_RATIO = 1032
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
               (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))


class DataContractError(ValueError):
    """A dataset violates the NPZ contract; the message names source, key, expected and got."""

    def __init__(self, source: str, key: str | None, expected: str, got: str):
        self.source, self.key, self.expected, self.got = source, key, expected, got
        where = f"{source}: key '{key}'" if key else f"{source}"
        super().__init__(f"{where}: expected {expected}; got {got}")


@dataclass(frozen=True)
class NpyHeader:
    """What the .npy header of an NPZ member declares: ``shape`` and ``dtype`` (no data read)."""

    key: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the declared array (a Python int: no overflow for absurd shapes)."""
        return math.prod(self.shape) * self.dtype.itemsize


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
    """Load and validate an NPZ dataset (never unpickles). Raises DataContractError.

    Every member's header is checked (:func:`read_npz_headers`, :func:`check_layout`) before
    any array is read.
    """
    path = Path(path)
    source = str(path)
    headers = read_npz_headers(path)
    check_layout(headers, source)
    with _open_npz(path, source) as archive:
        arrays = {key: _read_member(archive, key, source) for key in headers}
    return PtychoData(**_checked_fields(arrays, source))


def load_positions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(xcoords, ycoords) (n,) float64 pixels of an NPZ dataset, checked; reads only those two
    members, after every header passed :func:`check_layout`. Raises DataContractError."""
    path = Path(path)
    source = str(path)
    check_layout(read_npz_headers(path), source)
    with _open_npz(path, source) as archive:
        return tuple(_coords_values(_read_member(archive, key, source), key, source) for key in ("xcoords", "ycoords"))


def read_npz_headers(path: str | os.PathLike) -> dict[str, NpyHeader]:
    """{key: NpyHeader} of the contract's keys present in an NPZ file; reads no array data.

    Refused (DataContractError naming the file and, where there is one, the key): a missing,
    empty, non-regular or non-zip file, an archive without its central directory; a key stored
    twice, an encrypted member, one neither stored nor deflated (numpy.savez writes only
    those), an unreadable header (.npy versions 1.0 and 2.0), a negative dimension, an object
    dtype; declared sizes the file cannot hold: the header's data size must equal the member's
    size less the header, a stored member must lie inside the file, and a deflated member
    cannot expand more than MAX_DEFLATE_RATIO times.
    """
    path = Path(path)
    source = str(path)
    _check_is_zip(path, source)
    file_size = path.stat().st_size
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataContractError(source, None, "a complete NPZ archive", f"unreadable file ({exc})") from exc
    with archive:
        members = _contract_members(archive, source)
        return {key: _member_header(archive, info, key, source, file_size) for key, info in members.items()}


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
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DataContractError(source, None, "an NPZ file", "no such file") from None
    kind = next((name for test, name in _FILE_KINDS if test(mode)), None)
    if kind is not None:  # a FIFO or a device would block or never end
        raise DataContractError(source, None, "an NPZ file (a regular file)", f"a {kind}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise DataContractError(source, None, "a readable NPZ file", f"an unreadable file ({exc})") from exc
    if not head:
        raise DataContractError(source, None, "an NPZ archive", "an empty file (0 bytes)")
    if head not in _ZIP_MAGIC:
        raise DataContractError(source, None, "an NPZ (zip) archive", f"a file starting with {head!r}")


def _open_npz(path: Path, source: str) -> np.lib.npyio.NpzFile:
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise DataContractError(source, None, "a complete NPZ archive", f"unreadable file ({exc})") from exc


def _contract_members(archive: zipfile.ZipFile, source: str) -> dict[str, zipfile.ZipInfo]:
    """{key: member} of the contract's keys (member ``key.npy``, or ``key`` as numpy also reads)."""
    by_name: dict[str, list[zipfile.ZipInfo]] = {}
    for info in archive.infolist():
        by_name.setdefault(info.filename, []).append(info)
    members = {}
    for key in (*REQUIRED_KEYS, LEGACY_DIFFRACTION_KEY, *OPTIONAL_KEYS):
        found = by_name.get(f"{key}.npy", []) + by_name.get(key, [])
        if len(found) > 1:
            names = [info.filename for info in found]
            raise DataContractError(source, key, "one member per key", f"the key stored twice or more ({names})")
        if found:
            members[key] = found[0]
    return members


def _member_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, source: str,
                   file_size: int) -> NpyHeader:
    """The member's NpyHeader after checking that the file can hold what it declares."""
    _check_member_size(info, key, source, file_size)
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            read_header = _NPY_HEADER_READERS.get(version)
            if read_header is not None:
                shape, _, dtype = read_header(member)
                header_size = member.tell()
    except (ValueError, OSError, EOFError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        got = f"a corrupt member (unreadable .npy header: {exc})"
        raise DataContractError(source, key, "a readable .npy array", got) from exc
    if read_header is None:
        raise DataContractError(source, key, "an .npy header of version 1.0 or 2.0", f"version {version}")
    if any(side < 0 for side in shape):
        raise DataContractError(source, key, "a shape of non-negative sides", f"a header declaring shape {shape}")
    if dtype.hasobject:
        raise DataContractError(source, key, "a numeric array", "a pickled object array (refused)")
    header = NpyHeader(key, tuple(shape), dtype)
    if header_size + header.nbytes != info.file_size:
        got = (f"a header declaring {header.shape} {dtype} = {header.nbytes} bytes in a member holding "
               f"{info.file_size - header_size} bytes of data")
        raise DataContractError(source, key, "a header whose size matches its member", got)
    return header


def _check_member_size(info: zipfile.ZipInfo, key: str, source: str, file_size: int) -> None:
    """Encryption, compression and the sizes the zip entry declares, against the file's size."""
    if info.flag_bits & 0x1:
        raise DataContractError(source, key, "an unencrypted member", "an encrypted member")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        expected = "a member stored or deflated (as numpy.savez writes it)"
        raise DataContractError(source, key, expected, f"compression method {info.compress_type}")
    if info.header_offset + info.compress_size > file_size:
        got = f"a member declaring {info.compress_size} bytes at offset {info.header_offset} of a {file_size}-byte file"
        raise DataContractError(source, key, "a member inside the file", got)
    stored = info.compress_type == zipfile.ZIP_STORED
    capacity = info.compress_size * (1 if stored else MAX_DEFLATE_RATIO)
    if info.file_size > capacity:
        how = "stored bytes" if stored else f"deflated bytes (deflate expands at most {MAX_DEFLATE_RATIO}x)"
        got = f"{info.file_size} bytes declared in {info.compress_size} {how}"
        raise DataContractError(source, key, "a member size the file can hold", got)


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
    except MemoryError as exc:
        raise DataContractError(source, key, "an array that fits in memory", f"MemoryError ({exc})") from exc


def _checked_fields(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Check NPZ-keyed arrays against the contract; return PtychoData fields, cast."""
    arrays = {key: np.asarray(value) for key, value in arrays.items()}
    check_layout(arrays, source)
    diff_key = "diffraction" if "diffraction" in arrays else LEGACY_DIFFRACTION_KEY
    out = {"diffraction": _diffraction_values(arrays[diff_key], diff_key, source)}
    out["probe"] = _complex_values(arrays["probeGuess"], "probeGuess", source, "a probe (an illumination)")
    for key in ("xcoords", "ycoords", "xcoords_start", "ycoords_start"):
        if key in arrays:
            out[_FIELD_OF_KEY[key]] = _coords_values(arrays[key], key, source)
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


def _coords_values(arr: np.ndarray, key: str, source: str) -> np.ndarray:
    arr = arr.astype(np.float64, copy=False)
    _check_finite(arr, key, source)
    beyond = np.flatnonzero(np.abs(arr) > MAX_COORD_PX)
    if beyond.size:
        got = f"{beyond.size} value(s) beyond it, e.g. index {beyond[0]}: {arr[beyond[0]]:.6g}"
        raise DataContractError(source, key, f"pixel coordinates within +-{MAX_COORD_PX} (2**24) px", got)
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

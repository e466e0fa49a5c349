"""NPZ files of the data contract (``ptycho.data.contract``): load, inspect and save.

Loading never unpickles and reads the .npy headers of every member before any array
(:func:`read_npz_headers`, ``contract.check_layout``): a header that declares more data than the
file holds, a corrupt or encrypted member or a wrong shape or dtype is refused without
allocating what the header declares. Every violation raises ``contract.DataContractError``
naming the file, the key, what was expected and what was found. Saving is atomic.
"""
from __future__ import annotations

import hashlib
import math
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptycho.data.contract import (
    LEGACY_DIFFRACTION_KEY, OPTIONAL_KEYS, REQUIRED_KEYS, DataContractError, PtychoData, check_layout,
    checked_coords, from_npz_arrays, npz_arrays, validate,
)

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# deflate expands a stream at most ~1032 times (258-byte matches from ~2-bit codes)
MAX_DEFLATE_RATIO = 1032
_NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
_FILE_KINDS = ((stat.S_ISDIR, "directory"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
               (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"))


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


def load_npz(path: str | os.PathLike) -> PtychoData:
    """Load and validate an NPZ dataset (never unpickles). Raises DataContractError.

    Every member's header is checked (:func:`read_npz_headers`, ``contract.check_layout``) before
    any array is read.
    """
    path = Path(path)
    source = str(path)
    headers = read_npz_headers(path)
    check_layout(headers, source)
    with _open_npz(path, source) as archive:
        arrays = {key: _read_member(archive, key, source) for key in headers}
    return from_npz_arrays(arrays, source)


def load_positions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(xcoords, ycoords) (n,) float64 pixels of an NPZ dataset, checked; reads only those two
    members, after every header passed ``contract.check_layout``. Raises DataContractError."""
    path = Path(path)
    source = str(path)
    check_layout(read_npz_headers(path), source)
    with _open_npz(path, source) as archive:
        return tuple(checked_coords(_read_member(archive, key, source), key, source) for key in ("xcoords", "ycoords"))


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


def save_npz(path: str | os.PathLike, data: PtychoData) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    validate(data, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **npz_arrays(data))
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

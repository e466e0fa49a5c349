"""CXI out: a reconstructed object written as CXI (:func:`write_object_cxi`, :func:`export_stitched`
for a stitched canvas of converted data) and read back (:func:`read_object_cxi`).
docs/data-cxi.md is the user's guide.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptycho.data.cxi import ConversionReport
from ptycho.data.cxi_file import CxiFormatError, check_file, import_h5py, read_scalar

IMAGE = "entry_1/image_1"
CXI_VERSION = 160


@dataclass(frozen=True)
class CxiObject:
    """An object read by :func:`read_object_cxi`: ``canvas`` (H, W) complex64, ``pixel_size_m``
    (dy, dx), ``origin_translation_m`` (3,) the CXI translation of canvas pixel [0, 0] (or None),
    ``basis_vectors_m`` (2, 3) translation per +1 row and +1 column (or None), ``covered`` (H, W) bool
    or None, ``probe`` or None, ``report`` dict or None."""

    canvas: np.ndarray
    pixel_size_m: tuple[float, float]
    origin_translation_m: np.ndarray | None
    basis_vectors_m: np.ndarray | None
    covered: np.ndarray | None
    probe: np.ndarray | None
    report: dict | None


def write_object_cxi(path: str | os.PathLike, canvas: np.ndarray, pixel_size_m: tuple[float, float], *,
                     origin_translation_m=None, basis_vectors_m=None, covered: np.ndarray | None = None,
                     probe: np.ndarray | None = None, report: dict | None = None) -> Path:
    """Write a reconstructed object as CXI (atomically: a temporary file, then a rename).

    ``entry_1/image_1``: data (H, W) complex64, data_type 'object', data_space 'real',
    is_fft_shifted 0, x_pixel_size, y_pixel_size and image_size (x, y) m; origin_translation (3,)
    the CXI sample translation (x, y, z) m that puts the probe centre on pixel [0, 0] and
    basis_vectors (2, 3) its change per +1 row and +1 column (when known); mask (H, W) uint32,
    nonzero where no patch reached (CXI convention); probe (when given); process_1/note_1 the
    conversion report as JSON (when given). ``entry_1/data_1/data`` links to the image (as the
    CXI examples do). pixel_size_m: (dy, dx).
    """
    h5py = import_h5py()
    canvas = np.asarray(canvas)
    if canvas.ndim != 2 or not np.iscomplexobj(canvas):
        raise ValueError(f"write_object_cxi: canvas must be a 2-D complex array; got {canvas.dtype} {canvas.shape}")
    dy, dx = (float(v) for v in pixel_size_m)
    if not all(math.isfinite(v) and v > 0 for v in (dy, dx)):
        raise ValueError(f"write_object_cxi: pixel_size_m must be two numbers > 0; got {pixel_size_m!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            f["cxi_version"] = CXI_VERSION
            f["number_of_entries"] = 1
            image = f.create_group(IMAGE)
            image["data"] = canvas.astype(np.complex64)
            image["data_type"] = "object"
            image["data_space"] = "real"
            image["is_fft_shifted"] = 0
            image["x_pixel_size"], image["y_pixel_size"] = dx, dy
            image["image_size"] = np.array([canvas.shape[1] * dx, canvas.shape[0] * dy])
            if origin_translation_m is not None:
                image["origin_translation"] = np.asarray(origin_translation_m, np.float64).reshape(3)
            if basis_vectors_m is not None:
                image["basis_vectors"] = np.asarray(basis_vectors_m, np.float64).reshape(2, 3)
            if covered is not None:
                covered = np.asarray(covered, bool)
                if covered.shape != canvas.shape:
                    raise ValueError(f"write_object_cxi: covered must be {canvas.shape}; got {covered.shape}")
                image["mask"] = (~covered).astype(np.uint32)
            if probe is not None:
                image["probe"] = np.asarray(probe, np.complex64)
            if report is not None:
                note = image.create_group("process_1/note_1")
                note["description"] = "ptycho.data.cxi conversion report of the input (JSON)"
                note["data"] = json.dumps(report, sort_keys=True)
            f.create_group("entry_1/data_1")["data"] = h5py.SoftLink(f"/{IMAGE}/data")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_object_cxi(path: str | os.PathLike) -> CxiObject:
    """Read an object written by :func:`write_object_cxi` (or any CXI with a complex entry_1/image_1/data)."""
    h5py = import_h5py()
    source = str(path)
    check_file(Path(path), source)
    with h5py.File(path, "r") as f:
        key = f"{IMAGE}/data"
        if key not in f:
            raise CxiFormatError(source, key, "an image (H, W) complex", "no image")
        canvas = f[key][()]
        if canvas.ndim != 2:
            raise CxiFormatError(source, key, "an image (H, W)", f"shape {canvas.shape}")
        dx = read_scalar(f, f"{IMAGE}/x_pixel_size", source)
        dy = read_scalar(f, f"{IMAGE}/y_pixel_size", source)
        optional = {name: f[f"{IMAGE}/{name}"][()] if f"{IMAGE}/{name}" in f else None
                    for name in ("origin_translation", "basis_vectors", "mask", "probe", "process_1/note_1/data")}
    note = optional["process_1/note_1/data"]
    report = json.loads(note.decode() if isinstance(note, bytes) else note) if note is not None else None
    mask = optional["mask"]
    return CxiObject(canvas=canvas.astype(np.complex64), pixel_size_m=(dy, dx),
                     origin_translation_m=optional["origin_translation"], basis_vectors_m=optional["basis_vectors"],
                     covered=None if mask is None else mask == 0, probe=optional["probe"], report=report)


def export_stitched(path: str | os.PathLike, canvas: np.ndarray, covered: np.ndarray | None,
                    centre_xy, report: ConversionReport, probe: np.ndarray | None = None) -> Path:
    """Write a stitched canvas (``stitching.Stitched``: canvas pixel (M/2, M/2) is object pixel
    ``centre_xy`` [x, y]) of data converted with ``report`` as CXI, with its pixel size and origin."""
    canvas = np.asarray(canvas)
    M = canvas.shape[0]
    row0, col0 = float(centre_xy[1]) - M // 2, float(centre_xy[0]) - M // 2  # object pixel of canvas [0, 0]
    origin = report.translation_at(row0, col0)
    basis = np.stack([report.translation_at(row0 + 1, col0) - origin, report.translation_at(row0, col0 + 1) - origin])
    return write_object_cxi(path, canvas, (report.object_pixel_m, report.object_pixel_m), origin_translation_m=origin,
                            basis_vectors_m=basis, covered=covered, probe=probe, report=report.as_dict())

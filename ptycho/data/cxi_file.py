"""Reading a CXI file (HDF5, the coherent imaging standard written by cdtools, PtyPy, ptychodus...):
its HDF5 paths and each field read and checked, for the conversion in ``ptycho.data.cxi``.

What is read (the first path found wins; every error names the path):

    frames        entry_1/data_1/data, entry_1/instrument_1/detector_1/data   (n, H, W) counts
    translations  entry_1/sample_1/geometry_1/translation, entry_1/sample_1/geometry/translation,
                  entry_1/data_1/translation, entry_1/instrument_1/detector_1/translation
                  (n, 3) or (n, 2) metres, x, y[, z]: the SAMPLE's translation (CXI convention)
    wavelength    entry_1/instrument_1/source_1/wavelength (m), else .../source_1/energy (J)
    distance      entry_1/instrument_1/detector_1/distance (m), else from corner_position
    pixel         entry_1/instrument_1/detector_1/basis_vectors ((3, 2) as cdtools writes it, or
                  (2, 3)), else x_pixel_size / y_pixel_size (m) with cdtools' default basis
                  [[0, -y_pixel_size, 0], [-x_pixel_size, 0, 0]] (rows along -y, columns along -x)
    mask          entry_1/instrument_1/detector_1/mask (H, W); CXI convention: nonzero = bad pixel,
                  except the value 0x1000 ("signal above background"), which is good (as cdtools)
    probe         PROBE_PATHS (complex (S, S) on the object grid of the file's own geometry)

The readers take the open file ``f`` (h5py.File) and ``source``, the file's name for the messages;
every refusal is a :class:`CxiFormatError` naming the file and the HDF5 path.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ptycho.data.contract import DataContractError

DATA_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data")
TRANSLATION_PATHS = ("entry_1/sample_1/geometry_1/translation", "entry_1/sample_1/geometry/translation",
                     "entry_1/data_1/translation", "entry_1/instrument_1/detector_1/translation")
SOURCE = "entry_1/instrument_1/source_1"
DETECTOR = "entry_1/instrument_1/detector_1"
WAVELENGTH_PATH = f"{SOURCE}/wavelength"
ENERGY_PATH = f"{SOURCE}/energy"
DISTANCE_PATH = f"{DETECTOR}/distance"
CORNER_PATH = f"{DETECTOR}/corner_position"
BASIS_PATH = f"{DETECTOR}/basis_vectors"
X_PIXEL_PATH = f"{DETECTOR}/x_pixel_size"
Y_PIXEL_PATH = f"{DETECTOR}/y_pixel_size"
MASK_PATH = f"{DETECTOR}/mask"
PROBE_PATHS = (f"{SOURCE}/probe", f"{SOURCE}/illumination", f"{SOURCE}/data_illumination",
               f"{DETECTOR}/probe", "entry_1/probe", "entry_1/image_1/probe")
HC_JOULE_METRE = 1.98644586e-25  # Planck constant times the speed of light
ENERGY_RANGE_J = (1.6e-20, 1.6e-11)  # 0.1 eV .. 100 MeV: a number outside is in other units (eV, keV)
WAVELENGTH_RANGE_M = (1e-13, 1e-4)
MASK_SIGNAL_BIT = 0x1000  # CXI: "pixel has signal above background", a good pixel
PIXEL_TOLERANCE = 1e-3  # relative: square and orthogonal detector pixels


class CxiFormatError(DataContractError):
    """A CXI file cannot be served; ``key`` is the HDF5 path (or None for the file itself)."""


def frame_count(path: str | os.PathLike) -> int:
    """Frames in a CXI file, from its data's shape alone (no array read). Raises CxiFormatError."""
    h5py = import_h5py()
    source = str(path)
    check_file(Path(path), source)
    try:
        with h5py.File(path, "r") as f:
            data_path = first_path(f, DATA_PATHS, source, "diffraction frames (n, H, W) counts")
            check_dataset(f[data_path], data_path, source)
            shape = f[data_path].shape
    except OSError as exc:
        raise CxiFormatError(source, None, "an HDF5 (CXI) file", f"unreadable ({exc})") from exc
    if len(shape) != 3:
        raise CxiFormatError(source, data_path, "a 3-D stack of frames (n, H, W)", f"shape {shape}")
    return int(shape[0])


def read_center(f, source, given, basis, H, W):
    """((row, col) of the zero frequency on the detector, where it came from): ``given`` (row, col) when
    not None, else the beam position corner_position gives, else the array centre."""
    if given is not None:
        return (int(round(given[0])), int(round(given[1]))), "given"
    if CORNER_PATH in f:
        corner = read_real(f, CORNER_PATH, source).reshape(-1)
        if corner.shape != (3,):
            raise CxiFormatError(source, CORNER_PATH, "a corner position (x, y, z) m", f"shape {corner.shape}")
        check_finite(corner, CORNER_PATH, source)
        # the beam (x = y = 0) on the detector: corner + i * b_i + j * b_j has zero x, y
        ij = np.linalg.lstsq(basis[:2], -corner[:2], rcond=None)[0]
        return (int(round(ij[0])), int(round(ij[1]))), f"the beam position from {CORNER_PATH}"
    return (H // 2, W // 2), "the array centre (H // 2, W // 2), as cdtools assumes"


def read_wavelength(f, source):
    """(wavelength m, the path it came from): the wavelength, else from the photon energy (J)."""
    if WAVELENGTH_PATH in f:
        wavelength = read_scalar(f, WAVELENGTH_PATH, source)
        if not WAVELENGTH_RANGE_M[0] <= wavelength <= WAVELENGTH_RANGE_M[1]:
            raise CxiFormatError(source, WAVELENGTH_PATH, f"a wavelength in metres within {WAVELENGTH_RANGE_M}",
                                 f"{wavelength:.6g}")
        if ENERGY_PATH in f:
            energy = read_scalar(f, ENERGY_PATH, source)
            if energy > 0 and abs(HC_JOULE_METRE / energy - wavelength) > 1e-3 * wavelength:
                raise CxiFormatError(source, ENERGY_PATH, f"an energy (J) agreeing with {WAVELENGTH_PATH} "
                                     f"({HC_JOULE_METRE / wavelength:.6g} J)", f"{energy:.6g} (wavelength "
                                     f"{HC_JOULE_METRE / energy:.6g} m)")
        return wavelength, WAVELENGTH_PATH
    if ENERGY_PATH in f:
        energy = read_scalar(f, ENERGY_PATH, source)
        if not ENERGY_RANGE_J[0] <= energy <= ENERGY_RANGE_J[1]:
            hint = " (it looks like eV or keV: CXI stores joules)" if energy > ENERGY_RANGE_J[1] else ""
            raise CxiFormatError(source, ENERGY_PATH, f"a photon energy in joules within {ENERGY_RANGE_J}",
                                 f"{energy:.6g}{hint}")
        return HC_JOULE_METRE / energy, f"{ENERGY_PATH} (J)"
    raise CxiFormatError(source, ENERGY_PATH, f"the source's energy (J) or {WAVELENGTH_PATH} (m)", "neither")


def read_detector_basis(f, source):
    """(3, 2) metres: detector row step (column 0) and column step (column 1), square and untilted."""
    if BASIS_PATH in f:
        basis = read_real(f, BASIS_PATH, source)
        if basis.ndim == 3:  # one basis per frame: all must agree
            if not np.allclose(basis, basis[:1]):
                raise CxiFormatError(source, BASIS_PATH, "one detector basis for every frame", "bases that differ")
            basis = basis[0]
        if basis.shape == (2, 3):
            basis = basis.T
        if basis.shape != (3, 2):
            raise CxiFormatError(source, BASIS_PATH, "basis vectors (3, 2) or (2, 3) m", f"shape {basis.shape}")
        check_finite(basis, BASIS_PATH, source)
        key = BASIS_PATH
    else:
        sizes = {p: read_scalar(f, p, source) for p in (X_PIXEL_PATH, Y_PIXEL_PATH) if p in f}
        if not sizes:
            raise CxiFormatError(source, X_PIXEL_PATH, f"the detector pixel size ({X_PIXEL_PATH}, {Y_PIXEL_PATH} "
                                 f"or {BASIS_PATH})", "none")
        px = sizes.get(X_PIXEL_PATH, sizes.get(Y_PIXEL_PATH))
        py = sizes.get(Y_PIXEL_PATH, px)
        basis = np.array([[0.0, -px], [-py, 0.0], [0.0, 0.0]])
        key = X_PIXEL_PATH
    row, col = np.linalg.norm(basis[:, 0]), np.linalg.norm(basis[:, 1])
    if not (row > 0 and col > 0):
        raise CxiFormatError(source, key, "detector pixels of positive size", f"sizes {row:.6g}, {col:.6g} m")
    if abs(row - col) > PIXEL_TOLERANCE * col:
        raise CxiFormatError(source, key, "square detector pixels (the model's object pixels are square)",
                             f"{col:.6g} m (x) by {row:.6g} m (y)")
    if abs(basis[:, 0] @ basis[:, 1]) > PIXEL_TOLERANCE * row * col or \
            max(abs(basis[2, 0]) / row, abs(basis[2, 1]) / col) > PIXEL_TOLERANCE:
        raise CxiFormatError(source, key, "an orthogonal detector basis normal to the beam (z)",
                             f"basis {basis.T.tolist()}")
    return basis


def read_distance(f, source, basis):
    """Sample-detector distance (m): the distance, else corner_position's along the detector's normal."""
    if DISTANCE_PATH in f:
        distance = read_scalar(f, DISTANCE_PATH, source)
    elif CORNER_PATH in f:
        corner = read_real(f, CORNER_PATH, source).reshape(-1)
        normal = np.cross(basis[:, 0], basis[:, 1])
        distance = float(abs(corner @ (normal / np.linalg.norm(normal)))) if corner.shape == (3,) else float("nan")
    else:
        raise CxiFormatError(source, DISTANCE_PATH, f"the sample-detector distance (m) (or {CORNER_PATH}): "
                             "the far-field geometry needs it", "neither")
    if not (math.isfinite(distance) and distance > 0):
        raise CxiFormatError(source, DISTANCE_PATH, "a sample-detector distance > 0 m", f"{distance!r}")
    return distance


def read_mask(f, source, H, W, r0, c0, side):
    """(good pixels of the window (side, side) bool, mask path or None)."""
    if MASK_PATH not in f:
        return np.ones((side, side), bool), None
    mask = f[MASK_PATH]
    check_dataset(mask, MASK_PATH, source)
    if mask.shape != (H, W):
        raise CxiFormatError(source, MASK_PATH, f"a detector mask of the frame's shape ({H}, {W})", f"shape {mask.shape}")
    values = np.asarray(mask[r0:r0 + side, c0:c0 + side])
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise CxiFormatError(source, MASK_PATH, "an integer mask (nonzero = bad pixel)", f"dtype {values.dtype}")
    values = values.astype(np.int64)
    return (values == 0) | (values == MASK_SIGNAL_BIT), MASK_PATH


def read_probe(f, source, given, fallback, N, b, counts):
    """(probe (N, N) complex64 on the converted grid, where it came from, share of its energy kept):
    ``given`` when not None, else the file's resampled from N * b pixels to N at binning b, else
    :func:`estimate_probe` from ``counts`` when ``fallback`` is 'mean_pattern'."""
    if given is not None:
        given = np.asarray(given)
        if given.shape != (N, N) or not np.iscomplexobj(given):
            raise CxiFormatError(source, "probe (given)", f"a complex ({N}, {N}) probe on the converted grid",
                                 f"{given.dtype} {given.shape}")
        _check_probe_values(given, "probe (given)", source)
        return given.astype(np.complex64), "given by the caller", 1.0
    found = next((p for p in PROBE_PATHS if p in f and is_dataset(f[p])), None)
    if found is None:
        if fallback == "mean_pattern":
            return estimate_probe(counts), "estimated from the mean pattern (probe_fallback=mean_pattern)", 1.0
        raise CxiFormatError(source, PROBE_PATHS[0],
                             f"a probe in the file (one of {', '.join(PROBE_PATHS)}), a probe file given "
                             "(dataset.cxi.probe_file), or probe_fallback=mean_pattern",
                             "no probe")
    probe = f[found][()]
    if probe.ndim == 3 and probe.shape[0] == 1:
        probe = probe[0]
    if probe.ndim != 2 or probe.shape[0] != probe.shape[1]:
        raise CxiFormatError(source, found, "a square 2-D probe (S, S) (one mode)", f"shape {probe.shape}")
    if not np.iscomplexobj(probe):
        raise CxiFormatError(source, found, "a complex probe", f"real dtype {probe.dtype}")
    _check_probe_values(probe, found, source)
    S = probe.shape[0]
    if S < N * b:
        raise CxiFormatError(source, found, f"a probe of side >= N * binning = {N * b} (the file's own geometry)",
                             f"side {S}")
    probe = probe.astype(np.complex128)
    energy = float(np.sum(np.abs(probe) ** 2))
    if S > N * b:  # the far field cropped to N*b detector pixels: a coarser object grid, the same window
        spectrum = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(probe)))
        start = S // 2 - (N * b) // 2
        spectrum = spectrum[start:start + N * b, start:start + N * b] * (N * b / S)
        probe = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(spectrum)))
    if b > 1:  # binning: the object window shrinks to N pixels of the same size
        start = (N * b) // 2 - N // 2
        probe = probe[start:start + N, start:start + N]
    kept = float(np.sum(np.abs(probe) ** 2)) / energy
    return probe.astype(np.complex64), f"{found} (side {S} -> {N})", kept


def _check_probe_values(probe, key, source):
    check_finite(probe, key, source)
    if not np.any(probe):
        raise CxiFormatError(source, key, "a probe that is not all zero", "all zero")


def estimate_probe(counts: np.ndarray) -> np.ndarray:
    """A probe estimated from the data (``probe_fallback='mean_pattern'``), the usual initial guess of
    iterative codes (cdtools' SHARP-style probe): the inverse FFT of the square root of the mean
    pattern, zero phase in the far field; ``sum |P|**2`` = the mean photons per frame (an object of
    unit transmission). It carries no phase curvature or structure of the real beam: a starting
    point, not a measurement."""
    amplitude = np.sqrt(np.mean(counts, axis=0))
    N = amplitude.shape[-1]
    return (np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(amplitude))) * N).astype(np.complex64)


def first_path(f, paths, source, what):
    """The first of ``paths`` in the file; ``what`` names the field in the error when none is."""
    for path in paths:
        if path in f:
            return path
    raise CxiFormatError(source, paths[0], f"{what} at one of {', '.join(paths)}", "none of them")


def check_file(path: Path, source: str) -> None:
    """CxiFormatError unless ``path`` is an existing file."""
    if not path.is_file():
        raise CxiFormatError(source, None, "a CXI (HDF5) file", "no such file" if not path.exists() else "not a file")


def is_dataset(node) -> bool:
    return hasattr(node, "shape") and hasattr(node, "dtype")


def check_dataset(node, key, source):
    """CxiFormatError when the node at ``key`` is a group, not a dataset."""
    if not is_dataset(node):
        raise CxiFormatError(source, key, "a dataset", "a group")


def read_real(f, key, source) -> np.ndarray:
    """The dataset at ``key`` as float64; its dtype must be real (integer or float)."""
    node = f[key]
    check_dataset(node, key, source)
    value = np.asarray(node[()])
    if not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)):
        raise CxiFormatError(source, key, "real numbers", f"dtype {value.dtype}")
    return value.astype(np.float64)


def read_scalar(f, key, source) -> float:
    """The dataset at ``key``: one finite number > 0."""
    value = read_real(f, key, source)
    if value.size != 1:
        raise CxiFormatError(source, key, "a scalar", f"shape {value.shape}")
    value = float(value.reshape(()))
    if not (math.isfinite(value) and value > 0):
        raise CxiFormatError(source, key, "a finite number > 0", f"{value!r}")
    return value


def check_finite(values, key, source):
    """CxiFormatError naming ``key`` when ``values`` hold a NaN or an Inf."""
    finite = np.isfinite(values)
    if not finite.all():
        raise CxiFormatError(source, key, "finite values", f"{int(values.size - finite.sum())} NaN or Inf value(s)")


def import_h5py():
    """The h5py module."""
    import h5py  # imported when used: ptycho stays importable without it

    return h5py

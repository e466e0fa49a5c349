"""CXI in, CXI out: read a far-field ptychography scan from a CXI file (HDF5, the coherent
imaging standard written by cdtools, PtyPy, ptychodus...) into the project's PtychoData, and
write a stitched object back as CXI. docs/data-cxi.md is the user's guide.

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

The conversion (:func:`convert_cxi`, settings :class:`CxiConversion`, outcome
:class:`ConversionReport`):

1. window: a square of N * binning detector pixels around the zero frequency (``center``, else the
   beam position the detector's corner_position gives, else the array centre (H // 2, W // 2) as
   cdtools assumes), read from the file as a slice (only the window is loaded);
2. binning: b x b blocks summed; a binned pixel is bad when any of its pixels is (as cdtools);
3. mask fill: bad pixels get the count of their centrosymmetric partner about the zero frequency
   when that one is good (``mask_fill='partner'``), else 0 (``'zero'`` fills every bad pixel with 0);
4. amplitudes = sqrt(counts) (float32, zero frequency at (N/2, N/2) as ``ptycho.physics``);
5. geometry: object pixel = wavelength * distance / (N * binned detector pixel); positions: cdtools'
   mapping (probe translation = -CXI translation, pixel = pinv(object basis) @ probe translation),
   rows -> ``ycoords``, columns -> ``xcoords``, shifted so that ``origin_ij`` (the train file's, for
   a test file) is object pixel (N/2, N/2);
6. probe: the file's (resampled to the new grid by cropping its far field and its real-space
   window, units kept), or ``probe`` given by the caller on the final grid; none: an error, unless
   ``probe_fallback='mean_pattern'`` estimates one (module docstring of :func:`estimate_probe`).

Refused (:class:`CxiFormatError`, a ``data.DataContractError``, so a ValueError naming the file
and the HDF5 path): a missing file or key, wrong shapes or dtypes, translations not one per
frame, non-finite or negative counts, an all-zero window, a mask that hides everything or more
than ``max_masked_fraction``, a non-physical wavelength, energy or distance, non-square or tilted
detector pixels, a window that does not fit the frame, a probe that is missing, real, zero or too
small, a read larger than ``max_bytes``; :class:`NearFieldError` when the geometry is not far field
(see :func:`fresnel_check`).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ptycho.data.contract import SUPPORTED_N, DataContractError, PtychoData

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
IMAGE = "entry_1/image_1"
HC_JOULE_METRE = 1.98644586e-25  # Planck constant times the speed of light
ENERGY_RANGE_J = (1.6e-20, 1.6e-11)  # 0.1 eV .. 100 MeV: a number outside is in other units (eV, keV)
WAVELENGTH_RANGE_M = (1e-13, 1e-4)
MASK_SIGNAL_BIT = 0x1000  # CXI: "pixel has signal above background", a good pixel
PIXEL_TOLERANCE = 1e-3  # relative: square and orthogonal detector pixels
DEFAULT_MAX_MASKED_FRACTION = 0.5
MASK_FILLS = ("partner", "zero")
PROBE_FALLBACKS = ("mean_pattern",)
CXI_VERSION = 160


class CxiFormatError(DataContractError):
    """A CXI file cannot be served; ``key`` is the HDF5 path (or None for the file itself)."""


class NearFieldError(CxiFormatError):
    """The geometry is not far field for the sampling the conversion would use (:func:`fresnel_check`)."""


@dataclass(frozen=True)
class CxiConversion:
    """Settings of :func:`convert_cxi`; each field is checked (ValueError names it).

    N: frame side after conversion, one of data.SUPPORTED_N; None: the largest that fits around the
    zero frequency. binning: b, detector pixels summed per side (1: none). center: (row, col) of the
    zero frequency on the detector, None: from corner_position, else (H // 2, W // 2). mask_fill:
    one of MASK_FILLS. max_masked_fraction: refuse a window with more bad pixels than this.
    clip_negative: set negative counts to 0 (and count them in the report) instead of refusing.
    probe_fallback: None (no probe in the file and none given is an error) or 'mean_pattern'.
    """

    N: int | None = None
    binning: int = 1
    center: tuple[float, float] | None = None
    mask_fill: str = "partner"
    max_masked_fraction: float = DEFAULT_MAX_MASKED_FRACTION
    clip_negative: bool = False
    probe_fallback: str | None = None

    def __post_init__(self) -> None:
        _require(self.N is None or self.N in SUPPORTED_N, "N", f"None or one of {SUPPORTED_N}", self.N)
        _require(_is_int(self.binning) and self.binning >= 1, "binning", "an integer >= 1", self.binning)
        _require(self.center is None or (len(self.center) == 2 and all(_is_number(c) for c in self.center)),
                 "center", "None or (row, col) numbers", self.center)
        _require(self.mask_fill in MASK_FILLS, "mask_fill", f"one of {MASK_FILLS}", self.mask_fill)
        _require(_is_number(self.max_masked_fraction) and 0 <= self.max_masked_fraction < 1,
                 "max_masked_fraction", "a number in [0, 1)", self.max_masked_fraction)
        _require(self.probe_fallback is None or self.probe_fallback in PROBE_FALLBACKS, "probe_fallback",
                 f"None or one of {PROBE_FALLBACKS}", self.probe_fallback)


@dataclass
class ConversionReport:
    """What :func:`convert_cxi` did; :meth:`as_dict` for JSON, :meth:`text` for people.

    Lengths in metres; ``object_basis_m`` (3, 2): the probe-frame displacement of one object row
    (column 0) and one object column (column 1); ``origin_ij``: the object pixel (row, col) in
    cdtools' frame that became (ycoords, xcoords) = (N/2, N/2).
    """

    source: str
    n_frames: int
    frame_shape: tuple[int, int]
    data_path: str
    translation_path: str
    N: int
    binning: int
    center_rc: tuple[int, int]
    center_from: str
    window_rows: tuple[int, int]
    window_cols: tuple[int, int]
    zero_frequency_offset_px: float
    wavelength_m: float
    wavelength_from: str
    distance_m: float
    detector_pixel_m: float
    binned_pixel_m: float
    object_pixel_m: float
    object_basis_m: list[list[float]]
    origin_ij: tuple[float, float]
    mask_path: str | None
    masked_fraction: float
    filled_from_partner_fraction: float
    filled_zero_fraction: float
    mask_fill: str
    negative_clipped: int
    counts_per_frame_mean: float
    counts_per_frame_min: float
    counts_per_frame_max: float
    probe_from: str
    probe_energy_kept: float
    probe_diameter_px: float
    fresnel_number: float
    position_span_px: tuple[float, float]
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def translation_at(self, row: float, col: float) -> np.ndarray:
        """The CXI sample translation (x, y, z) m that puts the probe centre on object pixel (row, col)
        (our ycoords, xcoords frame)."""
        N = self.N
        ij = np.array([row - N / 2 + self.origin_ij[0], col - N / 2 + self.origin_ij[1]])
        return -(np.asarray(self.object_basis_m) @ ij)

    def text(self) -> str:
        rows, cols = self.window_rows, self.window_cols
        lines = [
            f"CXI conversion of {self.source}: {self.n_frames} frames of {self.frame_shape[0]}x{self.frame_shape[1]} "
            f"({self.data_path}), translations {self.translation_path}",
            f"  window     rows {rows[0]}:{rows[1]}, cols {cols[0]}:{cols[1]} around the zero frequency "
            f"{self.center_rc} ({self.center_from}); binned {self.binning}x{self.binning} -> N = {self.N}"
            + (f" (zero frequency {self.zero_frequency_offset_px:.3g} px off the centre pixel)"
               if self.zero_frequency_offset_px else ""),
            f"  geometry   wavelength {self.wavelength_m:.6g} m ({self.wavelength_from}), distance "
            f"{self.distance_m:.6g} m, detector pixel {self.detector_pixel_m:.6g} m (binned {self.binned_pixel_m:.6g} m)"
            f" -> object pixel {self.object_pixel_m:.6g} m",
            f"  mask       {self.mask_path or 'none in the file'}: {self.masked_fraction:.4%} of the window's pixels bad; "
            f"fill '{self.mask_fill}': {self.filled_from_partner_fraction:.4%} from the centrosymmetric partner, "
            f"{self.filled_zero_fraction:.4%} set to 0",
            f"  counts     amplitudes = sqrt(counts); photons per frame mean {self.counts_per_frame_mean:.6g} "
            f"(min {self.counts_per_frame_min:.6g}, max {self.counts_per_frame_max:.6g})"
            + (f"; {self.negative_clipped} negative counts clipped to 0" if self.negative_clipped else ""),
            f"  probe      {self.probe_from} ({self.probe_energy_kept:.4%} of its energy kept), diameter "
            f"{self.probe_diameter_px:.3g} px; Fresnel number a^2/(lambda z) {self.fresnel_number:.3g}",
            f"  positions  object pixels, span {self.position_span_px[1]:.1f} x {self.position_span_px[0]:.1f} px "
            f"(x by y); origin_ij {tuple(round(v, 3) for v in self.origin_ij)}",
        ]
        lines += [f"  note       {note}" for note in self.notes]
        return "\n".join(lines)


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


# ---------------------------------------------------------------------------------------- reading

def convert_cxi(path: str | os.PathLike, spec: CxiConversion | None = None, *,
                probe: np.ndarray | None = None, origin_ij: tuple[float, float] | None = None,
                max_bytes: int | None = None) -> tuple[PtychoData, ConversionReport]:
    """Read the scan in the CXI file ``path`` and convert it (module docstring).

    probe: (N, N) complex on the converted grid, used instead of the file's. origin_ij: the
    (row, col) that becomes object pixel (N/2, N/2), e.g. the train file's report's, so that a
    test file shares its object frame; None: the scan's top-left position. max_bytes: refuse
    before reading when the window's frames would take more memory than this.
    Raises CxiFormatError / NearFieldError.
    """
    spec = CxiConversion() if spec is None else spec
    h5py = _h5py()
    source = str(path)
    _check_file(Path(path), source)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CxiFormatError(source, None, "an HDF5 (CXI) file", f"unreadable ({exc})") from exc
    with handle:
        return _convert(handle, source, spec, probe, origin_ij, max_bytes)


def _convert(f, source, spec, given_probe, origin_ij, max_bytes):
    notes = []
    data_path = _first(f, DATA_PATHS, source, "diffraction frames (n, H, W) counts")
    frames = f[data_path]
    _check_dataset(frames, data_path, source)
    if frames.ndim != 3:
        raise CxiFormatError(source, data_path, "a 3-D stack of frames (n, H, W)", f"shape {frames.shape}")
    if not (np.issubdtype(frames.dtype, np.integer) or np.issubdtype(frames.dtype, np.floating)):
        raise CxiFormatError(source, data_path, "real counts (integer or float)", f"dtype {frames.dtype}")
    n, H, W = frames.shape
    if n == 0:
        raise CxiFormatError(source, data_path, "at least one frame", "zero frames")
    translation_path = _first(f, TRANSLATION_PATHS, source, "scan translations (n, 3) m")
    translations = _read_real(f, translation_path, source)
    if translations.ndim != 2 or translations.shape[1] not in (2, 3):
        raise CxiFormatError(source, translation_path, "translations (n, 3) or (n, 2): x, y[, z] in metres",
                             f"shape {translations.shape}")
    if translations.shape[0] != n:
        raise CxiFormatError(source, translation_path, f"one translation per frame ({n} frames in {data_path})",
                             f"{translations.shape[0]} translations")
    _check_finite(translations, translation_path, source)
    if translations.shape[1] == 2:
        translations = np.concatenate([translations, np.zeros((n, 1))], axis=1)

    wavelength, wavelength_from = _wavelength(f, source)
    basis = _detector_basis(f, source)
    pixel = float(np.linalg.norm(basis[:, 1]))
    distance = _distance(f, source, basis)

    center, center_from = _center(f, source, spec, basis, H, W)
    N, b = _frame_size(spec, center, H, W, source, data_path)
    r0 = center[0] - (N // 2) * b - (b - 1) // 2
    c0 = center[1] - (N // 2) * b - (b - 1) // 2
    side = N * b
    if r0 < 0 or c0 < 0 or r0 + side > H or c0 + side > W:
        raise CxiFormatError(source, data_path, f"a {side}x{side} window (N = {N}, binning {b}) around the zero "
                             f"frequency {center} inside the {H}x{W} frame",
                             f"rows {r0}:{r0 + side}, cols {c0}:{c0 + side}")
    need = n * side * side * 8 * 3  # the read as float64, the binned copy and the amplitudes
    if max_bytes is not None and need > max_bytes:
        raise CxiFormatError(source, data_path, f"a read that fits the memory budget ({max_bytes / 1e9:.3g} GB)",
                             f"{n} frames of {side}x{side} ~ {need / 1e9:.3g} GB")

    counts = np.asarray(frames[:, r0:r0 + side, c0:c0 + side], dtype=np.float64)
    bad = ~np.isfinite(counts)
    if bad.any():
        k = int(np.flatnonzero(bad.reshape(n, -1).any(axis=1))[0])
        raise CxiFormatError(source, data_path, "finite counts", f"{int(bad.sum())} NaN or Inf value(s), first in frame {k}")
    negative = int(np.count_nonzero(counts < 0))
    if negative:
        if not spec.clip_negative:
            raise CxiFormatError(source, data_path, "non-negative photon counts (clip_negative to clip them)",
                                 f"{negative} negative value(s), minimum {float(counts.min()):.6g}")
        np.maximum(counts, 0, out=counts)
        notes.append(f"{negative} negative counts clipped to 0")

    good, mask_path = _mask(f, source, H, W, r0, c0, side)
    if b > 1:
        counts = counts.reshape(n, N, b, N, b).sum(axis=(2, 4))
        good = good.reshape(N, b, N, b).all(axis=(1, 3))
    masked = float(1 - good.mean())
    if not good.any():
        raise CxiFormatError(source, mask_path, "a mask that leaves some pixels of the window good",
                             f"every pixel of the {N}x{N} window masked")
    if masked > spec.max_masked_fraction:
        raise CxiFormatError(source, mask_path, f"at most {spec.max_masked_fraction:.0%} of the window masked "
                             "(max_masked_fraction)", f"{masked:.2%} masked")
    counts, from_partner, zero = _fill(counts, good, spec.mask_fill)
    counts[:, ~good & ~from_partner] = 0.0
    per_frame = counts.sum(axis=(1, 2))
    if not np.any(per_frame > 0):
        raise CxiFormatError(source, data_path, "photon counts that are not all zero", f"all {n} frames zero in the window")
    amplitudes = np.sqrt(counts).astype(np.float32)

    binned_basis = basis * b
    obj_basis = np.linalg.pinv(binned_basis * N).T * wavelength * distance  # (3, 2), cdtools' exit_wave_geometry
    dx = float(np.linalg.norm(obj_basis[:, 1]))
    ij = (np.linalg.pinv(obj_basis) @ (-translations.T)).T  # (n, 2) row, col
    if origin_ij is None:
        origin_ij = (float(ij[:, 0].min()), float(ij[:, 1].min()))
    ycoords = ij[:, 0] - origin_ij[0] + N / 2
    xcoords = ij[:, 1] - origin_ij[1] + N / 2

    probe, probe_from, kept = _probe(f, source, given_probe, spec, N, b, counts, pixel * b)
    diameter = probe_diameter_px(probe)
    fresnel = fresnel_check(source, diameter * dx, wavelength, distance, N * b * pixel, diameter)
    if b % 2 == 0:
        notes.append(f"even binning: the zero frequency lies {1 / (2 * b):.3g} binned px above-left of pixel (N/2, N/2)")
    data = PtychoData(diffraction=amplitudes, probe=probe, xcoords=xcoords, ycoords=ycoords,
                      scan_index=np.arange(n, dtype=np.int64))
    report = ConversionReport(
        source=source, n_frames=n, frame_shape=(H, W), data_path=data_path, translation_path=translation_path,
        N=N, binning=b, center_rc=center, center_from=center_from, window_rows=(r0, r0 + side),
        window_cols=(c0, c0 + side), zero_frequency_offset_px=(1 / (2 * b) if b % 2 == 0 else 0.0),
        wavelength_m=wavelength, wavelength_from=wavelength_from, distance_m=distance, detector_pixel_m=pixel,
        binned_pixel_m=pixel * b, object_pixel_m=dx, object_basis_m=obj_basis.tolist(),
        origin_ij=(float(origin_ij[0]), float(origin_ij[1])), mask_path=mask_path, masked_fraction=masked,
        filled_from_partner_fraction=float(from_partner.mean()), filled_zero_fraction=float(zero.mean()),
        mask_fill=spec.mask_fill, negative_clipped=negative, counts_per_frame_mean=float(per_frame.mean()),
        counts_per_frame_min=float(per_frame.min()), counts_per_frame_max=float(per_frame.max()),
        probe_from=probe_from, probe_energy_kept=kept, probe_diameter_px=diameter, fresnel_number=fresnel,
        position_span_px=(float(np.ptp(ycoords)), float(np.ptp(xcoords))), notes=notes,
    )
    return data, report


def frame_count(path: str | os.PathLike) -> int:
    """Frames in a CXI file, from its data's shape alone (no array read). Raises CxiFormatError."""
    h5py = _h5py()
    source = str(path)
    _check_file(Path(path), source)
    try:
        with h5py.File(path, "r") as f:
            data_path = _first(f, DATA_PATHS, source, "diffraction frames (n, H, W) counts")
            _check_dataset(f[data_path], data_path, source)
            shape = f[data_path].shape
    except OSError as exc:
        raise CxiFormatError(source, None, "an HDF5 (CXI) file", f"unreadable ({exc})") from exc
    if len(shape) != 3:
        raise CxiFormatError(source, data_path, "a 3-D stack of frames (n, H, W)", f"shape {shape}")
    return int(shape[0])


def fresnel_check(source: str, beam_m: float, wavelength: float, distance: float, detector_width_m: float,
                  beam_px: float) -> float:
    """The illumination's Fresnel number ``F = a**2 / (wavelength * distance)``; NearFieldError when
    the far-field model cannot hold it.

    The far-field (one FFT) model holds with the quadratic phase of Fresnel propagation absorbed
    into the probe as long as the object grid samples that phase at the beam's edge, i.e.
    ``a <= detector width`` (N * binned pixel), equivalently ``F <= a / object pixel`` (the beam's
    width in object pixels). A wider beam is a projection (near-field, holographic) geometry,
    which this model cannot serve.
    """
    fresnel = beam_m**2 / (wavelength * distance)
    if beam_m > detector_width_m:
        raise NearFieldError(
            source, DISTANCE_PATH,
            f"far field: Fresnel number a^2/(lambda z) at most the beam's width in object pixels ({beam_px:.3g}), "
            f"i.e. a beam no wider than the detector window ({detector_width_m:.3g} m)",
            f"F = {fresnel:.3g} (beam a = {beam_m:.3g} m, lambda = {wavelength:.3g} m, z = {distance:.3g} m): "
            "a near-field geometry")
    return float(fresnel)


def probe_diameter_px(probe: np.ndarray) -> float:
    """Disk-equivalent diameter (px) of the probe's intensity: 2 * sqrt(2) * its RMS radius about its centroid."""
    intensity = np.abs(np.asarray(probe, np.complex128)) ** 2
    total = intensity.sum()
    rows, cols = np.indices(intensity.shape)
    r_mean, c_mean = (intensity * rows).sum() / total, (intensity * cols).sum() / total
    rms = math.sqrt(float((intensity * ((rows - r_mean) ** 2 + (cols - c_mean) ** 2)).sum() / total))
    return 2 * math.sqrt(2) * rms


def estimate_probe(counts: np.ndarray) -> np.ndarray:
    """A probe estimated from the data (``probe_fallback='mean_pattern'``), the usual initial guess of
    iterative codes (cdtools' SHARP-style probe): the inverse FFT of the square root of the mean
    pattern, zero phase in the far field; ``sum |P|**2`` = the mean photons per frame (an object of
    unit transmission). It carries no phase curvature or structure of the real beam: a starting
    point, not a measurement."""
    amplitude = np.sqrt(np.mean(counts, axis=0))
    N = amplitude.shape[-1]
    return (np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(amplitude))) * N).astype(np.complex64)


def _probe(f, source, given, spec, N, b, counts, binned_pixel):
    if given is not None:
        given = np.asarray(given)
        if given.shape != (N, N) or not np.iscomplexobj(given):
            raise CxiFormatError(source, "probe (given)", f"a complex ({N}, {N}) probe on the converted grid",
                                 f"{given.dtype} {given.shape}")
        _check_probe_values(given, "probe (given)", source)
        return given.astype(np.complex64), "given by the caller", 1.0
    found = next((p for p in PROBE_PATHS if p in f and _is_dataset(f[p])), None)
    if found is None:
        if spec.probe_fallback == "mean_pattern":
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
    _check_finite(probe, key, source)
    if not np.any(probe):
        raise CxiFormatError(source, key, "a probe that is not all zero", "all zero")


def _fill(counts, good, how):
    """(filled counts, bool (N, N) filled from the partner, bool (N, N) set to 0)."""
    N = good.shape[0]
    bad = ~good
    from_partner = np.zeros_like(good)
    if how == "partner":
        # partner of pixel k about the zero frequency at N/2 is N - k; pixel 0 has none (N is outside)
        index = (N - np.arange(N)) % N
        partner_good = good[np.ix_(index, index)].copy()
        partner_good[0, :] = partner_good[:, 0] = False
        from_partner = bad & partner_good
        if from_partner.any():
            mirrored = counts[:, index][:, :, index]
            counts = np.where(from_partner[None], mirrored, counts)
    zero = bad & ~from_partner
    return counts, from_partner, zero


def _mask(f, source, H, W, r0, c0, side):
    """(good pixels of the window (side, side) bool, mask path or None)."""
    if MASK_PATH not in f:
        return np.ones((side, side), bool), None
    mask = f[MASK_PATH]
    _check_dataset(mask, MASK_PATH, source)
    if mask.shape != (H, W):
        raise CxiFormatError(source, MASK_PATH, f"a detector mask of the frame's shape ({H}, {W})", f"shape {mask.shape}")
    values = np.asarray(mask[r0:r0 + side, c0:c0 + side])
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype == bool):
        raise CxiFormatError(source, MASK_PATH, "an integer mask (nonzero = bad pixel)", f"dtype {values.dtype}")
    values = values.astype(np.int64)
    return (values == 0) | (values == MASK_SIGNAL_BIT), MASK_PATH


def _frame_size(spec, center, H, W, source, data_path):
    b = spec.binning
    if spec.N is not None:
        return spec.N, b
    fits = [N for N in SUPPORTED_N
            if center[0] - (N // 2) * b - (b - 1) // 2 >= 0 and center[1] - (N // 2) * b - (b - 1) // 2 >= 0
            and center[0] - (N // 2) * b - (b - 1) // 2 + N * b <= H
            and center[1] - (N // 2) * b - (b - 1) // 2 + N * b <= W]
    if not fits:
        raise CxiFormatError(source, data_path, f"frames holding a window of N * binning pixels, N in {SUPPORTED_N}, "
                             f"around the zero frequency {center}", f"{H}x{W} frames at binning {b}")
    return max(fits), b


def _center(f, source, spec, basis, H, W):
    if spec.center is not None:
        return (int(round(spec.center[0])), int(round(spec.center[1]))), "given"
    if CORNER_PATH in f:
        corner = _read_real(f, CORNER_PATH, source).reshape(-1)
        if corner.shape != (3,):
            raise CxiFormatError(source, CORNER_PATH, "a corner position (x, y, z) m", f"shape {corner.shape}")
        _check_finite(corner, CORNER_PATH, source)
        # the beam (x = y = 0) on the detector: corner + i * b_i + j * b_j has zero x, y
        ij = np.linalg.lstsq(basis[:2], -corner[:2], rcond=None)[0]
        return (int(round(ij[0])), int(round(ij[1]))), f"the beam position from {CORNER_PATH}"
    return (H // 2, W // 2), "the array centre (H // 2, W // 2), as cdtools assumes"


def _wavelength(f, source):
    if WAVELENGTH_PATH in f:
        wavelength = _scalar(f, WAVELENGTH_PATH, source)
        if not WAVELENGTH_RANGE_M[0] <= wavelength <= WAVELENGTH_RANGE_M[1]:
            raise CxiFormatError(source, WAVELENGTH_PATH, f"a wavelength in metres within {WAVELENGTH_RANGE_M}",
                                 f"{wavelength:.6g}")
        if ENERGY_PATH in f:
            energy = _scalar(f, ENERGY_PATH, source)
            if energy > 0 and abs(HC_JOULE_METRE / energy - wavelength) > 1e-3 * wavelength:
                raise CxiFormatError(source, ENERGY_PATH, f"an energy (J) agreeing with {WAVELENGTH_PATH} "
                                     f"({HC_JOULE_METRE / wavelength:.6g} J)", f"{energy:.6g} (wavelength "
                                     f"{HC_JOULE_METRE / energy:.6g} m)")
        return wavelength, WAVELENGTH_PATH
    if ENERGY_PATH in f:
        energy = _scalar(f, ENERGY_PATH, source)
        if not ENERGY_RANGE_J[0] <= energy <= ENERGY_RANGE_J[1]:
            hint = " (it looks like eV or keV: CXI stores joules)" if energy > ENERGY_RANGE_J[1] else ""
            raise CxiFormatError(source, ENERGY_PATH, f"a photon energy in joules within {ENERGY_RANGE_J}",
                                 f"{energy:.6g}{hint}")
        return HC_JOULE_METRE / energy, f"{ENERGY_PATH} (J)"
    raise CxiFormatError(source, ENERGY_PATH, f"the source's energy (J) or {WAVELENGTH_PATH} (m)", "neither")


def _detector_basis(f, source):
    """(3, 2) metres: detector row step (column 0) and column step (column 1), square and untilted."""
    if BASIS_PATH in f:
        basis = _read_real(f, BASIS_PATH, source)
        if basis.ndim == 3:  # one basis per frame: all must agree
            if not np.allclose(basis, basis[:1]):
                raise CxiFormatError(source, BASIS_PATH, "one detector basis for every frame", "bases that differ")
            basis = basis[0]
        if basis.shape == (2, 3):
            basis = basis.T
        if basis.shape != (3, 2):
            raise CxiFormatError(source, BASIS_PATH, "basis vectors (3, 2) or (2, 3) m", f"shape {basis.shape}")
        _check_finite(basis, BASIS_PATH, source)
        key = BASIS_PATH
    else:
        sizes = {p: _scalar(f, p, source) for p in (X_PIXEL_PATH, Y_PIXEL_PATH) if p in f}
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


def _distance(f, source, basis):
    if DISTANCE_PATH in f:
        distance = _scalar(f, DISTANCE_PATH, source)
    elif CORNER_PATH in f:
        corner = _read_real(f, CORNER_PATH, source).reshape(-1)
        normal = np.cross(basis[:, 0], basis[:, 1])
        distance = float(abs(corner @ (normal / np.linalg.norm(normal)))) if corner.shape == (3,) else float("nan")
    else:
        raise CxiFormatError(source, DISTANCE_PATH, f"the sample-detector distance (m) (or {CORNER_PATH}): "
                             "the far-field geometry needs it", "neither")
    if not (math.isfinite(distance) and distance > 0):
        raise CxiFormatError(source, DISTANCE_PATH, "a sample-detector distance > 0 m", f"{distance!r}")
    return distance


def _first(f, paths, source, what):
    for path in paths:
        if path in f:
            return path
    raise CxiFormatError(source, paths[0], f"{what} at one of {', '.join(paths)}", "none of them")


def _check_file(path: Path, source: str) -> None:
    if not path.is_file():
        raise CxiFormatError(source, None, "a CXI (HDF5) file", "no such file" if not path.exists() else "not a file")


def _is_dataset(node) -> bool:
    return hasattr(node, "shape") and hasattr(node, "dtype")


def _check_dataset(node, key, source):
    if not _is_dataset(node):
        raise CxiFormatError(source, key, "a dataset", "a group")


def _read_real(f, key, source) -> np.ndarray:
    node = f[key]
    _check_dataset(node, key, source)
    value = np.asarray(node[()])
    if not (np.issubdtype(value.dtype, np.integer) or np.issubdtype(value.dtype, np.floating)):
        raise CxiFormatError(source, key, "real numbers", f"dtype {value.dtype}")
    return value.astype(np.float64)


def _scalar(f, key, source) -> float:
    value = _read_real(f, key, source)
    if value.size != 1:
        raise CxiFormatError(source, key, "a scalar", f"shape {value.shape}")
    value = float(value.reshape(()))
    if not (math.isfinite(value) and value > 0):
        raise CxiFormatError(source, key, "a finite number > 0", f"{value!r}")
    return value


def _check_finite(values, key, source):
    finite = np.isfinite(values)
    if not finite.all():
        raise CxiFormatError(source, key, "finite values", f"{int(values.size - finite.sum())} NaN or Inf value(s)")


# ---------------------------------------------------------------------------------------- writing

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
    h5py = _h5py()
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
    h5py = _h5py()
    source = str(path)
    _check_file(Path(path), source)
    with h5py.File(path, "r") as f:
        key = f"{IMAGE}/data"
        if key not in f:
            raise CxiFormatError(source, key, "an image (H, W) complex", "no image")
        canvas = f[key][()]
        if canvas.ndim != 2:
            raise CxiFormatError(source, key, "an image (H, W)", f"shape {canvas.shape}")
        dx = _scalar(f, f"{IMAGE}/x_pixel_size", source)
        dy = _scalar(f, f"{IMAGE}/y_pixel_size", source)
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


def _h5py():
    import h5py  # imported when used: ptycho stays importable without it

    return h5py


def _require(ok: bool, name: str, expected: str, got) -> None:
    if not ok:
        raise ValueError(f"CxiConversion.{name}: expected {expected}; got {got!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)

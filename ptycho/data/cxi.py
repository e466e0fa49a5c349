"""CXI in: convert a far-field ptychography scan in a CXI file (HDF5, the coherent imaging standard
written by cdtools, PtyPy, ptychodus...) into the project's PtychoData; ``ptycho.data.cxi_object``
writes a stitched object back as CXI. docs/data-cxi.md is the user's guide.

The fields read and their HDF5 paths: ``ptycho.data.cxi_file``.

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
   ``probe_fallback='mean_pattern'`` estimates one (``cxi_file.estimate_probe``).

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

from ptycho.data.contract import SUPPORTED_N, PtychoData
from ptycho.data.cxi_file import (
    DATA_PATHS, DISTANCE_PATH, TRANSLATION_PATHS, CxiFormatError, check_dataset, check_file, check_finite,
    first_path, import_h5py, read_center, read_detector_basis, read_distance, read_mask, read_probe, read_real,
    read_wavelength,
)

DEFAULT_MAX_MASKED_FRACTION = 0.5
MASK_FILLS = ("partner", "zero")
PROBE_FALLBACKS = ("mean_pattern",)


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
    h5py = import_h5py()
    source = str(path)
    check_file(Path(path), source)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise CxiFormatError(source, None, "an HDF5 (CXI) file", f"unreadable ({exc})") from exc
    with handle:
        return _convert(handle, source, spec, probe, origin_ij, max_bytes)


def _convert(f, source, spec, given_probe, origin_ij, max_bytes):
    notes = []
    data_path = first_path(f, DATA_PATHS, source, "diffraction frames (n, H, W) counts")
    frames = f[data_path]
    check_dataset(frames, data_path, source)
    if frames.ndim != 3:
        raise CxiFormatError(source, data_path, "a 3-D stack of frames (n, H, W)", f"shape {frames.shape}")
    if not (np.issubdtype(frames.dtype, np.integer) or np.issubdtype(frames.dtype, np.floating)):
        raise CxiFormatError(source, data_path, "real counts (integer or float)", f"dtype {frames.dtype}")
    n, H, W = frames.shape
    if n == 0:
        raise CxiFormatError(source, data_path, "at least one frame", "zero frames")
    translation_path = first_path(f, TRANSLATION_PATHS, source, "scan translations (n, 3) m")
    translations = read_real(f, translation_path, source)
    if translations.ndim != 2 or translations.shape[1] not in (2, 3):
        raise CxiFormatError(source, translation_path, "translations (n, 3) or (n, 2): x, y[, z] in metres",
                             f"shape {translations.shape}")
    if translations.shape[0] != n:
        raise CxiFormatError(source, translation_path, f"one translation per frame ({n} frames in {data_path})",
                             f"{translations.shape[0]} translations")
    check_finite(translations, translation_path, source)
    if translations.shape[1] == 2:
        translations = np.concatenate([translations, np.zeros((n, 1))], axis=1)

    wavelength, wavelength_from = read_wavelength(f, source)
    basis = read_detector_basis(f, source)
    pixel = float(np.linalg.norm(basis[:, 1]))
    distance = read_distance(f, source, basis)

    center, center_from = read_center(f, source, spec.center, basis, H, W)
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

    good, mask_path = read_mask(f, source, H, W, r0, c0, side)
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

    probe, probe_from, kept = read_probe(f, source, given_probe, spec.probe_fallback, N, b, counts)
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


def _require(ok: bool, name: str, expected: str, got) -> None:
    if not ok:
        raise ValueError(f"CxiConversion.{name}: expected {expected}; got {got!r}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)

"""Deterministic simulated ptychography dataset: the project's embedded default.

From a :class:`SimulationSpec` (seeded) this builds

* an object (M, M) complex64, by ``object_kind``: 'mixed' (the default): amplitude in [0.5, 1]
  and phase in [-pi/2, pi/2], each a sum of smooth random fields at several scales plus
  soft-edged disks and line segments shared by amplitude and phase (structure at several
  scales, not noise); 'lines': the PtychoPINN community's amplitude-only object of blurred
  random line segments, phase 0 (:func:`make_lines_object`);
* a probe (N, N) complex64 by ``probe_kind``: 'default', a soft-edged disk of radius N/4 (taper
  to zero at 5N/16, exactly zero beyond) with a quadratic (defocus-like) phase of 3*pi at the
  support edge (:func:`make_probe`); 'disk', a flat-phase disk of radius N/4 with a one-pixel
  edge (:func:`make_disk_probe`); 'defocus', a circular lens pupil's beam away from focus, a disk
  of radius 3N/8 with Fresnel rings (:func:`make_defocus_probe`);
* ``amplitude_range`` (optional): the object's amplitude mapped linearly from the kind's own
  range onto [lo, hi] (phase unchanged);
* a scan: a Fermat spiral (or jittered raster) whose median nearest-neighbour distance is
  ``scan_step_px`` (default N/6, so neighbouring illuminations overlap heavily), in object
  pixels, all patches fully inside the object;
* object patches ``Y`` extracted bilinearly at the sub-pixel scan positions, where
  ``Y[k, i, j] = O(ycoords[k] + i - N/2, xcoords[k] + j - N/2)`` (patch centre at pixel N/2);
* diffraction following physics.py: ``A = |FFT2(P * Y)|`` normalised as in DESIGN §7,
  observed as ``sqrt(Poisson((s_sim * A)**2)) / s_sim`` with
  ``s_sim = sqrt(nphotons / mean_n sum_xy |P * Y|**2)`` (CONTRACTS "Scaling").
  ``amplitude_units='counts'`` stores ``sqrt(Poisson((s_sim * A)**2))`` itself (physical scale:
  the squares are the photon counts) and the probe times ``s_sim``, so that both files keep the
  contract's relation ``mean_n sum_xy A_file**2 ~= mean_n sum_xy |probeGuess * Y|**2``.

Units and the loader. The NPZ contract (ptycho/data/normalization.py) fixes the data's scale only
up to one factor: the pipeline computes ``s = sqrt(nphotons / mean_n sum_xy A_file**2)`` from the
train file (``nphotons`` there is the job's) and feeds the model ``X = s * A_file``. For a
'normalised' file (``A_file = sqrt(counts) / s_sim``, probe of peak amplitude 1) ``s`` is about
``s_sim * sqrt(nphotons_job / nphotons_sim)``; for a 'counts' file (``A_file = sqrt(counts)``,
probe ``s_sim`` times larger) about ``sqrt(nphotons_job / nphotons_sim)``, 1 when they agree. ``X``, the
encoder's unit-RMS input ``X / s / rms(A_file)``, the implied starting object amplitude
(Parseval against the stored probe) and the predicted amplitude ``|FFT(O * probeGuess)| * s`` are
the same in both units: only ``ModelSpec.intensity_scale`` (log_scale) differs, by ``s_sim``.
``s_sim`` of a spec is :func:`diffraction_scale`; in a 'counts' file it is also
``sqrt(sum |probeGuess|**2 / sum |make_probe_of_kind(N, probe_kind)|**2)``.

The split is spatial: the test split holds the ``round(test_fraction * n)`` positions with the
largest ``ycoords`` (a band at the bottom of the object), the train split the rest; both keep
scan order, ``scan_index`` is the index in the full scan, and both carry ``objectGuess`` and ``Y``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ptycho import physics
from ptycho.data.contract import SUPPORTED_N, PtychoData, save_npz

SIMULATOR_VERSION = 1  # bump when the generated data changes, so caches are rebuilt
SCAN_PATTERNS = ("fermat", "raster")
OBJECT_KINDS = ("mixed", "lines")
DEFAULT_OBJECT_KIND = "mixed"
LINES_COUNT = 400  # segments on the (2M, 2M) canvas, as in the community's 'lines' object
LINES_BLUR = ((1.0, 1.0), (5.0, 2.0), (10.0, 5.0))  # (Gaussian sigma px, weight) summed
LINES_BACKGROUND = 0.1  # amplitude floor of the 'lines' object (see make_lines_object)
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
_FERMAT_NN_RATIO = 1.69  # median nearest-neighbour distance of r = c*sqrt(k + 1/2), in units of c
_PROBE_EDGE_PHASE_RAD = 3.0 * math.pi
_EDGE_MARGIN_PX = 2  # keeps the bilinear footprint of every patch inside the object
_FLOAT_FIELDS = ("nphotons", "test_fraction", "scan_step_px")
OBJECT_AMPLITUDE_RANGES = {"mixed": (0.5, 1.0), "lines": (LINES_BACKGROUND, 1.0)}  # each kind's own range
PROBE_KINDS = ("default", "disk", "defocus")
AMPLITUDE_UNITS = ("normalised", "counts")
# Fields left out of spec_hash at these values, so that specs from before the field existed keep
# their hash (and their cached files): a field added later goes here with its default.
_HASH_DEFAULTS = {"object_kind": DEFAULT_OBJECT_KIND, "amplitude_range": None, "probe_kind": "default",
                  "amplitude_units": "normalised"}
# probe_kind='defocus' (make_defocus_probe): in ray optics a disk of radius 3N/8 (3/4 of the frame
# across); its Fresnel number R**2 / (lambda z) (pixel units) sets the rings across it
DEFOCUS_RADIUS_FRACTION = 3 / 8
DEFOCUS_FRESNEL_NUMBER = 8.0
DEFOCUS_PUPIL_TAPER = 0.25  # outer share of the pupil radius over which the pupil falls (cos**2) to 0


@dataclass(frozen=True)
class SimulationSpec:
    """Settings of a simulated dataset; every field is validated (ValueError names it).

    N: frame side (pixels), one of SUPPORTED_N. n_images: scan positions (train + test).
    nphotons: mean photon count per frame. seed: integer >= 0. object_size: object side M in
    pixels, None for the smallest that holds the scan. test_fraction: share of positions in the
    test split. scan: 'fermat' or 'raster' (jittered). scan_step_px: nearest-neighbour distance
    of the scan in pixels, None for N / 6. object_kind: one of OBJECT_KINDS, 'mixed' (default)
    or 'lines' (amplitude-only line segments). amplitude_range: None (the object kind's own
    amplitude range, OBJECT_AMPLITUDE_RANGES) or (lo, hi), 0 < lo < hi, finite: the amplitude is
    mapped linearly from the kind's range onto [lo, hi], the phase kept (a list is accepted and
    stored as a tuple of floats). probe_kind: one of PROBE_KINDS (:func:`make_probe_of_kind`).
    amplitude_units: 'normalised' (diffraction = sqrt(counts) / s_sim, the unit probe) or
    'counts' (diffraction = sqrt(counts), the probe times s_sim); see the module docstring.
    """

    N: int = 64
    n_images: int = 512
    nphotons: float = 1e9
    seed: int = 0
    object_size: int | None = None
    test_fraction: float = 0.25
    scan: str = "fermat"
    scan_step_px: float | None = None
    object_kind: str = DEFAULT_OBJECT_KIND
    amplitude_range: tuple[float, float] | None = None
    probe_kind: str = "default"
    amplitude_units: str = "normalised"

    def __post_init__(self) -> None:
        _require(_is_int(self.N) and self.N in SUPPORTED_N, "N", f"one of {SUPPORTED_N}", self.N)
        _require(_is_int(self.n_images) and self.n_images >= 2, "n_images", "an integer >= 2", self.n_images)
        _require(_is_positive(self.nphotons), "nphotons", "a finite number > 0", self.nphotons)
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        _require(
            _is_number(self.test_fraction) and 1 <= round(self.test_fraction * self.n_images) < self.n_images,
            "test_fraction", "a fraction leaving at least one image in each split", self.test_fraction,
        )
        _require(self.scan in SCAN_PATTERNS, "scan", f"one of {SCAN_PATTERNS}", self.scan)
        _require(
            self.scan_step_px is None or _is_positive(self.scan_step_px), "scan_step_px",
            "None or a finite number > 0", self.scan_step_px,
        )
        _require(self.object_kind in OBJECT_KINDS, "object_kind", f"one of {OBJECT_KINDS}", self.object_kind)
        _require(_is_amplitude_range(self.amplitude_range), "amplitude_range",
                 "None or (lo, hi), finite numbers with 0 < lo < hi", self.amplitude_range)
        if self.amplitude_range is not None:
            object.__setattr__(self, "amplitude_range", tuple(float(v) for v in self.amplitude_range))
        _require(self.probe_kind in PROBE_KINDS, "probe_kind", f"one of {PROBE_KINDS}", self.probe_kind)
        _require(self.amplitude_units in AMPLITUDE_UNITS, "amplitude_units", f"one of {AMPLITUDE_UNITS}",
                 self.amplitude_units)
        minimum = _minimum_object_size(self)
        _require(
            self.object_size is None or (_is_int(self.object_size) and self.object_size >= minimum),
            "object_size", f"None or an integer >= {minimum} (holds the scan)", self.object_size,
        )

    @property
    def step_px(self) -> float:
        return float(self.N / 6 if self.scan_step_px is None else self.scan_step_px)

    @property
    def object_side(self) -> int:
        return int(_minimum_object_size(self) if self.object_size is None else self.object_size)

    @property
    def n_test(self) -> int:
        return int(round(self.test_fraction * self.n_images))


def spec_hash(spec: SimulationSpec) -> str:
    """12 hex digits identifying the spec and the simulator version.

    Fields added after the first version (object_kind, amplitude_range, probe_kind,
    amplitude_units) are left out at their defaults (_HASH_DEFAULTS), so a spec that uses none
    of them keeps the hash (and the cached files) it had before they existed.
    """
    fields = {key: v for key, v in asdict(spec).items()
              if not (key in _HASH_DEFAULTS and v == _HASH_DEFAULTS[key])}
    canonical = {
        key: (v if v is None or isinstance(v, str) else [float(x) for x in v] if key == "amplitude_range"
              else float(v) if key in _FLOAT_FIELDS else int(v))
        for key, v in fields.items()
    }
    text = json.dumps({"simulator_version": SIMULATOR_VERSION, **canonical}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def simulate_dataset(spec: SimulationSpec) -> tuple[PtychoData, PtychoData]:
    """Simulate the dataset of ``spec``; returns (train, test) with ground truth kept."""
    noise_rng = _generators(spec.seed)[1]
    obj, probe, xcoords, ycoords, patches = _noise_free_parts(spec)
    psi = physics.illuminate(probe, patches)
    scale = physics.intensity_scale(psi, spec.nphotons)
    counts_amplitude = physics.poisson_observe(scale * physics.far_field_amplitude(psi), noise_rng)
    if spec.amplitude_units == "counts":
        diffraction = counts_amplitude.astype(np.float32)
        probe = (probe.astype(np.complex128) * scale).astype(np.complex64)
    else:
        diffraction = (counts_amplitude / scale).astype(np.float32)
    splits = split_train_test(ycoords, spec.n_test)
    return tuple(
        PtychoData(
            diffraction=diffraction[idx], probe=probe, xcoords=xcoords[idx], ycoords=ycoords[idx],
            object_guess=obj, Y=patches[idx], scan_index=idx,
        )
        for idx in splits
    )


def diffraction_scale(spec: SimulationSpec) -> float:
    """``s_sim`` of ``spec``: the factor from the unit probe's amplitudes to sqrt(photon counts).

    A 'normalised' file stores ``sqrt(counts) / s_sim``, a 'counts' file ``sqrt(counts)`` and its
    probe times ``s_sim``. Computed over the whole scan (train and test), as the simulation does.
    """
    _, probe, _, _, patches = _noise_free_parts(spec)
    return physics.intensity_scale(physics.illuminate(probe, patches), spec.nphotons)


def make_simulated_object(spec: SimulationSpec, rng: np.random.Generator) -> np.ndarray:
    """(M, M) complex64 object of ``spec``: its object_kind, its amplitude_range applied."""
    make = make_lines_object if spec.object_kind == "lines" else make_object
    obj = make(spec.object_side, rng)
    if spec.amplitude_range is None:
        return obj
    return rescale_amplitude(obj, OBJECT_AMPLITUDE_RANGES[spec.object_kind], spec.amplitude_range)


def rescale_amplitude(obj: np.ndarray, source: tuple[float, float], target: tuple[float, float]) -> np.ndarray:
    """``obj`` with its amplitude mapped linearly from ``source`` = (a, b) onto ``target`` = (lo, hi).

    ``|O'| = lo + (hi - lo) * (|O| - a) / (b - a)``, phase unchanged; complex64.
    """
    (a, b), (lo, hi) = source, target
    obj = np.asarray(obj, dtype=np.complex128)
    amplitude = np.abs(obj)
    new_amplitude = lo + (hi - lo) * (amplitude - a) / (b - a)
    return (new_amplitude * np.exp(1j * np.angle(obj))).astype(np.complex64)


def make_probe_of_kind(N: int, kind: str = "default") -> np.ndarray:
    """(N, N) complex64 unit probe of ``kind`` (one of PROBE_KINDS), centred at pixel N/2."""
    makers = {"default": make_probe, "disk": make_disk_probe, "defocus": make_defocus_probe}
    if kind not in makers:
        raise ValueError(f"make_probe_of_kind: kind must be one of {PROBE_KINDS}; got {kind!r}")
    return makers[kind](N)


def make_disk_probe(N: int) -> np.ndarray:
    """(N, N) complex64 flat-phase disk of radius N/4: amplitude 1 within N/4 - 1/2, 0 beyond
    N/4 + 1/2, linear across the one pixel between (a hard aperture, anti-aliased); phase 0."""
    amplitude = np.clip(N / 4 + 0.5 - _radius_map(N), 0.0, 1.0)
    return amplitude.astype(np.complex64)


def make_defocus_probe(N: int) -> np.ndarray:
    """(N, N) complex64 defocused probe: the beam of a circular lens pupil at a distance z from focus.

    Angular spectrum (Fresnel) propagation of the focus: ``P = IFFT2[pupil(f) exp(-i pi lambda z
    |f|**2)]``, f in cycles per pixel, lengths in pixels. The pupil is a disk of radius f_c whose
    outer DEFOCUS_PUPIL_TAPER share falls to zero as cos**2 (a soft aperture, so the beam has no
    long edge-diffraction tails). In ray optics the beam is a disk of radius
    ``R = lambda z f_c = DEFOCUS_RADIUS_FRACTION * N`` (3N/8); in wave optics it carries Fresnel
    rings, set by the Fresnel number ``R**2 / (lambda z) = DEFOCUS_FRESNEL_NUMBER`` (8), so
    ``lambda z = R**2 / 8`` (48 px**2 at N = 64) and ``f_c = 8 / R`` (the unscattered beam fills a
    disk of radius ``f_c N = 64 / 3 ~ 21`` detector pixels at every N). It is computed on a 2N grid
    and cropped: about 2e-4 of its energy falls outside the frame, and the frame's outer 2-pixel
    ring holds 3.6e-4 of it at N = 64 (1.3e-4 at 128, 6e-5 at 256), so N stays sufficient. It
    spreads wider than the default probe: 32 % of its energy lies beyond radius N/4, against 17 %.
    Peak amplitude 1.
    """
    radius = DEFOCUS_RADIUS_FRACTION * N
    lambda_z = radius**2 / DEFOCUS_FRESNEL_NUMBER
    f_cut = radius / lambda_z
    M = 2 * N
    freq = np.fft.fftfreq(M)
    f_r = np.hypot(freq[:, None], freq[None, :])
    width = DEFOCUS_PUPIL_TAPER * f_cut
    pupil = np.where(f_r < f_cut, np.cos(0.5 * np.pi * np.clip((f_r - (f_cut - width)) / width, 0.0, 1.0)) ** 2, 0.0)
    field = np.fft.fftshift(np.fft.ifft2(pupil * np.exp(-1j * np.pi * lambda_z * f_r**2)))
    start = (M - N) // 2
    probe = field[start: start + N, start: start + N]
    return (probe / np.abs(probe).max()).astype(np.complex64)


def cached_dataset_paths(spec: SimulationSpec, cache_dir: str | os.PathLike) -> tuple[Path, Path]:
    """``<cache_dir>/simulated_<hash>_{train,test}.npz``, whether they exist yet or not."""
    stem = f"simulated_{spec_hash(spec)}"
    return Path(cache_dir) / f"{stem}_train.npz", Path(cache_dir) / f"{stem}_test.npz"


def ensure_simulated_dataset(spec: SimulationSpec, cache_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Paths of ``<cache_dir>/simulated_<hash>_{train,test}.npz``, simulating them on first use.

    Files are written atomically, so concurrent callers at worst simulate twice and
    rename identical files into place.
    """
    paths = cached_dataset_paths(spec, cache_dir)
    if not all(p.is_file() for p in paths):
        for path, data in zip(paths, simulate_dataset(spec)):
            save_npz(path, data)
    return paths


def make_object(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) complex64 object, amplitude in [0.5, 1], phase in [-pi/2, pi/2]."""
    features = _geometric_features(size, rng)
    amplitude_map = _unit_range(_multiscale_field(size, rng) + features)
    phase_map = _unit_range(_multiscale_field(size, rng) - 0.7 * features)
    amplitude = 0.5 + 0.5 * amplitude_map
    phase = (np.pi / 2) * (2.0 * phase_map - 1.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def make_lines_object(size: int, rng: np.random.Generator, n_lines: int = LINES_COUNT) -> np.ndarray:
    """(size, size) complex64 'lines' object: amplitude in [LINES_BACKGROUND, 1], phase exactly 0.

    The PtychoPINN community's 'lines' object: ``n_lines`` one-pixel segments between uniformly
    random integer end points on a (2 size, 2 size) canvas, blurred as the sum over LINES_BLUR
    (G1 + 2 G5 + 5 G10, sigmas in pixels), then the central (size, size) crop (lines cross the
    edges instead of ending near them), divided by its maximum. The reference uses that as the
    amplitude, which can reach 0 far from every line (blur tails end at 4 sigma); here it is
    mapped affinely onto [LINES_BACKGROUND, 1] = [0.1, 1]: the floor keeps |O| >= 0.1, so no
    illuminated pixel is opaque and amplitude ratios and logs stay finite, and the affine map
    keeps the relative line contrast (up to 10:1) instead of clipping detail to a plateau.
    """
    if not (_is_int(size) and size >= 1 and _is_int(n_lines) and n_lines >= 1):
        raise ValueError(f"make_lines_object: size and n_lines must be integers >= 1; got {size!r}, {n_lines!r}")
    side = 2 * size
    canvas = np.zeros((side, side))
    for r0, c0, r1, c1 in rng.integers(0, side, size=(n_lines, 4)):
        t = np.linspace(0.0, 1.0, max(abs(r1 - r0), abs(c1 - c0)) + 1)
        canvas[np.rint(r0 + t * (r1 - r0)).astype(int), np.rint(c0 + t * (c1 - c0)).astype(int)] = 1.0
    blurred = sum(weight * ndimage.gaussian_filter(canvas, sigma) for sigma, weight in LINES_BLUR)
    field = blurred[size // 2: size // 2 + size, size // 2: size // 2 + size]
    peak = field.max()
    amplitude = LINES_BACKGROUND + (1.0 - LINES_BACKGROUND) * (field / peak if peak > 0 else field)
    return amplitude.astype(np.complex64)


def make_probe(N: int) -> np.ndarray:
    """(N, N) complex64 probe: soft disk (radius N/4, zero beyond 5N/16), quadratic phase, centred at N/2."""
    r_inner, r_outer = N / 4, 5 * N / 16
    r = _radius_map(N)
    taper = np.cos(0.5 * np.pi * np.clip((r - r_inner) / (r_outer - r_inner), 0.0, 1.0)) ** 2
    amplitude = np.where(r < r_outer, taper, 0.0)
    phase = np.where(r < r_outer, _PROBE_EDGE_PHASE_RAD * (r / r_outer) ** 2, 0.0)
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def probe_support_radius(N: int) -> float:
    """Radius in pixels (from pixel N/2) outside which :func:`make_probe` is exactly zero."""
    return 5 * N / 16


def scan_positions(spec: SimulationSpec) -> tuple[np.ndarray, np.ndarray]:
    """(xcoords, ycoords), each (n_images,) float64 object pixels, centred on the object."""
    dx, dy = _scan_offsets(spec)
    centre = spec.object_side / 2
    return centre + dx, centre + dy


def extract_patches(obj: np.ndarray, xcoords: np.ndarray, ycoords: np.ndarray, N: int) -> np.ndarray:
    """Bilinear object patches (n, N, N) complex64.

    obj: (M, H) complex; xcoords, ycoords: (n,) object pixels. Patch k has its pixel
    (N/2, N/2) on (xcoords[k], ycoords[k]). Raises ValueError if a patch leaves the object.
    """
    grid = np.arange(N) - N / 2
    rows = ycoords[:, None, None] + grid[None, :, None] + np.zeros((1, 1, N))
    cols = xcoords[:, None, None] + grid[None, None, :] + np.zeros((1, N, 1))
    limit = np.array(obj.shape) - 1
    if rows.min() < 0 or cols.min() < 0 or rows.max() > limit[0] or cols.max() > limit[1]:
        raise ValueError("extract_patches: a patch reaches outside the object")
    coordinates = np.stack([rows, cols])
    real = ndimage.map_coordinates(obj.real, coordinates, order=1)
    imag = ndimage.map_coordinates(obj.imag, coordinates, order=1)
    return (real + 1j * imag).astype(np.complex64)


def split_train_test(ycoords: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) int64 indices: test = the n_test largest ycoords; both sorted (scan order)."""
    order = np.argsort(ycoords, kind="stable")
    test = np.sort(order[len(order) - n_test:])
    train = np.sort(order[: len(order) - n_test])
    return train.astype(np.int64), test.astype(np.int64)


def _scan_offsets(spec: SimulationSpec) -> tuple[np.ndarray, np.ndarray]:
    """Scan positions relative to the object centre, pixels."""
    k = np.arange(spec.n_images)
    if spec.scan == "fermat":
        radius = (spec.step_px / _FERMAT_NN_RATIO) * np.sqrt(k + 0.5)
        angle = k * _GOLDEN_ANGLE
        return radius * np.cos(angle), radius * np.sin(angle)
    side = math.ceil(math.sqrt(spec.n_images))
    jitter = _generators(spec.seed)[2].uniform(-0.1, 0.1, size=(2, spec.n_images)) * spec.step_px
    dx = (k % side - (side - 1) / 2) * spec.step_px + jitter[0]
    dy = (k // side - (math.ceil(spec.n_images / side) - 1) / 2) * spec.step_px + jitter[1]
    return dx, dy


def _noise_free_parts(spec: SimulationSpec):
    """(object, unit probe, xcoords, ycoords, patches) of ``spec``, before any photon is counted."""
    obj = make_simulated_object(spec, _generators(spec.seed)[0])
    probe = make_probe_of_kind(spec.N, spec.probe_kind)
    xcoords, ycoords = scan_positions(spec)
    return obj, probe, xcoords, ycoords, extract_patches(obj, xcoords, ycoords, spec.N)


def _generators(seed: int) -> list[np.random.Generator]:
    """Independent streams for the object, the photon noise and the scan jitter."""
    return [np.random.default_rng(child) for child in np.random.SeedSequence(int(seed)).spawn(3)]


def _minimum_object_size(spec: SimulationSpec) -> int:
    dx, dy = _scan_offsets(spec)
    extent = float(max(np.abs(dx).max(), np.abs(dy).max()))
    size = math.ceil(2 * extent + spec.N + 2 * _EDGE_MARGIN_PX)
    return size + size % 2


def _multiscale_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of Gaussian-filtered white noise at sigmas size/8, 8, 3, 1.5 px (weights 1, .6, .35, .2)."""
    freq2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    field = np.zeros((size, size))
    for sigma, weight in ((size / 8, 1.0), (8.0, 0.6), (3.0, 0.35), (1.5, 0.2)):
        noise_hat = np.fft.rfft2(rng.standard_normal((size, size)))
        smooth = np.fft.irfft2(noise_hat * np.exp(-2 * np.pi**2 * sigma**2 * freq2), s=(size, size))
        field += weight * smooth / smooth.std()
    return field


def _geometric_features(size: int, rng: np.random.Generator, n_disks: int = 14, n_lines: int = 8):
    """Soft-edged disks and line segments of random sign and height 1 to 2.5."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    canvas = np.zeros((size, size))
    for _ in range(n_disks):
        cx, cy = rng.uniform(0, size, 2)
        radius = rng.uniform(size / 50, size / 12)
        canvas += _random_height(rng) * _soft_step(radius - np.hypot(xx - cx, yy - cy))
    for _ in range(n_lines):
        x0, y0 = rng.uniform(0, size, 2)
        angle, length = rng.uniform(0, np.pi), rng.uniform(size / 8, size / 2)
        ux, uy = np.cos(angle), np.sin(angle)
        along = np.clip((xx - x0) * ux + (yy - y0) * uy, 0.0, length)
        distance = np.hypot(xx - x0 - along * ux, yy - y0 - along * uy)
        canvas += _random_height(rng) * _soft_step(rng.uniform(1.0, 3.0) - distance)
    return canvas


def _random_height(rng: np.random.Generator) -> float:
    return float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 2.5))


def _soft_step(signed_distance: np.ndarray) -> np.ndarray:
    """0 outside, 1 inside, with an edge about one pixel wide."""
    return 0.5 * (1.0 + np.tanh(signed_distance))


def _unit_range(field: np.ndarray) -> np.ndarray:
    """Map the 0.5th..99.5th percentiles to [0, 1] and clip, so rare extremes do not flatten contrast."""
    low, high = np.percentile(field, [0.5, 99.5])
    return np.clip((field - low) / (high - low), 0.0, 1.0)


def _radius_map(N: int) -> np.ndarray:
    grid = np.arange(N) - N / 2
    return np.hypot(grid[None, :], grid[:, None])


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    is_real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return is_real and math.isfinite(value)


def _is_positive(value) -> bool:
    return _is_number(value) and value > 0


def _is_amplitude_range(value) -> bool:
    if value is None:
        return True
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_is_number(v) for v in value):
        return False
    return 0 < value[0] < value[1]


def _require(condition: bool, field: str, expected: str, got) -> None:
    if not condition:
        raise ValueError(f"SimulationSpec.{field}: expected {expected}; got {got!r}")

"""Deterministic simulated ptychography dataset: the project's embedded default.

From a :class:`SimulationSpec` (seeded) this builds

* an object (M, M) complex64 of ``object_kind`` ('mixed', the default, or 'lines') and a probe
  (N, N) complex64 of ``probe_kind`` ('default', 'disk' or 'defocus'), made by
  ``ptycho.data.phantoms`` (each kind described there);
* ``amplitude_range`` (optional): the object's amplitude mapped linearly from the kind's own
  range onto [lo, hi] (phase unchanged);
* a scan: a Fermat spiral (or jittered raster) whose median nearest-neighbour distance is
  ``scan_step_px`` (default N/6, so neighbouring illuminations overlap heavily), in object
  pixels, all patches fully inside the object;
* object patches ``Y`` extracted bilinearly at the sub-pixel scan positions, where
  ``Y[k, i, j] = O(ycoords[k] + i - N/2, xcoords[k] + j - N/2)`` (patch centre at pixel N/2);
* diffraction following physics.py: ``A = |FFT2(P * Y)|`` normalised as in docs/design.md §5,
  observed as ``sqrt(Poisson((s_sim * A)**2)) / s_sim`` with
  ``s_sim = sqrt(nphotons / mean_n sum_xy |P * Y|**2)`` (docs/design.md §4).
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
``sqrt(sum |probeGuess|**2 / sum |phantoms.make_probe_of_kind(N, probe_kind)|**2)``.

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
from ptycho.data.contract import SUPPORTED_N, PtychoData
from ptycho.data.npz import save_npz
from ptycho.data.phantoms import (
    OBJECT_AMPLITUDE_RANGES, OBJECT_KINDS, PROBE_KINDS, make_lines_object, make_object, make_probe_of_kind,
    rescale_amplitude,
)

SIMULATOR_VERSION = 1  # bump when the generated data changes, so caches are rebuilt
SCAN_PATTERNS = ("fermat", "raster")
DEFAULT_OBJECT_KIND = "mixed"
_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))
_FERMAT_NN_RATIO = 1.69  # median nearest-neighbour distance of r = c*sqrt(k + 1/2), in units of c
_EDGE_MARGIN_PX = 2  # keeps the bilinear footprint of every patch inside the object
_FLOAT_FIELDS = ("nphotons", "test_fraction", "scan_step_px")
AMPLITUDE_UNITS = ("normalised", "counts")
# Fields left out of spec_hash at these values, so that specs from before the field existed keep
# their hash (and their cached files): a field added later goes here with its default.
_HASH_DEFAULTS = {"object_kind": DEFAULT_OBJECT_KIND, "amplitude_range": None, "probe_kind": "default",
                  "amplitude_units": "normalised"}


@dataclass(frozen=True)
class SimulationSpec:
    """Settings of a simulated dataset; every field is validated (ValueError names it).

    N: frame side (pixels), one of SUPPORTED_N. n_images: scan positions (train + test; the
    default 2048 is the runner's default dataset, 1536 train and 512 test).
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
    n_images: int = 2048
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

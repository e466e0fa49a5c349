"""Synthetic objects (phantoms) and probes of the simulated dataset (``ptycho.data.simulate``).

Objects (M, M) complex64, by kind (OBJECT_KINDS): 'mixed' (:func:`make_object`): amplitude in
[0.5, 1] and phase in [-pi/2, pi/2], each a sum of smooth random fields at several scales plus
soft-edged disks and line segments shared by amplitude and phase (structure at several scales,
not noise); 'lines' (:func:`make_lines_object`): the PtychoPINN community's amplitude-only object
of blurred random line segments, phase 0. :func:`rescale_amplitude` maps an object's amplitude
linearly onto another range (OBJECT_AMPLITUDE_RANGES holds each kind's own).

Probes (N, N) complex64 centred at pixel N/2, by kind (PROBE_KINDS, :func:`make_probe_of_kind`):
'default', a soft-edged disk of radius N/4 (taper to zero at 5N/16, exactly zero beyond) with a
quadratic (defocus-like) phase of 3*pi at the support edge (:func:`make_probe`); 'disk', a
flat-phase disk of radius N/4 with a one-pixel edge (:func:`make_disk_probe`); 'defocus', a
circular lens pupil's beam away from focus, a disk of radius 3N/8 with Fresnel rings
(:func:`make_defocus_probe`).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

OBJECT_KINDS = ("mixed", "lines")
LINES_COUNT = 400  # segments on the (2M, 2M) canvas, as in the community's 'lines' object
LINES_BLUR = ((1.0, 1.0), (5.0, 2.0), (10.0, 5.0))  # (Gaussian sigma px, weight) summed
LINES_BACKGROUND = 0.1  # amplitude floor of the 'lines' object (see make_lines_object)
OBJECT_AMPLITUDE_RANGES = {"mixed": (0.5, 1.0), "lines": (LINES_BACKGROUND, 1.0)}  # each kind's own range
PROBE_KINDS = ("default", "disk", "defocus")
_PROBE_EDGE_PHASE_RAD = 3.0 * math.pi
# probe_kind='defocus' (make_defocus_probe): in ray optics a disk of radius 3N/8 (3/4 of the frame
# across); its Fresnel number R**2 / (lambda z) (pixel units) sets the rings across it
DEFOCUS_RADIUS_FRACTION = 3 / 8
DEFOCUS_FRESNEL_NUMBER = 8.0
DEFOCUS_PUPIL_TAPER = 0.25  # outer share of the pupil radius over which the pupil falls (cos**2) to 0


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

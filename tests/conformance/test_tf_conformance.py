"""Conformance of the TensorFlow operations with docs/design.md §5 (PTY-AT-001, -011, -012)."""
import numpy as np
import pytest

from ptycho import physics, stitching
from ptycho.tf import ops as tf_ops, reassembly as tf_reassembly

N = 64
GRIDSIZE = 2
C = GRIDSIZE**2


def _probe(size=N):
    yy, xx = np.mgrid[:size, :size] - size / 2
    radius2 = xx**2 + yy**2
    support = radius2 < (size / 3) ** 2
    probe = np.exp(-radius2 / (2 * (size / 8) ** 2)) * support * np.exp(1j * radius2 / 150)
    return probe.astype(np.complex64)


def _object_patches(count, size=N, seed=0):
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.5, 1.0, (count, size, size))
    phase = rng.uniform(-1.0, 1.0, (count, size, size))
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def _smooth_canvas(batch, size):
    yy, xx = np.mgrid[:size, :size] * 2 * np.pi / 96
    amplitude = 1.0 + 0.3 * np.sin(xx) * np.cos(0.7 * yy)
    canvas = amplitude * np.exp(1j * (0.8 * np.cos(xx + 0.5 * yy)))
    return np.repeat(canvas[None, ..., None], batch, axis=0).astype(np.complex64)


def _group_coords_relative(scan_xy):
    """(B, C, 2) absolute [x, y] positions -> (B, 1, 2, C) coords_relative (sign -1)."""
    coords_nn = np.transpose(scan_xy, (0, 2, 1))[:, None]  # (B, 1, 2, C)
    coords_offsets = coords_nn.mean(axis=3, keepdims=True)
    return (-(coords_nn - coords_offsets)).astype(np.float32)


def _offsets_xy(coords_relative):
    """(B, 1, 2, C) -> (B*C, 2) [dx, dy]."""
    return np.transpose(coords_relative[:, 0], (0, 2, 1)).reshape(-1, 2)


def test_PTY_AT_001_forward_amplitude_equivalence():
    probe, objects = _probe(), _object_patches(2 * C)
    psi = (probe * objects).astype(np.complex64)  # (B*C, N, N): the model's complex64 exit waves
    psi_channels = np.moveaxis(psi.reshape(2, C, N, N), 1, -1)

    amplitude = tf_ops.pad_and_diffract(psi_channels).numpy()
    amplitude = np.moveaxis(amplitude, -1, 1).reshape(2 * C, N, N)
    reference = physics.far_field_amplitude(psi)

    assert amplitude.dtype == np.float32
    assert np.max(np.abs(amplitude - reference) / reference) <= 1e-6  # every pixel, no threshold
    energy_in = np.sum(np.abs(psi.astype(np.complex128)) ** 2, axis=(-2, -1))
    energy_out = np.sum(amplitude.astype(np.float64) ** 2, axis=(-2, -1))
    np.testing.assert_allclose(energy_out, energy_in, rtol=1e-6)


def test_PTY_AT_001_full_forward_model_within_float32_illumination():
    # P * O formed in complex64 (as the TF model does) against the all-float64 reference:
    # the only extra error is the rounding of the exit wave to complex64.
    probe, objects = _probe(), _object_patches(C, seed=1)
    psi = probe[None] * objects  # numpy complex64 product, like tf.multiply
    amplitude = tf_ops.pad_and_diffract(np.moveaxis(psi, 0, -1)[None]).numpy()[0]
    amplitude = np.moveaxis(amplitude, -1, 0)
    reference = physics.forward_amplitude(probe, objects)
    significant = reference >= 1e-3 * reference.max()
    assert np.max(np.abs(amplitude - reference)[significant] / reference[significant]) <= 1e-5


@pytest.mark.parametrize("use_xla", [True, False])
@pytest.mark.parametrize("subpixel", [False, True])
def test_PTY_AT_011_translation_extract_reassemble_round_trip(use_xla, subpixel):
    rng = np.random.default_rng(5)
    base = np.array([[0, 0], [9, 0], [0, 9], [9, 9]], np.float64)  # row-major 2x2 scan
    scan = base[None] + rng.uniform(-2, 2, size=(3, C, 2)) + np.array([[[30.0, 40.0]]])
    coords = _group_coords_relative(scan)
    if not subpixel:
        coords = np.round(coords)
    size = stitching.required_canvas_size(N, _offsets_xy(coords)) + 4
    canvas = _smooth_canvas(3, size)

    patches = tf_reassembly.extract_patches_at_offsets(canvas, coords, N, use_xla=use_xla)
    rebuilt = tf_reassembly.reassemble_patches(patches, coords, size, use_xla=use_xla)
    again = tf_reassembly.extract_patches_at_offsets(rebuilt, coords, N, use_xla=use_xla).numpy()

    interior = np.s_[:, 2:-2, 2:-2, :]
    # Sub-pixel: two more bilinear resamplings blur, and the fractional rims of neighbouring
    # patches enter the overlap average with their small weights; both stay ~1 % here.
    tolerance = 2e-2 if subpixel else 1e-5
    np.testing.assert_allclose(again[interior], patches.numpy()[interior], atol=tolerance)
    if not subpixel:
        centre = size // 2
        np.testing.assert_allclose(
            rebuilt.numpy()[:, centre, centre], canvas[:, centre, centre], atol=1e-5
        )


@pytest.mark.parametrize("use_xla", [True, False])
def test_PTY_AT_012_row_major_channel_mapping(use_xla):
    tags = np.arange(C, dtype=np.float32) + 1.0  # channel c carries the value c + 1
    patches = np.broadcast_to(tags, (2, N, N, C)).astype(np.complex64)

    flat = tf_ops.channels_to_flat(patches).numpy()
    assert [flat[b * C + c, 0, 0, 0].real for b in range(2) for c in range(C)] == list(tags) * 2
    np.testing.assert_array_equal(tf_ops.flat_to_channels(flat, C), patches)
    grid = tf_ops.channels_to_grid(patches, GRIDSIZE).numpy()
    for c in range(C):
        assert np.all(grid[:, c // GRIDSIZE, c % GRIDSIZE] == tags[c])
    np.testing.assert_array_equal(tf_ops.grid_to_channels(grid), patches)

    # Scan positions on a row-major grid: channel c at column c % g, row c // g, 40 px apart,
    # so each patch keeps a region of the canvas to itself.
    spacing = 40.0
    scan = np.array([[(c % GRIDSIZE) * spacing, (c // GRIDSIZE) * spacing] for c in range(C)])[None]
    coords = np.repeat(_group_coords_relative(scan), 2, axis=0)
    size = stitching.required_canvas_size(N, _offsets_xy(coords))
    canvas = tf_reassembly.reassemble_patches(patches, coords, size, use_xla=use_xla).numpy()[0, ..., 0]
    centre, quarter = size // 2, int(spacing / 2 + N / 2 - 4)
    for c in range(C):
        row = centre + (-1 if c // GRIDSIZE == 0 else 1) * quarter
        col = centre + (-1 if c % GRIDSIZE == 0 else 1) * quarter
        assert canvas[row, col] == pytest.approx(tags[c]), f"channel {c} not at pixel {row, col}"

    extracted = tf_reassembly.extract_patches_at_offsets(
        canvas[None, ..., None], coords[:1], N, use_xla=use_xla
    )
    extracted_grid = tf_ops.channels_to_grid(extracted, GRIDSIZE).numpy()[0]
    for c in range(C):
        corner = extracted_grid[c // GRIDSIZE, c % GRIDSIZE, N // 2, N // 2, 0]
        assert corner == pytest.approx(tags[c])

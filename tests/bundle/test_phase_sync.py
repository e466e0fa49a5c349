"""Phase synchronisation before stitching: each patch's own phase offset is removed."""
import numpy as np
import pytest
from scipy import ndimage

from ptycho.evaluation import quality
from ptycho import stitching

N = 32
CROP = 16


def _object(seed=0, size=160):
    rng = np.random.default_rng(seed)
    amp = 0.6 + 0.4 * ndimage.gaussian_filter(rng.random((size, size)), 3) / 0.1
    phase = 1.5 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 12) / 0.05
    return (np.clip(amp, 0.2, 1.5) * np.exp(1j * phase)).astype(np.complex64)


def _patches(obj, offsets_xy, side=CROP):
    """Bilinear crops (n, side, side) whose pixel (side/2, side/2) sits at the object's centre + offset."""
    centre = np.array(obj.shape[::-1]) / 2
    grid = np.arange(side) - side / 2
    ys = centre[1] + offsets_xy[:, 1, None, None] + grid[None, :, None] + np.zeros((1, 1, side))
    xs = centre[0] + offsets_xy[:, 0, None, None] + grid[None, None, :] + np.zeros((1, side, 1))
    coords = np.stack([ys, xs])
    return (ndimage.map_coordinates(obj.real, coords, order=1)
            + 1j * ndimage.map_coordinates(obj.imag, coords, order=1)).astype(np.complex64)


def _numpy_sum_windows(stacked, shifts, window, linear, n_pixels):
    """The backends' sum_windows in plain numpy: bilinear move by [dx, dy] into a window, then sum."""
    k, side = stacked.shape[0], stacked.shape[1]
    moved = np.zeros((k, window, window, 3), np.float64)
    fx, fy = shifts[:, 0, None, None, None], shifts[:, 1, None, None, None]
    moved[:, :side, :side] += (1 - fy) * (1 - fx) * stacked
    moved[:, 1:, :side] += fy * (1 - fx) * stacked
    moved[:, :side, 1:] += (1 - fy) * fx * stacked
    moved[:, 1:, 1:] += fy * fx * stacked
    return np.stack([np.bincount(linear, moved[..., i].reshape(-1), n_pixels) for i in range(3)], axis=-1)


def _stitch(patches, offsets):
    return stitching.reassemble_by_offsets(patches, offsets, _numpy_sum_windows)


def _scan(n=60, step=5.0, seed=1):
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    k = np.arange(n)
    grid = np.stack([k % side, k // side], axis=1).astype(float) * step
    return grid - grid.mean(axis=0) + rng.uniform(-1, 1, (n, 2))


def _phase_error(canvas, reference):
    inside = np.abs(reference) > 0.05
    return float(np.mean(np.abs(np.angle(quality.align_phase(canvas, reference, inside) * np.conj(reference)))[inside]))


@pytest.mark.parametrize("dense_max", [stitching.SYNC_DENSE_MAX, 0], ids=["dense", "arpack"])
def test_random_patch_offsets_are_removed_and_the_stitched_object_restored(dense_max, monkeypatch):
    monkeypatch.setattr(stitching, "SYNC_DENSE_MAX", dense_max)  # both eigen-solvers
    offsets = _scan()
    truth = _patches(_object(), offsets)
    rng = np.random.default_rng(7)
    scrambled = truth * np.exp(1j * rng.uniform(-np.pi, np.pi, len(truth)))[:, None, None].astype(np.complex64)
    reference = _stitch(truth, offsets)
    factors = stitching.synchronise_phases(scrambled, offsets)
    synced = _stitch((scrambled * factors[:, None, None]).astype(np.complex64), offsets)
    assert np.allclose(np.abs(factors), 1.0)
    assert _phase_error(_stitch(scrambled, offsets), reference) > 0.5
    assert _phase_error(synced, reference) < 0.01
    # amplitude is no longer cancelled by mismatched phases
    inside = np.abs(reference) > 0.05
    assert np.max(np.abs(np.abs(synced) - np.abs(reference))[inside]) < 0.02


def test_patches_that_already_agree_come_back_unchanged():
    offsets = _scan()
    truth = _patches(_object(seed=3), offsets)
    factors = stitching.synchronise_phases(truth, offsets)
    np.testing.assert_allclose(factors, 1.0, atol=2e-3)


def test_each_connected_group_is_solved_alone_and_an_isolated_patch_keeps_its_phase():
    near = _scan(n=16)
    offsets = np.concatenate([near, near + [0.0, 60.0], [[-60.0, -60.0]]])  # two clusters and a loner
    truth = _patches(_object(seed=4), offsets)
    shifts = np.concatenate([np.full(16, 1.0), np.full(16, -2.0), [0.7]])
    scrambled = (truth * np.exp(1j * shifts)[:, None, None]).astype(np.complex64)
    factors = stitching.synchronise_phases(scrambled, offsets)
    for cluster in (slice(0, 16), slice(16, 32)):
        np.testing.assert_allclose(factors[cluster], factors[cluster][0], atol=2e-3)
    assert factors[32] == 1.0


def test_zero_patches_and_a_single_patch_give_unit_factors():
    offsets = _scan(n=9)
    np.testing.assert_array_equal(stitching.synchronise_phases(np.zeros((9, CROP, CROP), np.complex64), offsets), 1.0)
    np.testing.assert_array_equal(stitching.synchronise_phases(np.ones((1, CROP, CROP), np.complex64), offsets[:1]), 1.0)


def test_the_same_patches_give_the_same_factors_every_time():
    offsets = _scan()
    scrambled = _patches(_object(seed=5), offsets) * np.exp(1j * np.arange(60) * 0.9)[:, None, None]
    first = stitching.synchronise_phases(scrambled, offsets)
    np.testing.assert_array_equal(first, stitching.synchronise_phases(scrambled.copy(), offsets.copy()))


@pytest.mark.parametrize("patches, offsets, match", [
    (np.zeros((3, 8, 8), complex), np.zeros((2, 2)), "one offset each"),
    (np.zeros((3, 8, 6), complex), np.zeros((3, 2)), r"\(n, W, W\)"),
    (np.zeros((3, 8, 8), complex), np.full((3, 2), np.nan), "finite"),
])
def test_bad_input_is_named(patches, offsets, match):
    with pytest.raises(ValueError, match=match):
        stitching.synchronise_phases(patches, offsets)


def test_stitch_patches_records_the_corrections_when_asked():
    offsets = _scan(n=16)
    truth = _patches(_object(seed=6), offsets, side=N)
    scrambled = (truth * np.exp(1j * np.linspace(-2, 2, 16))[:, None, None]).astype(np.complex64)

    class Groups:  # gridsize 1: one patch per group, its scan position in coords_nn
        coords_nn = np.transpose(offsets[:, None, :, None], (0, 1, 2, 3))

    def reassemble(flat, offsets_xy, canvas_size=None, chunk_size=None):
        return stitching.reassemble_by_offsets(flat, offsets_xy, _numpy_sum_windows, canvas_size, chunk_size)

    synced = stitching.stitch_patches(scrambled[..., None], Groups, reassemble, phase_offsets="sync")
    plain = stitching.stitch_patches(scrambled[..., None], Groups, reassemble)  # the default: as they are
    assert plain.phase_corrections is None
    assert synced.phase_corrections.shape == (16,)
    spread = np.angle(np.exp(1j * (synced.phase_corrections + np.linspace(-2, 2, 16))))
    assert np.ptp(spread) < 0.01  # every patch brought back to one common phase


def test_a_large_group_is_solved_by_arpack_with_the_same_answer(monkeypatch):
    offsets = _scan()
    scrambled = (_patches(_object(seed=8), offsets) * np.exp(1j * np.arange(60) * 2.1)[:, None, None]).astype(np.complex64)
    dense = stitching.synchronise_phases(scrambled, offsets)
    monkeypatch.setattr(stitching, "SYNC_DENSE_MAX", 8)
    sparse = stitching.synchronise_phases(scrambled, offsets)
    np.testing.assert_allclose(np.angle(sparse * np.conj(dense)), 0.0, atol=1e-6)

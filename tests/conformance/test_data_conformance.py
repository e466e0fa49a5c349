"""Conformance of the data layer: PTY-AT-002, PTY-AT-010, PTY-AT-030."""
import numpy as np
import pytest

from ptycho import physics
from ptycho.data.contract import PtychoData
from ptycho.data.npz import load_npz, save_npz
from ptycho.data.grouping import group_positions
from ptycho.data.simulate import SimulationSpec, ensure_simulated_dataset


def test_PTY_AT_002_poisson_sampling_semantics():
    """Observed A_obs**2 are non-negative integers whose mean and variance both match A**2."""
    rng = np.random.default_rng(2024)
    expected = np.array([0.05, 0.5, 1.0, 3.0, 10.0, 40.0, 200.0])  # A**2, photons
    draws = 20000
    observed = physics.poisson_observe(np.broadcast_to(np.sqrt(expected), (draws, expected.size)), rng)
    counts = observed**2
    assert np.all(counts >= 0)
    np.testing.assert_allclose(counts, np.rint(counts), rtol=0, atol=1e-9 * counts.max())
    mean_se = np.sqrt(expected / draws)
    assert np.all(np.abs(counts.mean(axis=0) - expected) < 5 * mean_se)
    var_se = np.sqrt((expected + 2 * expected**2) / draws)  # standard error of a Poisson sample variance
    assert np.all(np.abs(counts.var(axis=0, ddof=1) - expected) < 5 * var_se)


@pytest.mark.parametrize("gridsize", [1, 2, 3])
def test_PTY_AT_010_group_shapes(gridsize):
    rng = np.random.default_rng(gridsize)
    x, y = rng.uniform(0, 200, 100), rng.uniform(0, 200, 100)
    C, B = gridsize**2, 12
    groups = group_positions(x, y, gridsize=gridsize, neighbor_count=max(C, 4) + 2, n_groups=B, seed=0)
    assert groups.gridsize == gridsize
    assert groups.nn_indices.shape == (B, C) and groups.nn_indices.dtype == np.int64
    assert groups.coords_nn.shape == (B, 1, 2, C) and groups.coords_nn.dtype == np.float64
    assert groups.coords_offsets.shape == (B, 1, 2, 1)
    assert groups.coords_relative.shape == (B, 1, 2, C)
    np.testing.assert_array_equal(groups.coords_nn[:, 0, 0, :], x[groups.nn_indices])
    np.testing.assert_array_equal(groups.coords_nn[:, 0, 1, :], y[groups.nn_indices])
    np.testing.assert_array_equal(groups.coords_offsets, np.mean(groups.coords_nn, axis=3, keepdims=True))
    np.testing.assert_array_equal(groups.coords_relative, -(groups.coords_nn - groups.coords_offsets))


def test_PTY_AT_030_loader_shapes_and_dtypes(tmp_path):
    n, N = 4, 64
    rng = np.random.default_rng(0)
    minimal = tmp_path / "minimal.npz"
    np.savez(
        minimal,
        diff3d=rng.random((n, N, N)),  # legacy key, float64
        probeGuess=np.ones((N, N), np.complex128),
        xcoords=np.arange(n), ycoords=np.arange(n) * 1.5,
        xcoords_start=np.arange(n), ycoords_start=np.arange(n) * 1.5,
    )
    data = load_npz(minimal)
    assert data.diffraction.shape == (n, N, N) and data.diffraction.dtype == np.float32
    assert data.probe.shape == (N, N) and data.probe.dtype == np.complex64
    assert data.xcoords.dtype == np.float64 and data.ycoords.dtype == np.float64
    assert (data.N, data.n_images, data.has_ground_truth) == (N, n, False)
    assert data.object_guess is None and data.Y is None and data.scan_index is None
    assert data.xcoords_start.dtype == np.float64

    train_path, _ = ensure_simulated_dataset(SimulationSpec(n_images=16, nphotons=1e6), tmp_path / "cache")
    train = load_npz(train_path)
    M = train.object_guess.shape[0]
    assert train.diffraction.shape == (12, N, N) and train.diffraction.dtype == np.float32
    assert train.Y.shape == (12, N, N) and train.Y.dtype == np.complex64
    assert train.object_guess.shape == (M, M) and train.object_guess.dtype == np.complex64
    assert train.scan_index.shape == (12,) and train.scan_index.dtype == np.int64
    resaved = load_npz(save_npz(tmp_path / "again.npz", train))
    assert isinstance(resaved, PtychoData) and np.array_equal(resaved.diffraction, train.diffraction)

"""Fixtures for the data-layer tests: a tiny valid dataset and the default simulation at 512 positions."""
import numpy as np
import pytest

from ptycho.data.simulate import SimulationSpec, simulate_dataset


@pytest.fixture(scope="session")
def dataset_512():
    """(train, test) of the default SimulationSpec at 512 positions (384 train, 128 test) instead of
    the default 2048: the same object kind, probe, scan step and noise in a quarter of the time
    (simulated once per session, < 1 s)."""
    return simulate_dataset(SimulationSpec(n_images=512))


@pytest.fixture
def valid_arrays():
    """NPZ-keyed arrays of a valid 3-image, N = 64 dataset (all optional keys present)."""
    rng = np.random.default_rng(0)
    n, N = 3, 64
    return {
        "diffraction": rng.random((n, N, N)).astype(np.float32),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
        "xcoords": np.array([40.0, 50.5, 61.25]),
        "ycoords": np.array([41.0, 45.5, 52.75]),
        "objectGuess": np.ones((128, 128), dtype=np.complex64),
        "Y": np.ones((n, N, N), dtype=np.complex64),
        "scan_index": np.arange(n, dtype=np.int64),
        "xcoords_start": np.array([40.0, 50.0, 61.0]),
        "ycoords_start": np.array([41.0, 45.0, 52.0]),
    }

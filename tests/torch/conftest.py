"""Shared fixtures of the PyTorch-port tests: a small simulated dataset and its groups."""
import numpy as np
import pytest
import torch

from ptycho.data.grouping import group_positions
from ptycho.data.normalization import dataset_intensity_scale
from ptycho.data.simulate import SimulationSpec, simulate_dataset

# torch's OpenMP threads busy-wait at barriers: with TensorFlow's thread pool (or any other
# process) on the same 2 cores, 2 torch threads run up to 10x slower than 1.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


@pytest.fixture(scope="session")
def small_dataset():
    """(train, test) PtychoData of a 64-image simulation at N = 64 (under a second)."""
    return simulate_dataset(SimulationSpec(n_images=64, seed=3))


@pytest.fixture(scope="session")
def intensity_scale(small_dataset):
    return dataset_intensity_scale(small_dataset[0].diffraction)


@pytest.fixture(scope="session")
def groups_by_gridsize(small_dataset):
    """{gridsize: Groups} of 8 groups (K = 7) over the train split, for gridsize 1 and 2."""
    train = small_dataset[0]
    return {g: group_positions(train.xcoords, train.ycoords, g, 7, 8, seed=1) for g in (1, 2)}


@pytest.fixture(scope="session")
def probe(small_dataset):
    return np.asarray(small_dataset[0].probe)

"""Fixtures for the model tests: a small simulated dataset and cached short training runs.

TensorFlow models are expensive to build and trace, so each configuration is built and
trained once per session and shared read-only by the tests that need it.
"""
from dataclasses import dataclass

import numpy as np
import pytest

from ptycho.data import grouping, normalization
from ptycho.data.batches import GroupedData, group_data
from ptycho.tf.model import PtychoPINN, build_model
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import ModelSpec, TrainSpec
from ptycho.stitching import canvas_size_for
from ptycho.tf.training import train

SMOKE_EPOCHS = 20  # one step per epoch on the same two groups


@dataclass
class SmokeRun:
    model: PtychoPINN
    history: dict
    data: GroupedData
    spec: ModelSpec
    probe: np.ndarray


@pytest.fixture(scope="session")
def sim():
    """(train, test) of a small simulated dataset: 96 train and 32 test positions, N = 64."""
    return simulate_dataset(SimulationSpec(n_images=128, seed=3))


@pytest.fixture(scope="session")
def sim_scale(sim):
    return normalization.dataset_intensity_scale(sim[0].diffraction)


@pytest.fixture(scope="session")
def make_spec(sim_scale):
    """make_spec(gridsize, *coords_relative, **overrides) -> narrow ModelSpec for the dataset."""
    return lambda gridsize, *coords, **overrides: small_spec(sim_scale, gridsize, *coords, **overrides)


def small_spec(sim_scale, gridsize, *coords_relative, **overrides):
    """A narrow (n_filters_scale 1) N = 64 spec whose canvas fits ``coords_relative``."""
    canvas = canvas_size_for(64, *coords_relative) if coords_relative else None
    settings = dict(gridsize=gridsize, n_filters_scale=1, intensity_scale=sim_scale, canvas_size=canvas)
    return ModelSpec(**{**settings, **overrides})


@pytest.fixture(scope="session")
def smoke_runs(sim, sim_scale):
    """run(gridsize, xla) -> SmokeRun: SMOKE_EPOCHS steps on one batch of 2 groups, cached."""
    cache = {}

    def run(gridsize, xla):
        if (gridsize, xla) not in cache:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("USE_XLA_TRANSLATE", "1" if xla else "0")
                cache[gridsize, xla] = _smoke_run(sim[0], sim_scale, gridsize)
        return cache[gridsize, xla]

    return run


def _smoke_run(train_data, scale, gridsize):
    groups = grouping.group_positions(train_data.xcoords, train_data.ycoords, gridsize, 7, 2, seed=1)
    data = group_data(train_data, groups, scale)
    spec = small_spec(scale, gridsize, groups.coords_relative)
    model = build_model(spec, train_data.probe)
    history = train(model, data, TrainSpec(max_epochs=SMOKE_EPOCHS, batch_size=2, validation_split=0.0))
    return SmokeRun(model, history, data, spec, train_data.probe)

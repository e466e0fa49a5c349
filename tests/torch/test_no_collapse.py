"""Regression guard for issue 8's collapse: after a short fit the network's output must depend
on its input and the physics loss must beat the constant object the data implies.

The collapsed network (Glorot kernels, raw-amplitude encoder input, lr 1e-3) ended every run
with 53-99% of its bottleneck channels dead, the same patch at every scan position (spread
across positions 0.008 against the truth's 0.070) and a Poisson NLL at the constant-object
floor; at these sizes the collapsed network's output spread was 4e-7 of the truth's, the fixed
network's 0.08 (it is still early in its fit: the spread grows with training). Run on the PyTorch port (the TF model runs the same arithmetic from the same initial
weights, see test_training_parity.py) at small sizes: gridsize 2, n_filters_scale 1.
"""
import dataclasses

import numpy as np
import pytest
import torch

from ptycho.data.batches import prepare_job_data
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.torch import ops, training
from ptycho.torch.model import build_model

pytestmark = [pytest.mark.torch, pytest.mark.slow]  # a fit on the default data
CENTRE = slice(24, 40)  # the best-lit 16 x 16 pixels of a 64 x 64 patch


@pytest.fixture(scope="module")
def fitted():
    train, test = simulate_dataset(SimulationSpec(n_images=256, seed=0))
    spec, grouped, _, _ = prepare_job_data(
        train, test, GroupingSpec(gridsize=2, neighbor_count=7, n_groups=96, seed=0),
        ModelSpec(gridsize=2, n_filters_scale=1, mae_weight=1.0))  # mae only to gather the true patches
    spec = dataclasses.replace(spec, mae_weight=0.0)
    model = build_model(spec, train.probe)
    bottleneck = {}
    model.encoder.register_forward_hook(lambda module, inputs, output: bottleneck.update(features=output))
    fit_data = dataclasses.replace(grouped, object=None)
    training.train(model, fit_data, TrainSpec(max_epochs=24, batch_size=8, validation_split=0.0))
    return model, grouped, spec, bottleneck


def _nll_of(model, grouped, obj):
    """Poisson NLL of object patches ``obj`` (B, N, N, C) through the model's own forward model."""
    coords = torch.from_numpy(grouped.coords_relative)
    illuminated = model.illuminated_patches(obj, coords) * model.probe
    predicted = ops.pad_and_diffract(illuminated) * torch.exp(model.log_scale.detach())
    return float(training.poisson_nll(torch.from_numpy(grouped.intensity), predicted**2))


def test_the_fit_beats_the_constant_object_and_the_output_follows_the_input(fitted):
    model, grouped, spec, bottleneck = fitted
    model.eval()
    with torch.no_grad():
        outputs = model(torch.from_numpy(grouped.diffraction), torch.from_numpy(grouped.coords_relative))
        fitted_nll = float(training.poisson_nll(torch.from_numpy(grouped.intensity), outputs["intensity"]))
        constant = torch.full(outputs["object"].shape, spec.initial_amplitude, dtype=torch.complex64)
        constant_nll = _nll_of(model, grouped, constant)
        truth_nll = _nll_of(model, grouped, torch.from_numpy(grouped.object))
    assert truth_nll < constant_nll  # the physics separates the truth from the constant
    assert fitted_nll < constant_nll, (fitted_nll, constant_nll, truth_nll)

    amplitude = np.abs(outputs["object"].numpy())[:, CENTRE, CENTRE, :]
    truth = np.abs(grouped.object)[:, CENTRE, CENTRE, :]
    spread, true_spread = amplitude.std(axis=0).mean(), truth.std(axis=0).mean()
    assert spread > 0.05 * true_spread, (spread, true_spread)  # collapsed here: 4e-7x

    dead = (bottleneck["features"].amax(dim=(0, 2, 3)) <= 0).float().mean().item()
    assert dead < 0.2, dead  # collapsed: 0.53-0.99

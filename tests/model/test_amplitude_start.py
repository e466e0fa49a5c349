"""Issue 22, robustness: the network starts at the energy the data imply, whatever their scale.

Data from another simulator had an object amplitude of 0.3-9.4 and a differently normalised probe;
the amplitude head's sigmoid starts within (0.05, 0.95), and exp(log_scale) had to learn the rest at
about lr = 1e-4 in log per step: the reconstruction was worse than a constant. ``ModelSpec.amplitude_scale``
now carries the factor from the start (``architecture.amplitude_start``).
"""
import dataclasses

import numpy as np
import pytest

from ptycho import architecture
from ptycho.data.batches import prepare_job_data
from ptycho.tf.model import build_model
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec


def starting_energy_ratio(train, test, gridsize):
    spec, grouped, _, _ = prepare_job_data(train, test, GroupingSpec(gridsize=gridsize, n_groups=8),
                                           ModelSpec(gridsize=gridsize, use_xla_translate=False))
    model = build_model(spec, train.probe)
    batch = grouped.take(slice(0, 8))
    predicted = model(batch.inputs())["intensity"].numpy()
    return float(predicted.sum() / batch.intensity.sum()), spec


@pytest.mark.parametrize("variant", ["default", "bright object", "probe scaled down", "dim object"])
@pytest.mark.parametrize("gridsize", [1, 2])
def test_the_network_starts_at_the_data_energy(variant, gridsize):
    settings = {"bright object": {"amplitude_range": (1.0, 10.0)}, "dim object": {"amplitude_range": (0.001, 0.01)}}
    train, test = simulate_dataset(SimulationSpec(n_images=48, seed=2, **settings.get(variant, {})))
    if variant == "probe scaled down":  # the same measurements, a probe normalised otherwise
        train, test = (dataclasses.replace(d, probe=d.probe / 20) for d in (train, test))
    ratio, spec = starting_energy_ratio(train, test, gridsize)
    assert ratio == pytest.approx(1.0, abs=0.08), (variant, ratio, spec.initial_amplitude, spec.amplitude_scale)
    low, high = architecture.AMPLITUDE_START_RANGE
    assert low <= spec.initial_amplitude <= high
    assert (spec.amplitude_scale == 1.0) == (variant == "default")


def test_in_range_data_keep_the_sigmoid_alone():
    probe = np.ones((64, 64), np.complex64)
    assert architecture.amplitude_start(0.6 * np.ones((3, 64, 64)), probe) == (pytest.approx(0.6), 1.0)
    a0, scale = architecture.amplitude_start(3.0 * np.ones((3, 64, 64)), probe)
    assert a0 == architecture.AMPLITUDE_OUTSIDE_START and a0 * scale == pytest.approx(3.0)

"""Simulated variants (docs/simulated-variants.md) from the runner's config: compose, validate, reach the simulator."""
from dataclasses import asdict

import pytest
from hydra.errors import ConfigCompositionException

from ptycho.data import simulate
from runners.dataset_schema import AmplitudeUnits, ProbeKind
from runners.schema import to_spec

VARIANT = ["dataset.simulation.amplitude_range=[1,10]", "dataset.simulation.probe_kind=defocus",
           "dataset.simulation.amplitude_units=counts"]


def test_the_default_config_is_the_default_spec_and_keeps_its_cache_name(compose_phase):
    simulation = to_spec(compose_phase()).dataset.simulation
    assert simulation.amplitude_range is None
    assert (simulation.probe_kind, simulation.amplitude_units) == (ProbeKind.default, AmplitudeUnits.normalised)
    spec = simulate.SimulationSpec(**asdict(simulation))
    assert simulate.spec_hash(spec) == simulate.spec_hash(simulate.SimulationSpec(n_images=2048))


@pytest.mark.parametrize("dataset", ["simulated", "lines"])
def test_variant_overrides_reach_the_simulator_as_the_same_spec(compose_phase, dataset):
    simulation = to_spec(compose_phase([f"dataset={dataset}", *VARIANT])).dataset.simulation
    spec = simulate.SimulationSpec(**asdict(simulation))
    kind = "lines" if dataset == "lines" else "mixed"
    expected = simulate.SimulationSpec(n_images=2048, object_kind=kind, amplitude_range=(1.0, 10.0),
                                       probe_kind="defocus", amplitude_units="counts")
    assert spec == expected and simulate.spec_hash(spec) == simulate.spec_hash(expected)


@pytest.mark.parametrize("value", ["[1,0.5]", "[0,1]", "[1]", "[1,2,3]"])
def test_a_bad_amplitude_range_is_refused_naming_the_key(compose_phase, value):
    with pytest.raises(ValueError, match=r"^dataset\.simulation\.amplitude_range: must be"):
        to_spec(compose_phase([f"dataset.simulation.amplitude_range={value}"]))


@pytest.mark.parametrize("key, value, choices", [("probe_kind", "gauss", "default, disk, defocus"),
                                                  ("amplitude_units", "photons", "normalised, counts")])
def test_a_bad_choice_fails_at_composition_naming_the_key_and_choices(compose_phase, key, value, choices):
    with pytest.raises(ConfigCompositionException) as caught:
        compose_phase([f"dataset.simulation.{key}={value}"])
    message = str(caught.value.__cause__)
    assert f"dataset.simulation.{key}" in message and choices in message


@pytest.mark.parametrize("overrides, expected", [
    ([], 1e9),
    (["dataset.simulation.nphotons=1e4"], 1e4),  # the loss works at the photons the data were made with
    (["dataset.simulation.nphotons=1e4", "dataset.nphotons=1e6"], 1e6),  # an explicit level wins
    (["dataset.train_data_file=a.npz", "dataset.test_data_file=b.npz"], None),  # files that do not say
])
def test_the_loss_works_at_the_simulated_photon_level(compose_phase, overrides, expected):
    from runners.inputs.datasets import loss_photons
    assert loss_photons(to_spec(compose_phase(overrides)).dataset) == expected

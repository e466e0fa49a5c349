"""dataset=lines: composes, validates, and the C1 data step simulates the lines object."""
from dataclasses import asdict
from types import SimpleNamespace

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from ptycho.data import phantoms, simulate
from ptycho.data.npz import load_npz
from runners.phases.c1 import C1Run
from runners.dataset_schema import DatasetSource, ObjectKind
from runners.schema import to_spec


def test_dataset_lines_composes_into_the_simulated_default_with_the_lines_object(compose_phase):
    lines = to_spec(compose_phase(["dataset=lines"])).dataset
    default = to_spec(compose_phase()).dataset
    assert (lines.name, lines.source) == ("lines", DatasetSource.simulated)
    assert lines.simulation.object_kind is ObjectKind.lines
    assert default.simulation.object_kind is ObjectKind.mixed
    different = {k for k, v in asdict(lines.simulation).items() if asdict(default.simulation)[k] != v}
    assert different == {"object_kind"}


def test_schema_value_reaches_the_simulator_as_the_same_spec(compose_phase):
    simulation = to_spec(compose_phase(["dataset=lines"])).dataset.simulation
    from_config = simulate.SimulationSpec(**asdict(simulation))
    assert simulate.spec_hash(from_config) == simulate.spec_hash(simulate.SimulationSpec(object_kind="lines", n_images=2048))


def test_a_bad_object_kind_fails_at_composition_naming_the_key_and_choices(compose_phase):
    with pytest.raises(ConfigCompositionException) as caught:
        compose_phase(["dataset=lines", "dataset.simulation.object_kind=spiral"])
    message = str(caught.value.__cause__)
    assert "dataset.simulation.object_kind" in message and "mixed, lines" in message


def test_the_data_step_simulates_and_caches_the_lines_object(compose_phase, tmp_path):
    spec = to_spec(compose_phase(["dataset=lines", f"dataset.cache_dir={tmp_path / 'cache'}"]))
    step = SimpleNamespace(spec=spec, job=SimpleNamespace(launch_dir=tmp_path))
    train_path, test_path = C1Run._dataset_files(step)
    expected_hash = simulate.spec_hash(simulate.SimulationSpec(object_kind="lines", n_images=2048))
    assert train_path.name == f"simulated_{expected_hash}_train.npz" and test_path.is_file()
    train = load_npz(train_path)
    assert np.all(train.object_guess.imag == 0) and np.abs(train.object_guess).min() >= phantoms.LINES_BACKGROUND - 1e-6
    assert (train.n_images, train.N) == (1536, 64)

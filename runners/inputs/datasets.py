"""What a phase job reads: the dataset's files (given, converted from CXI, or simulated), checked
against the C1 settings before any work, and how the record names them."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from runners.evidence.outcome import display_path
from runners.inputs import cxi as cxi_input
from runners.dataset_schema import DataFormat
from runners.schema import PhaseConfig, PositionSet


def dataset_files(spec: PhaseConfig, launch_dir: Path) -> tuple[Path, Path]:
    """(train, test) NPZ paths of ``spec.dataset``: the files given, or the simulated ones (made on first use)."""
    dataset = spec.dataset
    if dataset.format is DataFormat.cxi:  # converted into NPZ files of the contract (runners/inputs/cxi.py)
        return cxi_input.converted_paths(spec, launch_dir)
    if dataset.uses_files:
        return launch_dir / dataset.train_data_file, launch_dir / dataset.test_data_file
    from ptycho.data.simulate import SimulationSpec, ensure_simulated_dataset

    return ensure_simulated_dataset(SimulationSpec(**asdict(dataset.simulation)), launch_dir / dataset.cache_dir)


def configured_dataset(spec: PhaseConfig, launch_dir: Path) -> dict[str, str]:
    """The record's dataset before the data step: the files given, or the simulation's cache folder
    (the data step adds the sha1s)."""
    dataset = spec.dataset
    if dataset.uses_files:
        return {"name": dataset.name, "train": display_path(launch_dir / dataset.train_data_file, launch_dir),
                "test": display_path(launch_dir / dataset.test_data_file, launch_dir)}
    return {"name": dataset.name, "simulated_in": display_path(launch_dir / dataset.cache_dir, launch_dir)}


def check_dataset_size(spec: PhaseConfig, launch_dir: Path) -> None:
    """For data files: n_images and the groups must fit the train file (read from its .npy
    headers, never its arrays).

    A file that breaks the data contract is left to the data step, which reports it as a blocker.
    """
    if not spec.dataset.uses_files:
        return
    from ptycho.data.contract import DataContractError, check_layout
    from ptycho.data.npz import read_npz_headers

    path = launch_dir / spec.dataset.train_data_file
    try:
        if spec.dataset.format is DataFormat.cxi:
            from ptycho.data.cxi_file import frame_count

            n_positions = frame_count(path)
        else:
            n_positions, _ = check_layout(read_npz_headers(path), str(path))
    except DataContractError:
        return
    settings = spec.c1
    source = f"positions in {spec.dataset.train_data_file}"
    if settings.n_images is not None and settings.n_images > n_positions:
        raise ValueError(f"c1.n_images: must be <= {n_positions} ({source}); got {settings.n_images}")
    settings.check_against(settings.n_images or n_positions, source)


def loss_photons(dataset, cxi_inputs=None) -> float | None:
    """Photons per pattern the network's loss works at: ``dataset.nphotons`` when given, else what the
    data were made with (a CXI scan's mean counts per frame, a simulation's ``nphotons``); None leaves
    the core's default (``ptycho.data.batches.DEFAULT_NPHOTONS``) for files that do not say."""
    if dataset.nphotons is not None:
        return dataset.nphotons
    if cxi_inputs is not None:
        return cxi_inputs.photons_per_frame
    if dataset.simulation is not None and not dataset.uses_files:
        return dataset.simulation.nphotons
    return None


def reference_data(loaded: dict, positions: PositionSet, key: str = "c3.positions"):
    """The PtychoData a phase reconstructs: ``loaded['test']``, ``loaded['train']`` or both joined
    (``key``: the setting, for the error)."""
    if positions is not PositionSet.all:
        return loaded[positions.value]
    import numpy as np

    from ptycho.data.contract import PtychoData

    train, test = loaded["train"], loaded["test"]
    if train.N != test.N or not np.array_equal(train.probe, test.probe):
        raise ValueError(f"{key}=all: the train and test files must share N and the probe; "
                         f"reconstruct them one at a time with {key}=train or test")
    return PtychoData(
        diffraction=np.concatenate([train.diffraction, test.diffraction]), probe=train.probe,
        xcoords=np.concatenate([train.xcoords, test.xcoords]), ycoords=np.concatenate([train.ycoords, test.ycoords]),
        object_guess=train.object_guess,
    )

"""What a phase job writes, for the disk pre-flight (``ptycho.disk_preflight``, ``runners.process.diskfull``).

:func:`disk_needs` sizes a C1 job's outputs; C3 shares the dataset's part
(:func:`data_disk_needs`) and every phase the MLflow store's (:func:`store_disk_needs`).
:func:`written_folders` names the folders whose partial files a full disk removes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

import numpy as np
import psutil

from ptycho import disk_preflight
from runners import tracking
from runners.evidence import hub
from runners.schema import PhaseConfig


def disk_needs(spec: PhaseConfig, launch_dir: Path, slot: hub.HubSlot) -> list[disk_preflight.DiskNeed]:
    """What a C1 job will write, for the disk pre-flight: the simulated dataset when its cache
    lacks it, the run's outputs in the slot (sized from the simulation, or from the files'
    headers and positions), its rows in a SQLite MLflow store. Empty for data files that cannot
    be read: the data step reports them."""
    found = data_disk_needs(spec, launch_dir)
    if found is None:
        return []
    N, canvas, needs = found
    outputs = disk_preflight.run_outputs(
        slot.run_dir, slot.bundle_dir, slot.cli_log.parent, N=N, gridsize=spec.c1.gridsize,
        n_filters_scale=spec.c1.model.n_filters_scale, canvas_px=canvas, setting="hub.root")
    return needs + within_memory(outputs) + store_disk_needs(spec, launch_dir)


def data_disk_needs(spec: PhaseConfig, launch_dir: Path) -> tuple[int, int, list[disk_preflight.DiskNeed]] | None:
    """(N, the canvas side in pixels, [the simulated dataset when its cache lacks it]) of ``spec.dataset``
    (C1 and C3); None for data files that cannot be read."""
    from ptycho import preflight
    from ptycho.data.contract import DataContractError
    from ptycho.data.simulate import SimulationSpec, cached_dataset_paths

    needs = []
    dataset = spec.dataset
    if dataset.uses_files:
        try:
            test = preflight.inspect_file(launch_dir / dataset.test_data_file)
        except (DataContractError, OSError, ValueError):
            return None
        N, canvas = test.N, int(max(np.ptp(test.xcoords), np.ptp(test.ycoords))) + 2 * test.N
    else:
        simulation = SimulationSpec(**asdict(dataset.simulation))
        N, canvas = simulation.N, simulation.object_side + 2 * simulation.N
        cache = launch_dir / dataset.cache_dir
        if not all(path.is_file() for path in cached_dataset_paths(simulation, cache)):
            needs.append(disk_preflight.DiskNeed(
                "simulated dataset", cache, disk_preflight.simulated_dataset_bytes(
                    simulation.n_images, simulation.n_test, N, simulation.object_side), "dataset.cache_dir"))
    return N, canvas, needs


def within_memory(outputs: list[disk_preflight.DiskNeed]) -> list[disk_preflight.DiskNeed]:
    """``outputs`` capped at this machine's memory. An output larger than that is never made: the data
    step's memory pre-flight refuses that job and names its cause (a far scan position, too wide a
    network), which a disk figure would hide."""
    ceiling = psutil.virtual_memory().total
    return [dataclasses.replace(need, bytes=min(need.bytes, ceiling)) for need in outputs]


def store_disk_needs(spec: PhaseConfig, launch_dir: Path) -> list[disk_preflight.DiskNeed]:
    """A run's rows in a SQLite MLflow store (C1, C2, C3); none for a tracking server."""
    store = tracking.sqlite_file(tracking.absolute_uri(spec.tracking.uri, launch_dir))
    if store is None:
        return []
    return [disk_preflight.DiskNeed("MLflow store", store.parent, disk_preflight.TRACKING_STORE_BYTES, "tracking.uri")]


def store_folder(spec: PhaseConfig, launch_dir: Path) -> list[Path]:
    """[the SQLite store's folder], or [] for a tracking server: where a job sets space aside for its MLflow end."""
    store = tracking.sqlite_file(tracking.absolute_uri(spec.tracking.uri, launch_dir))
    return [store.parent] if store else []


def written_folders(spec: PhaseConfig, launch_dir: Path, slot: hub.HubSlot, cache: bool = True) -> list[Path]:
    """The folders a job writes into: its slot, the hub's shared files, the dataset cache (``cache``: when
    it simulates), the store, the launch folder."""
    cache_dir = [launch_dir / spec.dataset.cache_dir] if cache and not spec.dataset.uses_files else []
    return [slot.dir, slot.root, *cache_dir, *store_folder(spec, launch_dir), launch_dir]

"""Typed schema of the ``dataset`` config group (runners/conf/dataset/): where the train and test
files come from, simulated (:class:`SimulationConfig`) or read from NPZ or CXI files.

Each default is read from the core's own dataclass (``SimulationSpec``, ``CxiConversion``), so the
two cannot disagree; the core checks the values again when the runner builds it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, List, Optional

from omegaconf import MISSING

from ptycho.data.contract import SUPPORTED_N
from ptycho.data.cxi import CxiConversion
from ptycho.data.simulate import SimulationSpec


class DatasetSource(str, Enum):
    simulated = "simulated"
    files = "files"


class DataFormat(str, Enum):
    """How data files are read: the NPZ contract (``ptycho.data.npz``) or CXI (``ptycho.data.cxi``, converted)."""

    npz = "npz"
    cxi = "cxi"


class ObjectKind(str, Enum):
    """Simulated objects (``ptycho.data.phantoms.OBJECT_KINDS``)."""

    mixed = "mixed"
    lines = "lines"


class ProbeKind(str, Enum):
    """Simulated probes (``ptycho.data.phantoms.PROBE_KINDS``)."""

    default = "default"
    disk = "disk"
    defocus = "defocus"


class AmplitudeUnits(str, Enum):
    """How simulated diffraction is stored (``ptycho.data.simulate.AMPLITUDE_UNITS``)."""

    normalised = "normalised"
    counts = "counts"


def _require(ok: bool, key: str, allowed: str, got: object) -> None:
    if not ok:
        raise ValueError(f"{key}: must be {allowed}; got {got!r}")


@dataclass
class SimulationConfig:
    """The fields of ``ptycho.data.simulate.SimulationSpec``, with its defaults."""

    _key: ClassVar[str] = "dataset.simulation"
    N: int = SimulationSpec.N
    n_images: int = SimulationSpec.n_images
    nphotons: float = SimulationSpec.nphotons
    seed: int = SimulationSpec.seed
    object_size: Optional[int] = SimulationSpec.object_size
    test_fraction: float = SimulationSpec.test_fraction
    scan: str = SimulationSpec.scan
    scan_step_px: Optional[float] = SimulationSpec.scan_step_px
    object_kind: ObjectKind = ObjectKind(SimulationSpec.object_kind)
    amplitude_range: Optional[List[float]] = SimulationSpec.amplitude_range
    probe_kind: ProbeKind = ProbeKind(SimulationSpec.probe_kind)
    amplitude_units: AmplitudeUnits = AmplitudeUnits(SimulationSpec.amplitude_units)

    def __post_init__(self) -> None:
        _require(self.N in SUPPORTED_N, f"{self._key}.N", "one of " + ", ".join(map(str, SUPPORTED_N)), self.N)
        _require(self.amplitude_range is None or (
            len(self.amplitude_range) == 2 and all(math.isfinite(v) for v in self.amplitude_range)
            and 0 < self.amplitude_range[0] < self.amplitude_range[1]),
            f"{self._key}.amplitude_range", "null or [lo, hi] with 0 < lo < hi", self.amplitude_range)
        _require(self.n_images >= 2, f"{self._key}.n_images", ">= 2", self.n_images)
        _require(self.nphotons > 0, f"{self._key}.nphotons", "> 0", self.nphotons)
        _require(0 < self.test_fraction < 1, f"{self._key}.test_fraction", "in (0, 1)", self.test_fraction)

    @property
    def n_train(self) -> int:
        """Images in the train split (the simulator puts round(test_fraction * n) in test)."""
        return self.n_images - int(round(self.test_fraction * self.n_images))


@dataclass
class CxiConfig:
    """The fields of ``ptycho.data.cxi.CxiConversion``, with its defaults, plus ``probe_file``: a
    probe on the converted grid (.npy complex (N, N), or .npz with ``probeGuess``) used instead of
    the file's. Relative paths: from the launch directory."""

    N: Optional[int] = CxiConversion.N
    binning: int = CxiConversion.binning
    center: Optional[List[float]] = CxiConversion.center
    mask_fill: str = CxiConversion.mask_fill
    max_masked_fraction: float = CxiConversion.max_masked_fraction
    clip_negative: bool = CxiConversion.clip_negative
    probe_file: Optional[str] = None
    probe_fallback: Optional[str] = CxiConversion.probe_fallback


@dataclass
class DatasetConfig:
    """Where the train/test files come from (``format``: npz, or cxi converted by runners/inputs/cxi.py).
    Relative paths: from the launch directory."""

    name: str = MISSING
    source: DatasetSource = MISSING
    train_data_file: Optional[str] = None
    test_data_file: Optional[str] = None
    cache_dir: str = "datasets/simulated"
    nphotons: Optional[float] = None
    simulation: Optional[SimulationConfig] = None
    format: DataFormat = DataFormat.npz
    cxi: Optional[CxiConfig] = None

    def __post_init__(self) -> None:
        given = (self.train_data_file is not None, self.test_data_file is not None)
        if any(given) and not all(given):
            missing = "dataset.test_data_file" if given[0] else "dataset.train_data_file"
            raise ValueError(f"{missing}: must be set too when the other data file is set")
        if self.format is DataFormat.cxi:
            _require(all(given), "dataset.train_data_file", "set (with dataset.test_data_file) for format=cxi", None)
            if self.cxi is None:
                self.cxi = CxiConfig()
        if self.source is DatasetSource.files:
            _require(all(given), "dataset.train_data_file", "set (with dataset.test_data_file) for source=files", None)
        else:
            _require(
                all(given) or self.simulation is not None, "dataset.simulation",
                "set for source=simulated (or give both data files)", None,
            )
        _require(self.nphotons is None or self.nphotons > 0, "dataset.nphotons", "null or > 0", self.nphotons)

    @property
    def uses_files(self) -> bool:
        return self.train_data_file is not None

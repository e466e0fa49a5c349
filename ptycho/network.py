"""A trained network as a folder the core can apply again: its card, its weights and its probe.

``pipeline.run_job`` writes, beside the weights in ``run_dir``, the *network card* ``network.json``
(:func:`write_card`) and the probe the network trained with, ``probe.npy``. The card holds what
applying the network needs besides its weights (docs/design.md §4 for the scales; docs/runner.md,
"Reconstruct with a trained network", for the phase that reads it):

    format, version           "ptycho-network", CARD_VERSION
    backend, weights          "tensorflow" (model.weights.h5) or "pytorch" (model.pt)
    probe                     the probe's file name, (N, N) complex64
    model_spec                the resolved ``ModelSpec``: N, gridsize, the intensity scale s,
                              the encoder's input RMS, the starting amplitude and its scale
    N, gridsize               the model_spec's, for a reader that looks no further
    grouping                  neighbor_count and seed of the groups (``stitching.inference_groups``)
    stitching                 phase_offsets and stitch_from (``pipeline.run_job``'s)
    training_data             nphotons and mean_frame_energy (mean_n sum A_file**2 of the training
                              subset, so s = sqrt(nphotons / mean_frame_energy)), probe_energy
                              (sum |P|**2)

A caller may add sections (:func:`update_card`; the runner adds ``provenance``: code state, MLflow
run, dataset). :func:`load_network` reads such a folder back; :func:`check_serves` says whether
it can be applied to a dataset: data it cannot serve raise :class:`NetworkMismatchError` naming
the mismatch, data it can serve but did not train on give warnings. Nothing here imports
TensorFlow or PyTorch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptycho.data.contract import PtychoData
from ptycho.spec import GroupingSpec, ModelSpec

CARD_FILE = "network.json"
PROBE_FILE = "probe.npy"
CARD_FORMAT = "ptycho-network"
CARD_VERSION = 1
BACKENDS = ("tensorflow", "pytorch")
# Beyond these the data are called far from the training data (a warning, not an error): the
# frames' mean energy off by more than x2 either way (the network sees its inputs at another
# scale), the probe off by more than 5% in relative L2 norm.
PHOTON_SCALE_FACTOR = 2.0
PROBE_RELATIVE_DIFFERENCE = 0.05


class NetworkError(ValueError):
    """A network folder that cannot be read: a missing or malformed card, weights or probe file."""


class NetworkMismatchError(ValueError):
    """Data the network cannot serve (another N, probe shape, too few positions for its groups)."""


@dataclass(frozen=True)
class TrainedNetwork:
    """A network folder read back: ``card`` (the JSON), ``spec`` (its ModelSpec), ``probe`` (N, N) complex64."""

    folder: Path
    card: dict
    spec: ModelSpec
    probe: np.ndarray

    @property
    def backend(self) -> str:
        return self.card["backend"]

    @property
    def weights_path(self) -> Path:
        return self.folder / self.card["weights"]

    @property
    def grouping(self) -> GroupingSpec:
        """The grouping of its inference groups (every position a seed)."""
        grouping = self.card["grouping"]
        return GroupingSpec(gridsize=self.spec.gridsize, neighbor_count=grouping["neighbor_count"],
                            n_groups=None, seed=grouping["seed"])

    @property
    def phase_offsets(self) -> str:
        return self.card["stitching"]["phase_offsets"]

    @property
    def stitch_from(self) -> str:
        return self.card["stitching"]["stitch_from"]

    @property
    def mean_frame_energy(self) -> float:
        """mean_n sum_xy A_file**2 of the training subset."""
        return float(self.card["training_data"]["mean_frame_energy"])


def write_card(run_dir: Path, *, backend: str, weights: Path, spec: ModelSpec, probe: np.ndarray,
               grouping: GroupingSpec, phase_offsets: str, stitch_from: str, nphotons: float) -> Path:
    """Write ``network.json`` and ``probe.npy`` into ``run_dir`` (beside ``weights``); the card's path."""
    probe = np.asarray(probe, np.complex64)
    _save_array(run_dir / PROBE_FILE, probe)
    card = {
        "format": CARD_FORMAT, "version": CARD_VERSION, "backend": backend, "weights": Path(weights).name,
        "probe": PROBE_FILE, "model_spec": dataclasses.asdict(spec), "N": spec.N, "gridsize": spec.gridsize,
        "grouping": {"neighbor_count": grouping.neighbor_count, "seed": grouping.seed},
        "stitching": {"phase_offsets": phase_offsets, "stitch_from": stitch_from},
        "training_data": {"nphotons": float(nphotons), "mean_frame_energy": float(nphotons) / spec.intensity_scale**2,
                          "probe_energy": float(np.sum(np.abs(probe) ** 2))},
    }
    return _write_json(run_dir / CARD_FILE, card)


def update_card(run_dir: Path, sections: dict) -> Path:
    """Add (or replace) top-level ``sections`` of the card in ``run_dir``."""
    path = Path(run_dir) / CARD_FILE
    card = json.loads(path.read_text(encoding="utf-8"))
    card.update(sections)
    return _write_json(path, card)


def load_network(folder: str | os.PathLike) -> TrainedNetwork:
    """The network in ``folder`` (its card, weights and probe); NetworkError naming the file that is
    missing or malformed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NetworkError(f"{folder}: no such folder (a network folder holds {CARD_FILE}, the weights and "
                           f"{PROBE_FILE})")
    card_path = folder / CARD_FILE
    if not card_path.is_file():
        raise NetworkError(f"{card_path}: no network card; a run folder of a C1 run of this version holds one "
                           "beside the weights (rerun the training to get it)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        _check_card(card)
        spec = ModelSpec(**card["model_spec"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise NetworkError(f"{card_path}: not a network card of format {CARD_FORMAT} v{CARD_VERSION}: "
                           f"{type(exc).__name__}: {exc}") from exc
    if (card["N"], card["gridsize"]) != (spec.N, spec.gridsize):
        raise NetworkError(f"{card_path}: N={card['N']}, gridsize={card['gridsize']} differ from its model_spec's "
                           f"N={spec.N}, gridsize={spec.gridsize}")
    weights = folder / card["weights"]
    if not weights.is_file():
        raise NetworkError(f"{weights}: the network's weights file is missing (named by {card_path})")
    probe = _load_probe(folder / card["probe"], spec.N)
    return TrainedNetwork(folder, card, spec, probe)


def _check_card(card) -> None:
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise ValueError(f"'format' must be {CARD_FORMAT!r}")
    if card.get("version") != CARD_VERSION:
        raise ValueError(f"'version' must be {CARD_VERSION}; got {card.get('version')!r}")
    if card.get("backend") not in BACKENDS:
        raise ValueError(f"'backend' must be one of {', '.join(BACKENDS)}; got {card.get('backend')!r}")
    missing = [key for key in ("weights", "probe", "grouping", "stitching", "training_data", "N", "gridsize")
               if key not in card]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(missing)}")


def _load_probe(path: Path, N: int) -> np.ndarray:
    try:
        probe = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise NetworkError(f"{path}: the network's probe cannot be read: {exc}") from exc
    if probe.shape != (N, N) or not np.iscomplexobj(probe):
        raise NetworkError(f"{path}: the network's probe must be ({N}, {N}) complex; got {probe.shape} {probe.dtype}")
    return probe.astype(np.complex64)


def check_serves(network: TrainedNetwork, data: PtychoData, source: str) -> list[str]:
    """Whether ``network`` can reconstruct ``data`` (named ``source``): NetworkMismatchError naming
    what differs where it cannot; the warnings (data far from its training data) where it can."""
    spec = network.spec
    if data.N != spec.N:
        raise NetworkMismatchError(f"{source}: patterns of N={data.N} px, but the network was trained on "
                                   f"N={spec.N} (it serves only N={spec.N})")
    if data.probe.shape != network.probe.shape:
        raise NetworkMismatchError(f"{source}: probe of shape {data.probe.shape}, but the network's is "
                                   f"{network.probe.shape}")
    neighbors = network.grouping.neighbor_count
    if spec.gridsize > 1 and data.n_images < spec.channels:
        raise NetworkMismatchError(f"{source}: {data.n_images} positions, but the network's groups at gridsize="
                                   f"{spec.gridsize} take {spec.channels} (neighbor_count {neighbors})")
    return scale_warnings(network, data)


def scale_warnings(network: TrainedNetwork, data: PtychoData) -> list[str]:
    """Warnings where ``data`` differ from the network's training data in photon scale or probe."""
    warnings = []
    energy = float(np.mean(np.sum(np.square(data.diffraction, dtype=np.float64), axis=(-2, -1))))
    ratio = energy / network.mean_frame_energy
    if not 1 / PHOTON_SCALE_FACTOR <= ratio <= PHOTON_SCALE_FACTOR:
        warnings.append(f"photon scale: the data's mean frame energy is {ratio:.3g}x the training data's "
                        f"(beyond {PHOTON_SCALE_FACTOR:g}x either way: the network sees inputs at a scale it did "
                        "not train on)")
    reference = np.linalg.norm(network.probe)
    difference = float(np.linalg.norm(data.probe.astype(np.complex128) - network.probe) / reference)
    if not math.isfinite(difference) or difference > PROBE_RELATIVE_DIFFERENCE:
        warnings.append(f"probe: the data's probe differs from the network's by {difference:.3g} (relative L2; "
                        f"beyond {PROBE_RELATIVE_DIFFERENCE:g}): the network assumes its own probe")
    return warnings


def _save_array(path: Path, array: np.ndarray) -> None:
    """Atomic np.save (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
    os.replace(temporary, path)


def _write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def refined_probe_stats(spec: ModelSpec, given: np.ndarray, refined: np.ndarray) -> dict:
    """stats.json's ``probe`` section with ``ModelSpec.refine_probe`` ({} without): the refined probe's total
    energy (the given one's, held fixed) and its change, ||P_refined - P_given|| / ||P_given||."""
    if not spec.refine_probe:
        return {}
    given = np.asarray(given, np.complex128)
    change = np.linalg.norm(np.asarray(refined, np.complex128) - given) / np.linalg.norm(given)
    return {"probe": {"refined": True, "energy": float(np.sum(np.abs(refined.astype(np.complex128)) ** 2)),
                      "change_relative": float(change)}}

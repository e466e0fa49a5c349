"""What one phase job's MLflow run holds (docs/design.md §9), and the names and keys the phases log it under.

Schema of one job's run (experiment = the initiative id, run name = the hub slot):

* params: the flattened resolved config (``c1.gridsize``...), values cut at
  ``tracker.MAX_PARAM_CHARS`` characters (old servers' limit; the full config is the
  ``hydra/`` artifact), logged in batches of 100;
* metrics: per-epoch history under the core's names (``loss``, ``poisson_nll``,
  ``val_loss``...; the PyTorch port uses the same) with ``nll_excess``/``val_nll_excess`` (the
  Poisson NLL per pixel above the data's own floor: 0 is a perfect fit, readable where the raw
  NLL of about -3e6 is not) and ``groups_per_s``; ``step_loss`` per training step;
  ``bundle.<stats.json key path>``, ``quality.<name>`` (with ``quality.amp_mae_to_floor``...:
  below 1 beats the constant object), ``throughput_groups_per_s``, ``timing.<step>_s``;
* tags: ``backend``, ``phase``, ``xla_mode``, ``xla.*`` (what TensorFlow saw), ``guard_status``,
  ``stats_sha1``, ``git_commit``, ``parity_key``, ``dataset.{train,test}_sha1``, ``slot``,
  ``status``, ``blocker`` (blocked runs only); ``mlflow.parentRunId`` for the jobs of a sweep;
  ``mlflow.note.content``, the run's description (title, status, hub section and paths); no
  tag is empty (``<empty>`` stands for an empty value);
* run name: the slot; a blocked run's gets `` [BLOCKED]`` added;
* inputs: the train and test files as datasets (digest = first 36 characters of the sha1);
* artifacts: ``bundle/``, ``logs/`` (CLI and guard log), ``hydra/`` (the job's .hydra folder).

Parity key: ``sha1(json.dumps({"dataset": {"train_sha1", "test_sha1"}, "params": {N,
gridsize, n_images, n_groups, neighbor_count, batch_size, max_epochs, seed}},
sort_keys=True, separators=(",", ":")))``; TF and PyTorch runs of the same data and
parameters share it, whatever the backend or XLA mode.
"""
from __future__ import annotations

import hashlib
import json
import math
from typing import Mapping

# Logged first in a run (as NaN until measured): MLflow's compare view plots a run's first metric
QUALITY_FIRST = ("quality.amp_mae_to_floor", "quality.phase_mae_to_floor")
PARITY_PARAMS = ("N", "gridsize", "n_images", "n_groups", "neighbor_count", "batch_size", "max_epochs", "seed")


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, object]:
    """Nested mappings as one level with dotted keys."""
    flat: dict[str, object] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def numeric_leaves(mapping: Mapping, prefix: str) -> dict[str, float]:
    """The finite numbers of a nested mapping as metrics ``<prefix><dotted key>``."""
    return {
        key: float(value)
        for key, value in flatten(mapping, prefix).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def parity_key(train_sha1: str, test_sha1: str, params: Mapping[str, object]) -> str:
    """The backend-independent key of a phase's data and parameters (module docstring)."""
    missing = [name for name in PARITY_PARAMS if name not in params]
    if missing:
        raise ValueError(f"parity key: missing parameters {missing}")
    payload = {
        "dataset": {"train_sha1": train_sha1, "test_sha1": test_sha1},
        "params": {name: params[name] for name in PARITY_PARAMS},
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

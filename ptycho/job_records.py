"""Backend-neutral records of a phase job: stats sections, throughput, timings, run files.

Shared by ``ptycho.workflow`` (TensorFlow) and ``ptycho.torch.workflow`` so both backends
write the same stats.json sections and run-directory files. numpy only.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np


def extra_stats(history, quality, n_groups_train, spec) -> dict:
    """stats.json sections; deterministic for a seeded run (no wall-clock values)."""
    final = {k: v[-1] for k, v in history.items() if k != "epoch_time_s"}
    return {
        "quality": quality,
        "history_final": final,
        "training": {"epochs": len(history["loss"]), "n_groups_train": n_groups_train,
                     "gridsize": spec.gridsize, "canvas_size": spec.canvas_size,
                     "data_intensity_scale": spec.intensity_scale},
    }


def throughput(history, n_groups: int) -> float:
    """Training groups per second: median over the epochs after the first (or the only one)."""
    times = history["epoch_time_s"]
    steady = times[1:] if len(times) > 1 else times
    return float(n_groups / np.median(steady))


def lap(start: float) -> tuple[float, float]:
    """(seconds since start, now) for step timings."""
    now = time.perf_counter()
    return now - start, now


def write_json(path: Path, document) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def save_npz(path: Path, **arrays) -> None:
    """Atomic np.savez (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    os.replace(temporary, path)

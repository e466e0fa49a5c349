"""Disk pre-flight of a phase job: refuse, before any work, a job whose files cannot fit.

Beside the memory pre-flight (``ptycho.preflight``). The caller lists what the job will write
as :class:`DiskNeed` entries (what, where, how many bytes, and the setting that moves it);
:func:`check_disk` groups them by file system and refuses with :class:`DiskSpaceError` when a
file system's free space (``statvfs``: the blocks an unprivileged writer may use) is below the
needs written there times DISK_MARGIN, plus DISK_RESERVE_BYTES left for the evidence (blocker,
section, logs). Nothing is written; the check takes a ``statvfs`` per target.

Estimates (bytes; upper bounds from shapes, not measurements):

    simulated dataset  per image N*N*(4 diffraction + 8 true patch) + 32 (positions, index),
                       plus the object side**2*8 and the probe N*N*8, per file
    weights            12 per parameter (the weights and Adam's two moments: Keras saves the
                       optimizer; PyTorch's state dict is a third of it) + WEIGHTS_OVERHEAD_BYTES
    reconstruction     the stitched canvas M_s**2 * 9 (complex64 and the coverage mask)
    debug bundle       the canvas M_s**2 * 8 and GRID_PATCHES patches N*N*8 (arrays.npz), and
                       BUNDLE_FIGURES_BYTES for the PNGs and JSON files
    comparison (C2)    COMPARISON_BYTES: comparison.json and comparison.png
    logs               LOG_BYTES (CLI and guard logs, history, timings)
    tracking store     TRACKING_STORE_BYTES in a local (SQLite) store's folder, given by the caller
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ptycho import architecture

DISK_MARGIN = 1.25  # the estimates' error, and what other writers add meanwhile
DISK_RESERVE_BYTES = 1 << 20  # left free for the evidence of the job (blocker, section, summary)
WEIGHTS_BYTES_PER_PARAMETER = 12
WEIGHTS_OVERHEAD_BYTES = 1 << 20  # HDF5 structure (measured 0.15 MB at the default)
BUNDLE_FIGURES_BYTES = 8 << 20  # five PNGs and the JSON files (measured about 1 MB at the default)
COMPARISON_BYTES = 4 << 20  # comparison.json and comparison.png (one figure of two bundles' panels)
LOG_BYTES = 4 << 20
TRACKING_STORE_BYTES = 4 << 20  # a run's rows in a local MLflow store (parameters, tags, up to 10,000 step losses)
GRID_PATCHES = 16  # patches the bundle keeps (plots.GRID_MAX_PATCHES)
BYTES_PER_MB = 10**6


@dataclass(frozen=True)
class DiskNeed:
    """``bytes`` the job writes as ``what`` under ``path`` (need not exist yet); ``setting`` names
    what moves it (e.g. ``hub.root``), for the message."""

    what: str
    path: Path
    bytes: int
    setting: str = ""


class DiskSpaceError(ValueError):
    """A file system has less free space than the job needs there; names the path, need and free space."""

    def __init__(self, message: str, path: Path, need_bytes: int, free_bytes: int):
        super().__init__(message)
        self.path, self.need_bytes, self.free_bytes = path, need_bytes, free_bytes


def check_disk(needs: list[DiskNeed]) -> dict[Path, tuple[int, int]]:
    """Refuse (DiskSpaceError) when the needs on a file system do not fit its free space (module
    docstring); returns {file system's first target: (bytes needed with margin and reserve, free bytes)}."""
    groups: dict[int, list[tuple[DiskNeed, Path]]] = {}
    for need in needs:
        existing = nearest_existing(need.path)
        groups.setdefault(os.stat(existing).st_dev, []).append((need, existing))
    found = {}
    for entries in groups.values():
        first, existing = entries[0]
        stats = os.statvfs(existing)
        free = stats.f_bavail * stats.f_frsize
        total = sum(need.bytes for need, _ in entries)
        required = int(total * DISK_MARGIN) + DISK_RESERVE_BYTES
        found[first.path] = (required, free)
        if required > free:
            raise _space_error(entries, existing, required, free)
    return found


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (where its files will land)."""
    path = Path(path).absolute()
    return next(candidate for candidate in (path, *path.parents) if candidate.exists())


def _space_error(entries: list[tuple[DiskNeed, Path]], existing: Path, required: int, free: int) -> DiskSpaceError:
    largest = max(entries, key=lambda entry: entry[0].bytes)[0]
    parts = "; ".join(f"{need.what} {_mb(need.bytes)} in {need.path}" for need, _ in entries)
    settings = sorted({need.setting for need, _ in entries if need.setting})
    move = f" or point {' / '.join(settings)} at a file system with room" if settings else ""
    message = (f"{largest.path}: not enough disk space: the job needs {_mb(required)} on the file system of "
               f"{existing} (with margin {DISK_MARGIN:g}x and {_mb(DISK_RESERVE_BYTES)} kept for its evidence: "
               f"{parts}), which has {_mb(free)} free; free space there{move}. Nothing was written")
    return DiskSpaceError(message, largest.path, required, free)


def simulated_dataset_bytes(n_images: int, n_test: int, N: int, object_side: int) -> int:
    """Both files of a simulated dataset (module docstring)."""
    per_file = object_side**2 * 8 + N * N * 8
    return n_images * (N * N * 12 + 32) + 2 * per_file


def weights_bytes(N: int, gridsize: int, n_filters_scale: int) -> int:
    """The saved weights of the model (module docstring), from ``architecture.conv_layers``."""
    layers = architecture.conv_layers(N, gridsize, n_filters_scale)
    parameters = sum(architecture.KERNEL_PX**2 * fan_in * filters + filters for fan_in, filters in layers.values())
    return parameters * WEIGHTS_BYTES_PER_PARAMETER + WEIGHTS_OVERHEAD_BYTES


def run_outputs(run_dir: Path, bundle_dir: Path, log_dir: Path, *, N: int, gridsize: int, n_filters_scale: int,
                canvas_px: int, setting: str = "") -> list[DiskNeed]:
    """What a phase job writes into its run folder, bundle and logs (module docstring)."""
    return [DiskNeed("model weights", run_dir, weights_bytes(N, gridsize, n_filters_scale), setting),
            *reconstruction_outputs(run_dir, bundle_dir, log_dir, N=N, canvas_px=canvas_px, setting=setting)]


def reconstruction_outputs(run_dir: Path, bundle_dir: Path, log_dir: Path, *, N: int, canvas_px: int,
                           setting: str = "") -> list[DiskNeed]:
    """What a job that reconstructs without a network (Phase C3) writes: :func:`run_outputs` but the weights."""
    return [
        DiskNeed("reconstruction", run_dir, canvas_px**2 * 9, setting),
        DiskNeed("debug bundle", bundle_dir, canvas_px**2 * 8 + GRID_PATCHES * N * N * 8 + BUNDLE_FIGURES_BYTES,
                 setting),
        DiskNeed("logs", log_dir, LOG_BYTES, setting),
    ]


def comparison_outputs(analysis_dir: Path, log_dir: Path, setting: str = "") -> list[DiskNeed]:
    """What a comparison (Phase C2) writes: comparison.json and its figure, and its logs. Bundles it
    downloads from MLflow are not counted: their size is known only once the runs are found."""
    return [DiskNeed("comparison", analysis_dir, COMPARISON_BYTES, setting),
            DiskNeed("logs", log_dir, LOG_BYTES, setting)]


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / BYTES_PER_MB:.3g} MB"

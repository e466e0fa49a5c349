"""One phase job: group, scale, build, train, infer, stitch and write the debug bundle.

:func:`run_phase_job` is the API the runner calls with explicit arguments. Steps:

1. data_prep: a spatially compact subset of ``grouping.n_images`` train positions
   (``grouping.compact_subset``), ``grouping.n_groups`` groups among them, inference groups
   with every test position as a seed, the dataset intensity scale s of the subset
   (``normalization``), and the canvas side from the actual offsets of all groups
   (``model.canvas_size_for``). Without ground truth (no ``Y``) the MAE and real-space
   loss weights are set to 0.
2. training (``training.train``); weights (``model.weights.h5``), ``history.json`` and the
   resolved ``model_spec.json`` go to ``run_dir``.
3. inference: object patches of every test group.
4. stitching (when ``do_stitching``): the global reconstruction and, with ground truth,
   its quality (``ptycho.quality``). Without stitching the canvas is the model's own
   reassembled canvas of the first test group. ``reconstruction.npz`` goes to ``run_dir``.
5. bundle: ``bundle.write_debug_bundle``; nothing is written to ``bundle_dir`` if any
   earlier step fails (the bundle writer itself is atomic).

History metric names (per epoch, lists of floats; the PyTorch port uses the same names):

    loss, poisson_nll          training loss (weighted total) and its Poisson NLL term
    amplitude_mae, realspace_mse   only when their weight is > 0 (ground truth needed)
    val_loss, val_poisson_nll, ... the same on the validation groups (when a split exists)
    intensity_scale            exp(log_scale) at the end of the epoch
    learning_rate              Adam's learning rate after the epoch's schedule update
    epoch_time_s               wall time of the epoch, validation included
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ptycho import bundle, grouping, job_records, inference, normalization
from ptycho.data import PtychoData
from ptycho.model import ModelSpec, build_model, canvas_size_for, save_weights
from ptycho.training import TrainSpec, group_data, split_validation, train

DEFAULT_NPHOTONS = 1e9
HISTORY_FILE = "history.json"
MODEL_SPEC_FILE = "model_spec.json"
RECONSTRUCTION_FILE = "reconstruction.npz"
NON_LOSS_CURVES = ("intensity_scale", "learning_rate", "epoch_time_s")
TIMING_KEYS = ("data_prep", "first_epoch", "training", "inference", "stitching", "bundle")


@dataclass(frozen=True)
class GroupingSpec:
    """gridsize g (C = g**2 per group); neighbor_count K; n_groups training groups;
    n_images: size of the compact train subset (None: all train positions); seed."""

    gridsize: int = 2
    neighbor_count: int = 7
    n_groups: int = 32
    n_images: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("gridsize", "neighbor_count", "n_groups"):
            _require_int(getattr(self, name), f"GroupingSpec.{name}", 1)
        if self.n_images is not None:
            _require_int(self.n_images, "GroupingSpec.n_images", 1)
        _require_int(self.seed, "GroupingSpec.seed", 0)


@dataclass(frozen=True)
class JobResult:
    """Outcome of :func:`run_phase_job`.

    history: per-epoch metrics (module docstring); stats_sha1: sha1 of the bundle's
    stats.json; quality: reconstruction metrics (empty without ground truth or stitching);
    throughput_groups_per_s: training groups per second, median over epochs after the
    first (the first epoch alone when there is only one); intensity_scale: final
    exp(log_scale); bundle_stats: the stats.json content; timings_s: seconds per step
    (data_prep, first_epoch, training, inference, stitching, bundle); model_spec: the
    resolved spec (data scale, canvas size) the weights belong to.
    """

    history: dict[str, list[float]]
    stats_sha1: str
    bundle_dir: Path
    weights_path: Path
    quality: dict[str, float]
    throughput_groups_per_s: float
    n_groups_train: int
    intensity_scale: float
    bundle_stats: dict
    timings_s: dict[str, float] = field(default_factory=dict)
    model_spec: ModelSpec | None = None


def run_phase_job(train_data: PtychoData, test_data: PtychoData, *, grouping: GroupingSpec,
                  model_spec: ModelSpec, train_spec: TrainSpec, run_dir: str | os.PathLike,
                  bundle_dir: str | os.PathLike, do_stitching: bool = True,
                  callbacks: Sequence = (), nphotons: float | None = None) -> JobResult:
    """Run one phase job (module docstring); raises before writing a bundle on any failure."""
    timings = {}
    clock = time.perf_counter()
    run_dir = Path(run_dir)
    spec, train_grouped, test_grouped, test_groups = prepare_job_data(
        train_data, test_data, grouping, model_spec, nphotons or DEFAULT_NPHOTONS)
    timings["data_prep"], clock = job_records.lap(clock)

    model = build_model(spec, train_data.probe)
    history = train(model, train_grouped, train_spec, callbacks)
    weights_path = _save_run(model, spec, history, run_dir)
    timings["training"], clock = job_records.lap(clock)
    timings["first_epoch"] = history["epoch_time_s"][0]

    # The training batch size: the convolution kernels built for training are reused, which
    # keeps inference fast and its memory small.
    patches = inference.predict_patches(model, test_grouped.inputs(), train_spec.batch_size)
    model.release_traced_functions()  # memory for stitching and the bundle
    timings["inference"], clock = job_records.lap(clock)

    canvas, canvas_mask, quality = _reconstruct(model, patches, test_grouped, test_groups,
                                                test_data, do_stitching, run_dir)
    timings["stitching"], clock = job_records.lap(clock)

    offsets, _ = inference.global_offsets(test_groups)
    flat = np.transpose(patches, (0, 3, 1, 2)).reshape(-1, spec.N, spec.N)
    del patches, test_grouped  # the bundle's drawing is the run's memory peak: keep only `flat`
    bundle.write_debug_bundle(
        bundle_dir, flat, offsets, canvas, canvas_mask=canvas_mask,
        intensity_scale=model.intensity_scale,
        history={k: v for k, v in history.items() if k not in NON_LOSS_CURVES},
        extra_stats=job_records.extra_stats(history, quality, train_grouped.n_groups, spec),
    )
    result_sha1 = bundle.stats_sha1(bundle_dir)
    timings["bundle"], _ = job_records.lap(clock)
    fitted, _ = split_validation(train_grouped, train_spec.validation_split)
    return JobResult(
        history=history, stats_sha1=result_sha1, bundle_dir=Path(bundle_dir), weights_path=weights_path,
        quality=quality, throughput_groups_per_s=job_records.throughput(history, fitted.n_groups),
        n_groups_train=train_grouped.n_groups, intensity_scale=model.intensity_scale,
        bundle_stats=bundle.read_bundle_stats(bundle_dir), timings_s=timings, model_spec=spec,
    )


def prepare_job_data(train_data: PtychoData, test_data: PtychoData, spec: GroupingSpec,
                     model_spec: ModelSpec, nphotons: float = DEFAULT_NPHOTONS):
    """Step 1 of the job: (resolved ModelSpec, train GroupedData, test GroupedData, test Groups).

    The resolved spec carries the subset's intensity scale and the canvas side that holds
    every train and test group's offsets.
    """
    _check_consistent(train_data, test_data, spec, model_spec)
    if spec.n_images is not None:
        train_data = train_data.subset(
            grouping.compact_subset(train_data.xcoords, train_data.ycoords, spec.n_images, spec.seed))
    train_groups = grouping.group_positions(
        train_data.xcoords, train_data.ycoords, spec.gridsize, spec.neighbor_count, spec.n_groups, spec.seed)
    test_groups = inference.inference_groups(test_data, spec.gridsize, spec.neighbor_count, spec.seed)
    scale = normalization.dataset_intensity_scale(train_data.diffraction, nphotons)
    resolved = dataclasses.replace(
        model_spec, intensity_scale=scale,
        canvas_size=canvas_size_for(model_spec.N, train_groups.coords_relative, test_groups.coords_relative),
    )
    if train_data.Y is None:
        resolved = dataclasses.replace(resolved, mae_weight=0.0, realspace_weight=0.0)
    needs_truth = resolved.mae_weight > 0 or resolved.realspace_weight > 0
    return (resolved, group_data(train_data, train_groups, scale, with_object=needs_truth),
            group_data(test_data, test_groups, scale, with_object=False), test_groups)


def _check_consistent(train_data, test_data, spec: GroupingSpec, model_spec: ModelSpec) -> None:
    for name, value in (("train_data", train_data), ("test_data", test_data)):
        if not isinstance(value, PtychoData):
            raise TypeError(f"run_phase_job: {name} must be a PtychoData; got {type(value).__name__}")
    if not isinstance(spec, GroupingSpec) or not isinstance(model_spec, ModelSpec):
        raise TypeError("run_phase_job: grouping must be a GroupingSpec and model_spec a ModelSpec")
    if spec.gridsize != model_spec.gridsize:
        raise ValueError(f"grouping.gridsize={spec.gridsize} differs from model_spec.gridsize={model_spec.gridsize}")
    for name, data in (("train", train_data), ("test", test_data)):
        if data.N != model_spec.N:
            raise ValueError(f"{name} data has N={data.N} but model_spec.N={model_spec.N}")


def _save_run(model, spec: ModelSpec, history, run_dir: Path) -> Path:
    weights_path = save_weights(model, run_dir)
    job_records.write_json(run_dir / HISTORY_FILE, history)
    job_records.write_json(run_dir / MODEL_SPEC_FILE, dataclasses.asdict(spec))
    return weights_path


def _reconstruct(model, patches, test_grouped, test_groups, test_data, do_stitching, run_dir):
    """(canvas (M, M) complex64, covered mask or None, quality dict); writes reconstruction.npz."""
    if do_stitching:
        stitched = inference.stitch_patches(patches, test_groups)
        quality = inference.stitched_quality(stitched, test_data.object_guess) if test_data.has_ground_truth else {}
        canvas, mask = stitched.canvas, stitched.covered
        extra = {"offsets_xy": stitched.offsets_xy, "centre_xy": stitched.centre_xy, "crop": stitched.crop}
    else:
        canvas = model.object_canvas(patches[:1], test_grouped.coords_relative[:1]).numpy()[0, :, :, 0]
        mask, quality, extra = None, {}, {}
    job_records.save_npz(run_dir / RECONSTRUCTION_FILE, canvas=canvas.astype(np.complex64),
              covered=np.ones(canvas.shape, bool) if mask is None else mask, **extra)
    return canvas, mask, quality


def _require_int(value, name: str, minimum: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}; got {value!r}")

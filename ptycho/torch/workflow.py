"""One phase job on the PyTorch port: the twin of ``ptycho.workflow.run_phase_job``.

Same signature, same steps, same outputs, so that a runner switches backends by choosing
the function: data preparation (compact subset, groups, inference groups, intensity scale,
canvas size from the actual offsets), training (:func:`ptycho.torch.training.train`),
inference, stitching and ``bundle.write_debug_bundle`` with the same stats.json sections
(``quality``, ``history_final``, ``training``). ``run_dir`` receives ``model.pt`` (the torch
state dict) instead of ``model.weights.h5``, plus the same ``history.json``,
``model_spec.json`` and ``reconstruction.npz``. Nothing is written to ``bundle_dir`` when
any earlier step (a callback's ``on_train_begin`` included) raises.

The spec dataclasses and :class:`ptycho.workflow.JobResult` are the TensorFlow side's,
imported when a job runs (see the note in ``ptycho.torch``); ``GroupingSpec`` and
``JobResult`` are also attributes of this module, resolved on first access.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ptycho import bundle, grouping, job_records, normalization
from ptycho.data import PtychoData
from ptycho.torch import inference, training
from ptycho.torch.model import build_model, save_weights
from ptycho.torch.reassembly import required_canvas_size

DEFAULT_NPHOTONS = 1e9
HISTORY_FILE = "history.json"
MODEL_SPEC_FILE = "model_spec.json"
RECONSTRUCTION_FILE = "reconstruction.npz"
NON_LOSS_CURVES = ("intensity_scale", "learning_rate", "epoch_time_s")
SHARED_TYPES = ("GroupingSpec", "JobResult")


def __getattr__(name):
    # The shared types live in ptycho.workflow (a TensorFlow module today); exposed here too,
    # so a runner finds GroupingSpec and JobResult on either backend's workflow module.
    if name in SHARED_TYPES:
        from ptycho import workflow

        return getattr(workflow, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_phase_job(train_data: PtychoData, test_data: PtychoData, *, grouping, model_spec,
                  train_spec, run_dir: str | os.PathLike, bundle_dir: str | os.PathLike,
                  do_stitching: bool = True, callbacks: Sequence = (),
                  nphotons: float | None = None):
    """Run one phase job on the torch port; returns a ``ptycho.workflow.JobResult``.

    grouping, model_spec, train_spec: ``ptycho.workflow.GroupingSpec``,
    ``ptycho.model.ModelSpec``, ``ptycho.training.TrainSpec`` (read by field). Callbacks are
    called duck-typed (ptycho.torch.training). Raises before writing a bundle on any failure.
    """
    from ptycho.workflow import JobResult  # the shared result type (a TensorFlow module)

    timings = {}
    clock = time.perf_counter()
    run_dir = Path(run_dir)
    spec, train_grouped, test_grouped, test_groups = _prepare(
        train_data, test_data, grouping, model_spec, nphotons or DEFAULT_NPHOTONS)
    timings["data_prep"], clock = job_records.lap(clock)

    model = build_model(spec, train_data.probe)
    history = training.train(model, train_grouped, train_spec, callbacks)
    weights_path = _save_run(model, spec, history, run_dir)
    timings["training"], clock = job_records.lap(clock)
    timings["first_epoch"] = history["epoch_time_s"][0]

    patches = inference.predict_patches(model, _inputs(test_grouped), train_spec.batch_size)
    timings["inference"], clock = job_records.lap(clock)

    canvas, canvas_mask, quality, offsets = _reconstruct(model, patches, test_grouped, test_groups,
                                                         test_data, do_stitching, run_dir)
    timings["stitching"], clock = job_records.lap(clock)

    flat = np.transpose(patches, (0, 3, 1, 2)).reshape(-1, spec.N, spec.N)
    bundle.write_debug_bundle(
        bundle_dir, flat, offsets, canvas, canvas_mask=canvas_mask,
        intensity_scale=model.intensity_scale,
        history={k: v for k, v in history.items() if k not in NON_LOSS_CURVES},
        extra_stats=job_records.extra_stats(history, quality, train_grouped.n_groups, spec),
    )
    result_sha1 = bundle.stats_sha1(bundle_dir)
    timings["bundle"], _ = job_records.lap(clock)
    fitted, _ = training.split_validation(train_grouped, train_spec.validation_split)
    return JobResult(
        history=history, stats_sha1=result_sha1, bundle_dir=Path(bundle_dir),
        weights_path=weights_path, quality=quality,
        throughput_groups_per_s=job_records.throughput(history, fitted.n_groups),
        n_groups_train=train_grouped.n_groups, intensity_scale=model.intensity_scale,
        bundle_stats=bundle.read_bundle_stats(bundle_dir), timings_s=timings, model_spec=spec)


def _prepare(train_data, test_data, spec, model_spec, nphotons):
    """(resolved ModelSpec, train GroupedData, test GroupedData, test Groups), as the TF job."""
    from ptycho.inference import inference_groups  # numpy only; see the module docstring

    _check_consistent(train_data, test_data, spec, model_spec)
    if spec.n_images is not None:
        train_data = train_data.subset(grouping.compact_subset(
            train_data.xcoords, train_data.ycoords, spec.n_images, spec.seed))
    train_groups = grouping.group_positions(train_data.xcoords, train_data.ycoords,
                                            spec.gridsize, spec.neighbor_count, spec.n_groups,
                                            spec.seed)
    test_groups = inference_groups(test_data, spec.gridsize, spec.neighbor_count, spec.seed)
    scale = normalization.dataset_intensity_scale(train_data.diffraction, nphotons)
    canvas = required_canvas_size(model_spec.N, np.concatenate(
        [_flat_offsets(g.coords_relative) for g in (train_groups, test_groups)]))
    resolved = dataclasses.replace(model_spec, intensity_scale=scale, canvas_size=canvas)
    if train_data.Y is None:
        resolved = dataclasses.replace(resolved, mae_weight=0.0, realspace_weight=0.0)
    return (resolved, training.group_data(train_data, train_groups, scale),
            training.group_data(test_data, test_groups, scale), test_groups)


def _flat_offsets(coords_relative):
    """(B, 1, 2, C) -> (B*C, 2) [dx, dy]."""
    return np.transpose(np.asarray(coords_relative, np.float64)[:, 0], (0, 2, 1)).reshape(-1, 2)


def _check_consistent(train_data, test_data, spec, model_spec) -> None:
    for name, value in (("train_data", train_data), ("test_data", test_data)):
        if not isinstance(value, PtychoData):
            raise TypeError(f"run_phase_job: {name} must be a PtychoData; got {type(value).__name__}")
    if spec.gridsize != model_spec.gridsize:
        raise ValueError(f"grouping.gridsize={spec.gridsize} differs from "
                         f"model_spec.gridsize={model_spec.gridsize}")
    for name, data in (("train", train_data), ("test", test_data)):
        if data.N != model_spec.N:
            raise ValueError(f"{name} data has N={data.N} but model_spec.N={model_spec.N}")


def _inputs(grouped):
    return {"diffraction": grouped.diffraction, "coords_relative": grouped.coords_relative}


def _save_run(model, spec, history, run_dir: Path) -> Path:
    weights_path = save_weights(model, run_dir)
    job_records.write_json(run_dir / HISTORY_FILE, history)
    job_records.write_json(run_dir / MODEL_SPEC_FILE, dataclasses.asdict(spec))
    return weights_path


def _reconstruct(model, patches, test_grouped, test_groups, test_data, do_stitching, run_dir):
    """(canvas (M, M) complex64, covered mask or None, quality, offsets (n, 2)); writes the npz."""
    from ptycho.inference import global_offsets, stitched_quality

    offsets, _ = global_offsets(test_groups)
    if do_stitching:
        stitched = inference.stitch_patches(patches, test_groups)
        quality = (stitched_quality(stitched, test_data.object_guess)
                   if test_data.has_ground_truth else {})
        canvas, mask = stitched.canvas, stitched.covered
        extra = {"offsets_xy": stitched.offsets_xy, "centre_xy": stitched.centre_xy,
                 "crop": stitched.crop}
    else:
        with torch.no_grad():
            canvas = model.object_canvas(torch.from_numpy(patches[:1]),
                                         torch.from_numpy(test_grouped.coords_relative[:1]))
        canvas, mask, quality, extra = canvas.numpy()[0, :, :, 0], None, {}, {}
    job_records.save_npz(run_dir / RECONSTRUCTION_FILE, canvas=canvas.astype(np.complex64),
              covered=np.ones(canvas.shape, bool) if mask is None else mask, **extra)
    return canvas, mask, quality, offsets



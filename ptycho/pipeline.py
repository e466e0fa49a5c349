"""One phase job, backend-neutral: group, scale, build, train, infer, stitch, write the bundle.

``ptycho.tf.workflow.run_phase_job`` (TensorFlow) and ``ptycho.torch.workflow.run_phase_job``
(PyTorch) are :func:`run_job` with their backend's :class:`JobBackend`, so both run the same
steps and write the same files. Steps:

1. data_prep: ``batches.prepare_job_data`` (compact subset, groups, inference groups,
   intensity scale, canvas side from the actual offsets).
2. training: the backend's ``train``; weights, ``history.json``, the resolved ``model_spec.json``
   and the network card with its probe (``ptycho.network``: ``network.json``, ``probe.npy``, what
   applying the network again needs; the refined probe with ``ModelSpec.refine_probe``) go to ``run_dir``. Callbacks with an ``on_fit_data(info)`` method
   get the fit's size and Poisson NLL floors first (:func:`_notify_fit_data`).
3. inference: object patches of every test group. With ``stitch_from='canvas'`` (the default)
   they are the patches the forward model diffracts: with object_big at gridsize > 1 each group's
   patches overlap-averaged onto its canvas and cut out again at their offsets, the object the
   loss constrained (the decoder's own patches are constrained only through that average);
   ``'patches'``: the decoder's output as it is. The two are the same at gridsize 1.
4. stitching (when ``do_stitching``): the global reconstruction; ``phase_offsets`` says how
   the patches' own phase offsets are set before they are summed (``stitching.PHASE_OFFSETS``:
   ``'com'``, the default, anchors them to the phase the diffraction centres of mass fix,
   ``ptycho.com_phase``). Without stitching the canvas is the model's own reassembled canvas of
   the first test group (no truth figure).
5. evaluation (stitching and ground truth only): the reconstruction's quality
   (``stitching.stitched_quality``) beside the constant-object floor's (``ptycho.evaluation.quality.floor_comparison``),
   ``{amp,phase}_mae_offsets_<mode>`` (the same patches stitched each way) and the truth window
   under the canvas, drawn against the reconstruction in the bundle's truth_vs_reconstruction.png.
   Timed apart from stitching: inference + stitching is what a reconstruction costs.
6. bundle: ``reconstruction.npz`` goes to ``run_dir``, then ``bundle.write_debug_bundle``;
   nothing is written to ``bundle_dir`` if any earlier step (a callback's ``on_train_begin``
   included) fails (the writer is atomic).

:func:`reconstruct_job` applies a trained network (``ptycho.network.load_network``) to other data:
steps 3-6 alone, on groups scaled with the network's own intensity scale.

History metric names (per epoch, lists of floats, the same on both backends):

    loss, poisson_nll          training loss (weighted total) and its Poisson NLL term
    diffraction_mae            only when its weight is > 0 (no ground truth needed)
    amplitude_mae, realspace_mse   only when their weight is > 0 (ground truth needed)
    val_loss, val_poisson_nll, ... the same on the validation groups (when a split exists)
    intensity_scale            exp(log_scale) at the end of the epoch
    learning_rate              Adam's learning rate after the epoch's schedule update
    epoch_time_s               wall time of the epoch, validation included

and, per step (one float per training batch, all epochs in order): ``step_loss``, the
training loss of each batch (Keras' batch logs would give the epoch's running mean).
It goes to history.json and loss_curve.png, not into stats.json.

Nothing here imports TensorFlow or PyTorch.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ptycho.evaluation import bundle, quality as quality_metrics
from ptycho import com_phase, network, stitching
from ptycho.data.batches import DEFAULT_NPHOTONS, group_data, n_batches, prepare_job_data, split_validation
from ptycho.data.contract import PtychoData
from ptycho.preflight import INFERENCE_BATCH_MAX
from ptycho.spec import GroupingSpec, JobResult, ModelSpec, TrainSpec

HISTORY_FILE = "history.json"
MODEL_SPEC_FILE = "model_spec.json"
RECONSTRUCTION_FILE = "reconstruction.npz"
NON_LOSS_CURVES = ("intensity_scale", "learning_rate", "epoch_time_s")
STITCH_SOURCES = ("canvas", "patches")  # run_job's stitch_from (module docstring, step 3)
STEP_LOSS = "step_loss"
TIMING_KEYS = ("data_prep", "first_epoch", "training", "inference", "stitching", "evaluation", "bundle")


@dataclass(frozen=True)
class JobBackend:
    """What a backend supplies to :func:`run_job`.

    name: 'tensorflow' or 'pytorch' (the network card's backend); build_model(spec, probe) -> model;
    load_model(spec, probe, weights_path) -> the model with the weights save_weights wrote; train(model,
    GroupedData, TrainSpec, callbacks) -> history; save_weights(model, run_dir) -> path;
    predict_patches(model, inputs, batch_size)
    -> (B, N, N, C) complex64; diffracted_patches(model, patches, coords_relative, batch_size) ->
    the patches the forward model diffracts, (B, N, N, C) complex64 (the patches themselves unless
    the model reassembles); stitch_patches(patches, groups) -> stitching.Stitched;
    model_canvas(model, patches (1, N, N, C), coords_relative (1, 1, 2, C)) -> (M, M) complex;
    release(model): frees what training held before stitching (optional).
    """

    name: str
    build_model: Callable[[ModelSpec, np.ndarray], Any]
    load_model: Callable[[ModelSpec, np.ndarray, Path], Any]
    train: Callable[..., dict]
    save_weights: Callable[[Any, Path], Path]
    predict_patches: Callable[[Any, dict, int], np.ndarray]
    diffracted_patches: Callable[[Any, np.ndarray, np.ndarray, int], np.ndarray]
    stitch_patches: Callable[[np.ndarray, Any], stitching.Stitched]
    model_canvas: Callable[[Any, np.ndarray, np.ndarray], np.ndarray]
    release: Callable[[Any], None] = lambda model: None


def run_job(backend: JobBackend, train_data: PtychoData, test_data: PtychoData, *,
            grouping: GroupingSpec, model_spec: ModelSpec, train_spec: TrainSpec,
            run_dir: str | os.PathLike, bundle_dir: str | os.PathLike, do_stitching: bool = True,
            phase_offsets: str = "com", stitch_from: str = "canvas", callbacks: Sequence = (),
            nphotons: float | None = None, inference_batch_size: int | None = None) -> JobResult:
    """Run one phase job on ``backend`` (module docstring); raises before writing a bundle on any failure.

    inference_batch_size: groups per batch of step 3 (the runner's is ``preflight.inference_batch_size``,
    sized by the memory budget); None: ``preflight.INFERENCE_BATCH_MAX``. Training's batch is not reused:
    at batch 4 TensorFlow's forward pass takes twice as long.
    """
    if stitch_from not in STITCH_SOURCES:
        raise ValueError(f"run_job: stitch_from must be one of {', '.join(STITCH_SOURCES)}; got {stitch_from!r}")
    inference_batch = _inference_batch(inference_batch_size, "run_job")
    stitching.check_phase_offsets(phase_offsets, "run_job")  # before training: nothing written on a typo
    timings = {}
    clock = time.perf_counter()
    run_dir = Path(run_dir)
    spec, train_grouped, test_grouped, test_groups = prepare_job_data(
        train_data, test_data, grouping, model_spec, nphotons or DEFAULT_NPHOTONS)
    timings["data_prep"], clock = _lap(clock)

    model = backend.build_model(spec, train_data.probe)
    _notify_fit_data(callbacks, train_grouped, train_spec)
    history = backend.train(model, train_grouped, train_spec, callbacks)
    weights_path = backend.save_weights(model, run_dir)
    write_json(run_dir / HISTORY_FILE, history)
    write_json(run_dir / MODEL_SPEC_FILE, dataclasses.asdict(spec))
    probe = model.probe_array if spec.refine_probe else train_data.probe
    network.write_card(run_dir, backend=backend.name, weights=weights_path, spec=spec, probe=probe,
                       grouping=grouping, phase_offsets=phase_offsets, stitch_from=stitch_from,
                       nphotons=nphotons or DEFAULT_NPHOTONS)
    timings["training"], clock = _lap(clock)
    timings["first_epoch"] = history["epoch_time_s"][0]

    quality, result_sha1 = _apply_network(
        backend, model, spec, test_data, test_grouped, test_groups, run_dir=run_dir, bundle_dir=bundle_dir,
        do_stitching=do_stitching, phase_offsets=phase_offsets, stitch_from=stitch_from,
        inference_batch=inference_batch, history=history, timings=timings, clock=clock,
        sections=lambda quality: {**extra_stats(history, quality, train_grouped.n_groups, spec),
                                  **network.refined_probe_stats(spec, train_data.probe, probe)})
    fitted, _ = split_validation(train_grouped, train_spec.validation_split)
    return JobResult(
        history=history, stats_sha1=result_sha1, bundle_dir=Path(bundle_dir), weights_path=weights_path,
        quality=quality, throughput_groups_per_s=throughput(history, fitted.n_groups),
        n_groups_train=train_grouped.n_groups, intensity_scale=model.intensity_scale,
        bundle_stats=bundle.read_bundle_stats(bundle_dir), timings_s=timings, model_spec=spec,
    )


def reconstruct_job(backend: JobBackend, trained: network.TrainedNetwork, data: PtychoData, *,
                    run_dir: str | os.PathLike, bundle_dir: str | os.PathLike, source: str = "data",
                    pixel_size_m: float | None = None,
                    inference_batch_size: int | None = None) -> Reconstruction:
    """Apply a trained network (``ptycho.network``) to ``data`` (named ``source`` in errors): steps 3-6
    of :func:`run_job` on groups of every position of ``data``, scaled with the network's own intensity
    scale and stitched as it was at training (the card's phase_offsets, stitch_from). The model's canvas
    grows where the data's groups reach further than its training groups did (the weights do not depend
    on it). ``reconstruction.npz`` also holds ``origin_xy`` (object pixels [x, y] of canvas pixel
    (0, 0)) and ``pixel_size_m`` (NaN when the data do not say). NetworkMismatchError (before any work)
    for data it cannot serve; the result's ``warnings`` for data far from its training data."""
    inference_batch = _inference_batch(inference_batch_size, "reconstruct_job")
    if trained.backend != backend.name:
        raise network.NetworkMismatchError(f"{trained.folder}: a {trained.backend} network; this is the {backend.name} "
                                           f"backend (apply it with backend={trained.backend})")
    warnings = network.check_serves(trained, data, source)
    timings = {}
    clock = time.perf_counter()
    spec, grouping = trained.spec, trained.grouping
    groups = stitching.inference_groups(data, grouping.gridsize, grouping.neighbor_count, grouping.seed)
    if spec.reassembles:
        needed = stitching.canvas_size_for(spec.N, groups.coords_relative)
        spec = dataclasses.replace(spec, canvas_size=max(spec.canvas_size or spec.N, needed))
    grouped = group_data(data, groups, spec.intensity_scale, with_object=False)
    timings["data_prep"], clock = _lap(clock)
    model = _load_model(backend, trained, spec)
    timings["load"], clock = _lap(clock)
    history_path = trained.folder / HISTORY_FILE
    history = json.loads(history_path.read_text(encoding="utf-8")) if history_path.is_file() else {}

    def frame(stitched: stitching.Stitched) -> dict:
        return {"origin_xy": stitched.centre_xy - stitched.canvas.shape[0] // 2,
                "pixel_size_m": np.float64(np.nan if pixel_size_m is None else pixel_size_m)}

    quality, result_sha1 = _apply_network(
        backend, model, spec, data, grouped, groups, run_dir=Path(run_dir), bundle_dir=bundle_dir,
        do_stitching=True, phase_offsets=trained.phase_offsets, stitch_from=trained.stitch_from,
        inference_batch=inference_batch, history=history, timings=timings, clock=clock, frame=frame,
        sections=lambda quality: {"quality": quality, "network": _network_section(trained, spec, warnings)})
    return Reconstruction(stats_sha1=result_sha1, bundle_dir=Path(bundle_dir), quality=quality,
                          intensity_scale=model.intensity_scale, bundle_stats=bundle.read_bundle_stats(bundle_dir),
                          timings_s=timings, model_spec=spec, warnings=warnings, n_groups=grouped.n_groups)


@dataclass(frozen=True)
class Reconstruction:
    """Outcome of :func:`reconstruct_job`: the bundle (stats_sha1, bundle_stats), quality (empty without
    ground truth), the network's intensity scale, seconds per step (data_prep, load, inference, stitching,
    evaluation, bundle), the spec applied (its canvas fitted to the data), warnings (``network.check_serves``)
    and the number of groups reconstructed."""

    stats_sha1: str
    bundle_dir: Path
    quality: dict[str, float]
    intensity_scale: float
    bundle_stats: dict
    timings_s: dict[str, float]
    model_spec: ModelSpec
    warnings: list[str]
    n_groups: int


def _load_model(backend: JobBackend, trained: network.TrainedNetwork, spec: ModelSpec):
    """The network's model with its weights; NetworkError naming the file when they do not fit its card."""
    try:
        return backend.load_model(spec, trained.probe, trained.weights_path)
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        raise network.NetworkError(
            f"{trained.weights_path}: the weights do not load into the network its card describes (N={spec.N}, "
            f"gridsize={spec.gridsize}, n_filters_scale={spec.n_filters_scale}): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc


def _network_section(trained: network.TrainedNetwork, spec: ModelSpec, warnings: list[str]) -> dict:
    """stats.json's ``network`` section of a reconstruction: which network, at which scale."""
    return {"backend": trained.backend, "N": spec.N, "gridsize": spec.gridsize,
            "data_intensity_scale": spec.intensity_scale, "model_canvas_size": spec.canvas_size,
            "phase_offsets": trained.phase_offsets, "stitch_from": trained.stitch_from, "warnings": list(warnings)}


def _apply_network(backend: JobBackend, model, spec: ModelSpec, test_data: PtychoData, test_grouped, test_groups, *,
                   run_dir: Path, bundle_dir, do_stitching: bool, phase_offsets: str, stitch_from: str,
                   inference_batch: int, history: dict, timings: dict, clock: float, sections: Callable,
                   frame: Callable | None = None) -> tuple[dict, str]:
    """Steps 3-6 of the job (module docstring) with ``model``: (quality, stats.json sha1).

    ``sections(quality)``: stats.json's extra sections; ``frame(stitched)``: more arrays for
    reconstruction.npz. Adds the steps' seconds to ``timings`` (``clock``: the last lap's end).
    """
    probe = model.probe_array if spec.refine_probe else None  # drawn in the bundle
    patches = backend.predict_patches(model, test_grouped.inputs(), inference_batch)
    if stitch_from == "canvas":
        patches = backend.diffracted_patches(model, patches, test_grouped.coords_relative, inference_batch)
    backend.release(model)  # memory for stitching and the bundle
    timings["inference"], clock = _lap(clock)

    quality, extra, truth = {}, {}, (None, None)
    if do_stitching:
        com = _com_phase(test_data) if phase_offsets == "com" else None
        stitched = backend.stitch_patches(patches, test_groups, phase_offsets=phase_offsets, com=com)
        canvas, canvas_mask = stitched.canvas, stitched.covered
        extra = {"offsets_xy": stitched.offsets_xy, "centre_xy": stitched.centre_xy, "crop": stitched.crop}
        if stitched.phase_corrections is not None:
            extra["phase_corrections"] = stitched.phase_corrections
        if frame is not None:
            extra.update(frame(stitched))
    else:
        canvas = backend.model_canvas(model, patches[:1], test_grouped.coords_relative[:1])
        canvas_mask = None
    timings["stitching"], clock = _lap(clock)

    if do_stitching and test_data.has_ground_truth:
        if com is None:  # the 'com' row of the comparison below
            com = _com_phase(test_data)
        quality = stitching.stitched_quality(stitched, test_data.object_guess)
        start = np.complex64(spec.initial_amplitude * spec.amplitude_scale)  # the object the network starts at
        constant = np.broadcast_to(start, patches.shape)  # a view: no memory
        floor = stitching.stitched_quality(backend.stitch_patches(constant, test_groups), test_data.object_guess)
        quality.update(quality_metrics.floor_comparison(quality, floor))
        # the same patches with each way of setting their phase offsets: what each does to them
        for mode in stitching.PHASE_OFFSETS:
            values = quality if mode == phase_offsets else stitching.stitched_quality(
                backend.stitch_patches(patches, test_groups, phase_offsets=mode, com=com), test_data.object_guess)
            quality.update({f"{name}_offsets_{mode}": values[name] for name in ("amp_mae", "phase_mae")})
        truth = stitching.ground_truth_window(test_data.object_guess, stitched)
    timings["evaluation"], clock = _lap(clock)

    save_npz(run_dir / RECONSTRUCTION_FILE, canvas=np.asarray(canvas, np.complex64),
             covered=np.ones(canvas.shape, bool) if canvas_mask is None else canvas_mask, **extra)

    offsets, _ = stitching.global_offsets(test_groups)
    flat = np.transpose(patches, (0, 3, 1, 2)).reshape(-1, spec.N, spec.N)
    del patches  # the bundle's drawing is the run's memory peak: keep only `flat`
    bundle.write_debug_bundle(
        bundle_dir, flat, offsets, canvas, canvas_mask=canvas_mask, intensity_scale=model.intensity_scale,
        history={k: v for k, v in history.items() if k not in (*NON_LOSS_CURVES, STEP_LOSS)},
        step_loss=history.get(STEP_LOSS), ground_truth=truth[0], ground_truth_mask=truth[1],
        extra_stats=sections(quality), probe=probe,
    )
    result_sha1 = bundle.stats_sha1(bundle_dir)
    timings["bundle"], _ = _lap(clock)
    return quality, result_sha1


def _inference_batch(inference_batch_size: int | None, caller: str) -> int:
    """Groups per inference batch: ``inference_batch_size`` checked, or ``preflight.INFERENCE_BATCH_MAX``."""
    if inference_batch_size is not None and (not isinstance(inference_batch_size, int) or inference_batch_size < 1):
        raise ValueError(f"{caller}: inference_batch_size must be an integer >= 1 or None; "
                         f"got {inference_batch_size!r}")
    return inference_batch_size or INFERENCE_BATCH_MAX


def _com_phase(data: PtychoData) -> com_phase.ComPhase:
    return com_phase.integrated_com_phase(data.diffraction, data.probe, data.xcoords, data.ycoords)


def poisson_nll_floor(intensity: np.ndarray) -> float:
    """The Poisson NLL of the data against itself, ``mean(I - I log I)`` (0 log 0 = 0), in float64.

    The loss's ``poisson_nll`` is the same mean with the prediction in place of one ``I``; it
    reaches this value only when every predicted intensity equals the observed one, so
    ``poisson_nll - floor`` >= 0 reads as "NLL per pixel above the data's own" (0: perfect fit).
    """
    observed = np.asarray(intensity, np.float64)
    logs = np.log(observed, out=np.zeros_like(observed), where=observed > 0)
    return float(np.mean(observed - observed * logs))


def _notify_fit_data(callbacks: Sequence, grouped, train_spec: TrainSpec) -> None:
    """``on_fit_data(info)`` for callbacks that have it: the fit's size and its NLL floors.

    info: n_groups_train, n_groups_val, n_batches (per epoch), max_epochs, nll_floor and
    val_nll_floor (:func:`poisson_nll_floor` of the training and validation groups; None
    without a validation split).
    """
    listeners = [callback for callback in callbacks if hasattr(callback, "on_fit_data")]
    if not listeners:
        return
    fitted, held_out = split_validation(grouped, train_spec.validation_split)
    info = {
        "n_groups_train": fitted.n_groups,
        "n_groups_val": 0 if held_out is None else held_out.n_groups,
        "n_batches": n_batches(fitted.n_groups, train_spec.batch_size),
        "max_epochs": train_spec.max_epochs,
        "nll_floor": poisson_nll_floor(fitted.intensity),
        "val_nll_floor": None if held_out is None else poisson_nll_floor(held_out.intensity),
    }
    for callback in listeners:
        callback.on_fit_data(info)


def extra_stats(history, quality, n_groups_train, spec) -> dict:
    """stats.json sections; deterministic for a seeded run (no wall-clock values).

    ``training.model_canvas_size`` is the side of the model's own reassembly canvas (the
    group's patches placed by their relative offsets; N without reassembly), not the
    stitched canvas of the test positions (``canvas.json``'s ``canvas_size``).
    """
    final = {k: v[-1] for k, v in history.items() if k not in ("epoch_time_s", STEP_LOSS)}
    return {
        "quality": quality,
        "history_final": final,
        "training": {"epochs": len(history["loss"]), "n_groups_train": n_groups_train,
                     "gridsize": spec.gridsize, "model_canvas_size": spec.canvas_size,
                     "data_intensity_scale": spec.intensity_scale},
    }


def throughput(history, n_groups: int) -> float:
    """Training groups per second: median over the epochs after the first (or the only one)."""
    times = history["epoch_time_s"]
    steady = times[1:] if len(times) > 1 else times
    return float(n_groups / np.median(steady))


def _lap(start: float) -> tuple[float, float]:
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

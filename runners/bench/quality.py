"""Reconstruction-quality study (not a test): ``python -m runners.bench.quality [--seeds 5] ...``.

For each dataset (``simulated``: the default mixed object; ``lines``: the community's
amplitude-only lines object), each gridsize and each seed it trains the PINN with the
chosen backend's ``run_phase_job`` (PyTorch by default; ``--backend tensorflow`` imports
TensorFlow instead, never both) and reads the stitched test reconstruction's quality
(``ptycho.stitching.stitched_quality``: amplitude and phase MAE and SSIM, FRC50, amplitude PSNR, after the
global amplitude scale and phase offset fit of ``ptycho.evaluation.quality``), stitched as the runner
stitches by default (the patches the forward model diffracted: ``--stitch-from canvas``;
``patches``: the decoder's own) with the runner's default phase offsets (``--phase-offsets com``: each
patch's offset anchored to the phase the diffraction centres of mass fix, ``ptycho.com_phase``); the
table also gives the amplitude and phase MAE of the same patches stitched with each way of setting the
offsets (``stitching.PHASE_OFFSETS``: com, sync, none).

Defaults (2048 simulated positions, a group seeded at every one of the 1536 training positions, 10
epochs): the recipe of findings round 11. The network's amplitude improves with the share of the
object its training positions cover (round 7), and 384 groups, the recipe before, left most training
positions unused (at gridsize 1, three quarters of them).

Every (dataset, gridsize) also gets references, measured on the same test positions and
the same inference groups and stitching (the first seed's groups):

    floor     the constant object: every patch a0 (``architecture.initial_amplitude_from_data``,
              where the network starts) with phase 0; a run that does not beat it learnt nothing
    ceiling   the true patches ``test.Y`` in the groups' channel layout, stitched: the best any
              patch-wise reconstruction can score through this stitching
    iterative the classical reconstruction of the same test data (``ptycho.iterative``: cdtools,
              probe known, ``--iterative-epochs`` L-BFGS epochs), on the same canvas convention;
              one per dataset (it uses no groups), shown in every gridsize's block. Without the
              extra ``iterative`` its row says so, and the study still runs

``--device`` (PyTorch: ``cpu``, ``cuda``, ``cuda:<index>``, ``auto``) is where the PINN trains and
predicts; the references and the stitching run on the CPU. On a GPU, determinism is
``warn_only`` (``determinism.configure_torch``). ``--loss diffraction_mae`` trains on the
diffraction-amplitude MAE instead of the Poisson NLL; ``--overlap uniform`` averages a group's
patches uniformly in the forward model instead of weighted (``ModelSpec.overlap``,
``architecture.overlap_weights``; only at gridsize > 1). Both take several values, and the study runs
every combination: dataset x gridsize x loss x overlap x seed, the overlap only at gridsize > 1 (at
gridsize 1 each loss runs once, its overlap "-"). Every run records its loss and overlap, and the
summaries are per (dataset, gridsize, loss, overlap).

Ablation (the shape of the PtychoPINN paper's table, one command)::

    python -m runners.bench.quality --ablation [--device cuda] [--seeds 5] [--epochs 10]

``--ablation`` is ``--gridsizes 1 2 --loss poisson_nll diffraction_mae --overlap weighted uniform``
(it refuses those flags beside it); datasets, seeds and epochs stay as given. Same data, budget and
seeds in every cell; six cells (gridsize 1: two losses; gridsize 2: two losses x two overlaps) per dataset,
each with amplitude and phase MAE, SSIM, FRC50, amplitude PSNR (dB, ``ptycho.evaluation.quality``: peak the truth's
largest amplitude over the compared pixels, after the same global fit), train and inference seconds,
beside the floor, the ceiling and the iterative reference (which get the same metrics).

The lines object's true phase is 0 everywhere: its phase metrics are reported but its rows
say "amplitude only", and the floor's phase MAE is exactly 0 there, so no phase ratio exists.

Writes into ``--out`` (default ``bench_quality_out/``): ``quality.json`` (settings, every run
of every seed, the references, the summaries; rewritten after every run with ``complete``
false until the study ends, so a study cut short keeps its finished runs), ``quality.md``
(per dataset and gridsize the floor, ceiling and iterative rows, then per loss and overlap one row per
run and a summary row: median / worst over seeds and the ratio to the floor; its "iterative ref." cell: the PINN's
median MAE over the iterative's and both times, inference + stitching against the
reconstruction; its "mlflow run" cell: the MLflow run that holds the row's numbers), ``quality.png`` (per dataset:
truth | PINN | error of the median seed's stitched reconstruction at gridsize 2, or the largest
gridsize run, after the metrics' global fit, then truth | iterative | error;
``quality_<dataset>[_iterative].png`` are its parts; with several losses or overlaps the first cell of that
gridsize), ``quality_zoom.png`` (per dataset, a ZOOM_SIZE x ZOOM_SIZE px crop at the centre of the test
canvas, one object pixel a block (no interpolation), amplitude after the global fit, one colour scale
per dataset (the truth's): truth | the median seed of every (gridsize, loss, overlap) cell | iterative)
and ``runs/`` (each run's run_dir and bundle: ``<dataset>_gs<gridsize>[_<loss>][_<overlap>]_seed<seed>``,
the loss and overlap named only where they are not the defaults).

Every run trains through the runner's job path (``ptycho.pipeline.run_job`` behind the backend's
``run_phase_job``) and the study is logged to MLflow (``runners.bench.quality_tracking``): a run for
the study (settings, references, summaries, then the table, data and figures as artifacts) and a
child run per trained seed (its metrics, history and bundle), in experiment ``quality-study`` of the
runner's tracking store: ``--tracking-uri`` (default ``sqlite:///mlflow.db`` in the launch folder, as
the runner's), ``--no-tracking`` for none. quality.json's ``mlflow`` entry names the store and the
study's run, every run record its ``mlflow_run_id``.
"""
from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path

import numpy as np

from ptycho import architecture, determinism, stitching
from ptycho.data.batches import group_data
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.pipeline import STITCH_SOURCES
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.stitching import PHASE_OFFSETS
from ptycho.torch.device import check_device_name
from runners.bench.quality_figures import write_figure, write_zoom_figure
from runners.bench.quality_report import (
    DEFAULT_LOSS, DEFAULT_OVERLAP, EVERY_WAY, METRICS, NO_OVERLAP, print_run, ratio, run_name, study_cells, summarise,
    write_document, write_table,
)
from runners.bench.quality_tracking import EXPERIMENT, StudyTracking
from runners.schema import TrackingConfig

DATASETS = {"simulated": "mixed", "lines": "lines"}  # dataset -> SimulationSpec.object_kind
BACKENDS = ("pytorch", "tensorflow")
LEARNING_RATE = ModelSpec.learning_rate  # the study's default: ModelSpec's
EPOCHS = 10  # 960 steps with a group at each of 1536 training positions (round 10: 30 epochs of 384 groups, 720)
LOSSES = {"poisson_nll": {}, "diffraction_mae": {"nll_weight": 0.0, "diffraction_mae_weight": 1.0}}  # -> ModelSpec
NEIGHBOR_COUNT = 7
VALIDATION_SPLIT = 0.05
ITERATIVE_MISSING = "n/a (cdtools not installed: pip install -e \".[iterative]\")"
ABLATION = {"gridsizes": [1, 2], "loss": ["poisson_nll", "diffraction_mae"], "overlap": ["weighted", "uniform"]}
SETTINGS = ("datasets", "gridsizes", "seeds", "epochs", "n_groups", "batch_size", "n_images", "backend", "device",
            "learning_rate", "loss", "overlap", "ablation", "stitch_from", "phase_offsets", "iterative_epochs")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number; got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS),
                        help="default: simulated lines")
    parser.add_argument("--gridsizes", nargs="+", type=int, choices=(1, 2), default=None, help="default: 1 2")
    parser.add_argument("--seeds", type=_positive_int, default=5, help="seeds 0..S-1 per dataset and gridsize; default 5")
    parser.add_argument("--epochs", type=_positive_int, default=EPOCHS,
                        help=f"training epochs per run; default {EPOCHS}")
    parser.add_argument("--n-groups", type=_positive_int, default=None,
                        help="training groups; default: one seeded at every training position")
    parser.add_argument("--batch-size", type=_positive_int, default=16, help="default 16")
    parser.add_argument("--n-images", type=_positive_int, default=2048,
                        help="simulated scan positions, train + test (a quarter is test); default 2048, the runner's "
                             "dataset default (the object grows with the scan)")
    parser.add_argument("--backend", choices=BACKENDS, default="pytorch", help="default pytorch")
    parser.add_argument("--iterative-epochs", type=_positive_int, default=10,
                        help="L-BFGS epochs of the iterative reference (cdtools); default 10")
    parser.add_argument("--device", default="cpu",
                        help="where the PyTorch backend trains: cpu (default), cuda, cuda:<index>, or auto "
                             "(a GPU where there is one); the stitching and the references run on the CPU")
    parser.add_argument("--learning-rate", type=_positive_float, default=LEARNING_RATE,
                        help=f"Adam's learning rate (ModelSpec.learning_rate); default {LEARNING_RATE:g}")
    parser.add_argument("--loss", nargs="+", choices=LOSSES, default=None,
                        help="the unsupervised training loss(es): poisson_nll (default, the runner's) and/or "
                             "diffraction_mae (mean |A_pred - sqrt(I_obs)|); several: each is run")
    parser.add_argument("--overlap", nargs="+", choices=architecture.OVERLAP_MODES, default=None,
                        help="how a group's patches are averaged in the forward model at gridsize > 1 "
                             "(ModelSpec.overlap): weighted (default) and/or uniform; several: each is run")
    parser.add_argument("--ablation", action="store_true",
                        help="the ablation study: --gridsizes 1 2 --loss poisson_nll diffraction_mae "
                             "--overlap weighted uniform (datasets, seeds, epochs as given)")
    parser.add_argument("--stitch-from", choices=STITCH_SOURCES, default="canvas",
                        help="canvas (default, the runner's): the patches the forward model diffracted; "
                             "patches: the decoder's own (the earlier studies')")
    parser.add_argument("--phase-offsets", choices=PHASE_OFFSETS, default="com",
                        help="how stitching sets each patch's phase offset: com (default, the runner's), sync, none "
                             "(ptycho.stitching); the table shows all three")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="compute threads (default: every CPU of this process's affinity mask)")
    parser.add_argument("--out", type=Path, default=Path("bench_quality_out"), help="default bench_quality_out/")
    parser.add_argument("--tracking-uri", default=TrackingConfig.uri,
                        help=f"the MLflow store the study is logged to (experiment {EXPERIMENT}); default "
                             f"{TrackingConfig.uri}, the runner's, a relative path taken from the launch folder")
    parser.add_argument("--no-tracking", action="store_true", help="log nothing to MLflow")
    args = parser.parse_args(argv)
    if args.ablation:
        given = [f"--{name}" for name in ABLATION if getattr(args, name) is not None]
        if given:
            parser.error(f"--ablation sets --gridsizes, --loss and --overlap itself; drop {' '.join(given)} "
                         "or --ablation")
        args.gridsizes, args.loss, args.overlap = (list(ABLATION[name]) for name in ("gridsizes", "loss", "overlap"))
    args.datasets = list(dict.fromkeys(args.datasets))
    args.gridsizes = sorted(set(args.gridsizes or [1, 2]))
    args.loss = list(dict.fromkeys(args.loss or [DEFAULT_LOSS]))
    args.overlap = list(dict.fromkeys(args.overlap or [DEFAULT_OVERLAP]))
    try:
        check_device_name(args.device)
    except ValueError as exc:
        parser.error(f"--device: {exc}")
    if args.backend == "tensorflow" and args.device != "cpu":
        parser.error(f"--device {args.device} applies to --backend pytorch; TensorFlow places its ops itself")
    if args.n_images < 8:
        parser.error(f"--n-images must be at least 8 (a quarter of them are test positions); got {args.n_images}")
    n_train = args.n_images - SimulationSpec(n_images=args.n_images).n_test
    if args.n_groups is not None and args.n_groups > n_train:
        parser.error(f"--n-groups {args.n_groups} exceeds the {n_train} training positions of "
                     f"--n-images {args.n_images}; lower --n-groups or raise --n-images")
    return args


def load_backend(name: str, threads: int, device: str = "cpu"):
    """(run_phase_job, stitch_patches, compute settings in force) of one backend; imports only it.
    PyTorch's ``run_phase_job`` comes bound to ``device``."""
    if name == "tensorflow":
        compute = determinism.configure_tensorflow(threads)
        from ptycho.tf.inference import stitch_patches
        from ptycho.tf.workflow import run_phase_job
    else:
        compute = determinism.configure_torch(threads, device)
        from ptycho.torch.inference import stitch_patches
        from ptycho.torch.workflow import run_phase_job
        run_phase_job = functools.partial(run_phase_job, device=device)
    return run_phase_job, stitch_patches, compute


def reference_quality(train, test, gridsize: int, seed: int, stitch_patches) -> dict[str, dict]:
    """{'floor': quality, 'ceiling': quality} on the test data's inference groups (module doc)."""
    groups = stitching.inference_groups(test, gridsize, NEIGHBOR_COUNT, seed)
    true_patches = group_data(test, groups, 1.0, with_object=True).object  # (B, N, N, C) complex64
    a0 = architecture.initial_amplitude_from_data(train.diffraction, train.probe)
    constant = np.full(true_patches.shape, a0, np.complex64)
    return {name: stitching.stitched_quality(stitch_patches(patches, groups), test.object_guess)
            for name, patches in (("floor", constant), ("ceiling", true_patches))}


def iterative_reference(test, epochs: int, threads: int, device: str = "cpu") -> tuple[dict | str, object]:
    """(record for quality.json, stitched canvas or None) of cdtools' reconstruction of ``test``;
    without the extra ``iterative`` the record is ITERATIVE_MISSING (printed, never a number).
    cdtools runs on PyTorch's CPU whichever backend trains the PINN, on ``threads`` threads; ``device``
    is the PINN's, whose determinism settings (``determinism.configure_torch``) stay in force."""
    from ptycho import iterative

    try:
        iterative.load_cdtools()
    except iterative.IterativeUnavailable as exc:
        print(f"iterative reference: {exc}", flush=True)
        return ITERATIVE_MISSING, None
    determinism.configure_torch(threads, device)
    result = iterative.reconstruct(test, iterative.IterativeSpec(epochs=epochs))
    canvas = iterative.stitched(result, test)
    quality = stitching.stitched_quality(canvas, test.object_guess)
    return {**{key: quality[key] for key in METRICS}, "seconds": result.seconds, "engine": "lbfgs",
            "epochs": epochs, "library": f"{iterative.DISTRIBUTION} {result.version}"}, canvas


def run_one(run_phase_job, train, test, dataset: str, gridsize: int, seed: int, args, floor: dict,
            loss: str | None = None, overlap: str | None = None) -> dict:
    """Train and stitch one run; returns its record for quality.json. loss, overlap: the cell's
    (default: the first of ``args.loss`` and ``args.overlap``; the overlap NO_OVERLAP at gridsize 1)."""
    loss = args.loss[0] if loss is None else loss
    overlap = (NO_OVERLAP if gridsize == 1 else args.overlap[0]) if overlap is None else overlap
    run_root = args.out / "runs" / run_name(dataset, gridsize, loss, overlap, seed)
    overlap_spec = {} if overlap == NO_OVERLAP else {"overlap": overlap}
    result = run_phase_job(
        train, test,
        grouping=GroupingSpec(gridsize=gridsize, neighbor_count=NEIGHBOR_COUNT, n_groups=args.n_groups,
                              n_images=None, seed=seed),
        model_spec=ModelSpec(gridsize=gridsize, seed=seed, learning_rate=args.learning_rate, **overlap_spec,
                             **LOSSES[loss]),
        train_spec=TrainSpec(max_epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                             validation_split=VALIDATION_SPLIT),
        run_dir=run_root / "run", bundle_dir=run_root / "bundle", stitch_from=args.stitch_from,
        phase_offsets=args.phase_offsets,
    )
    quality = {key: result.quality[key] for key in (*METRICS, *EVERY_WAY)}
    return {
        "dataset": dataset, "gridsize": gridsize, "loss": loss, "overlap": overlap, "seed": seed, **quality,
        "amp_mae_to_floor": ratio(quality["amp_mae"], floor["amp_mae"]),
        "phase_mae_to_floor": ratio(quality["phase_mae"], floor["phase_mae"]),
        "n_groups_train": result.n_groups_train, "train_s": result.timings_s["training"],
        "inference_stitching_s": result.timings_s["inference"] + result.timings_s["stitching"],
        "run_dir": str(run_root / "run"),
    }


class QualityStudy:
    """One study: every dataset's references and every cell's seeds, written as they come (quality.json)
    and logged to MLflow (:class:`StudyTracking`); the table and the figures once every run is done."""

    def __init__(self, args: argparse.Namespace, threads: int, run_phase_job, stitch_patches, compute: dict):
        self.args, self.threads = args, threads
        self.run_phase_job, self.stitch_patches = run_phase_job, stitch_patches
        self.cells = study_cells(args.gridsizes, args.loss, args.overlap)
        self.document = {"settings": {**{key: getattr(args, key) for key in SETTINGS},
                                      "cells": [list(cell) for cell in self.cells], "compute": compute,
                                      "neighbor_count": NEIGHBOR_COUNT, "validation_split": VALIDATION_SPLIT,
                                      "reference_groups_seed": 0},
                         "references": [], "runs": [], "summaries": []}
        self.tracking = StudyTracking(None if args.no_tracking else args.tracking_uri, Path.cwd())
        self.test_sets, self.iterative_canvases = {}, {}

    def run(self) -> None:
        out = self.args.out
        self.document["mlflow"] = self.tracking.start(self.document["settings"])
        try:
            for dataset in self.args.datasets:
                self._dataset(dataset)
            self._save(complete=True)
            write_table(out / "quality.md", self.document)
            figure = write_figure(out, self.document["runs"], self.test_sets, self.iterative_canvases)
            zoom = write_zoom_figure(out, self.document["runs"], self.test_sets, self.iterative_canvases)
        except BaseException:  # cut short (Ctrl-C, a time limit) or failed: its MLflow run ends FAILED
            self.tracking.finish(out, complete=False)
            raise
        print(f"table: {out / 'quality.md'}  (data: quality.json, figures: {figure.name}, {zoom.name})")
        self.tracking.finish(out, complete=True)

    def _dataset(self, dataset: str) -> None:
        args = self.args
        train, test = simulate_dataset(SimulationSpec(object_kind=DATASETS[dataset], seed=0, n_images=args.n_images))
        self.test_sets[dataset] = test
        iterative, self.iterative_canvases[dataset] = iterative_reference(test, args.iterative_epochs, self.threads,
                                                                          args.device)
        if isinstance(iterative, dict):
            print(f"{dataset:9s} iterative: amp_mae={iterative['amp_mae']:.4f} phase_mae={iterative['phase_mae']:.4f} "
                  f"in {iterative['seconds']:.1f} s", flush=True)
        for gridsize in args.gridsizes:
            references = reference_quality(train, test, gridsize, 0, self.stitch_patches)
            measured = {**references, "iterative": iterative}
            self.document["references"].append({"dataset": dataset, "gridsize": gridsize, **measured})
            self.tracking.log_references(dataset, gridsize, measured)
            for _, loss, overlap in (cell for cell in self.cells if cell[0] == gridsize):
                runs = [self._seed(train, test, dataset, gridsize, seed, references["floor"], loss, overlap)
                        for seed in range(args.seeds)]
                summary = {"dataset": dataset, "gridsize": gridsize, "loss": loss, "overlap": overlap,
                           **summarise(runs, references["floor"])}
                self.document["summaries"].append(summary)
                self.tracking.log_summary(summary)

    def _seed(self, train, test, dataset: str, gridsize: int, seed: int, floor: dict, loss: str, overlap: str) -> dict:
        """One trained run, logged to MLflow and saved in quality.json (a study cut short keeps it)."""
        start_time_ms = int(time.time() * 1000)
        record = run_one(self.run_phase_job, train, test, dataset, gridsize, seed, self.args, floor, loss, overlap)
        record["mlflow_run_id"] = self.tracking.log_run(record, self.document["settings"], start_time_ms)
        self.document["runs"].append(record)
        self._save(complete=False)
        print_run(record)
        return record

    def _save(self, complete: bool) -> None:
        self.document["mlflow"] = self.tracking.entry()
        write_document(self.args.out, self.document, complete)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = determinism.resolve_threads(args.threads)
    try:
        run_phase_job, stitch_patches, compute = load_backend(args.backend, threads, args.device)
    except ValueError as exc:  # a GPU that is named but missing: say so before any work
        print(f"bench_quality: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    QualityStudy(args, threads, run_phase_job, stitch_patches, compute).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

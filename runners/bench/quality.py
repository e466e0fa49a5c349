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
reconstruction), ``quality.png`` (per dataset:
truth | PINN | error of the median seed's stitched reconstruction at gridsize 2, or the largest
gridsize run, after the metrics' global fit, then truth | iterative | error;
``quality_<dataset>[_iterative].png`` are its parts; with several losses or overlaps the first cell of that
gridsize), ``quality_zoom.png`` (per dataset, a ZOOM_SIZE x ZOOM_SIZE px crop at the centre of the test
canvas, one object pixel a block (no interpolation), amplitude after the global fit, one colour scale
per dataset (the truth's): truth | the median seed of every (gridsize, loss, overlap) cell | iterative)
and ``runs/`` (each run's run_dir and bundle: ``<dataset>_gs<gridsize>[_<loss>][_<overlap>]_seed<seed>``,
the loss and overlap named only where they are not the defaults).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np

from ptycho import architecture, determinism, stitching
from ptycho.evaluation import bundle, plots
from ptycho.data.batches import group_data
from ptycho.pipeline import RECONSTRUCTION_FILE, STITCH_SOURCES
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.stitching import PHASE_OFFSETS
from ptycho.torch.device import check_device_name

DATASETS = {"simulated": "mixed", "lines": "lines"}  # dataset -> SimulationSpec.object_kind
AMPLITUDE_ONLY = {"lines": "amplitude only (true phase is 0): judge amp_* metrics"}
BACKENDS = ("pytorch", "tensorflow")
LEARNING_RATE = ModelSpec.learning_rate  # the study's default: ModelSpec's
EPOCHS = 10  # 960 steps with a group at each of 1536 training positions (round 10: 30 epochs of 384 groups, 720)
LOSSES = {"poisson_nll": {}, "diffraction_mae": {"nll_weight": 0.0, "diffraction_mae_weight": 1.0}}  # -> ModelSpec
NEIGHBOR_COUNT = 7
VALIDATION_SPLIT = 0.05
FIGURE_GRIDSIZE = 2
ITERATIVE_MISSING = "n/a (cdtools not installed: pip install -e \".[iterative]\")"
METRICS = ("amp_mae", "phase_mae", "amp_ssim", "phase_ssim", "frc50", "amp_psnr")
LOWER_IS_BETTER = {"amp_mae", "phase_mae"}  # SSIM, FRC50 (cycles/px) and PSNR (dB): higher is better
DEFAULT_LOSS, DEFAULT_OVERLAP = "poisson_nll", ModelSpec.overlap
NO_OVERLAP = "-"  # a gridsize-1 run's overlap: it has no group to average
ABLATION = {"gridsizes": [1, 2], "loss": ["poisson_nll", "diffraction_mae"], "overlap": ["weighted", "uniform"]}
ZOOM_SIZE = 64  # px of object per side in quality_zoom.png
ZOOM_PANEL_IN, ZOOM_ROW_IN, ZOOM_BAR_IN = 2.4, 3.0, 1.2  # a panel's width, a dataset row's height, the bar's


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


def iterative_cell(summary: dict, runs: list[dict], reference) -> str:
    """The summary row's comparison with the iterative reference (module docstring)."""
    if not isinstance(reference, dict):
        return reference
    inference = statistics.median(run["inference_stitching_s"] for run in runs)
    times = {key: _cell(ratio(summary[key]["median"], reference[key]), 1) for key in ("amp_mae", "phase_mae")}
    return (f"PINN / iterative: amp_mae {times['amp_mae']}x, phase_mae {times['phase_mae']}x; "
            f"inference {inference:.1f} s vs {reference['seconds']:.1f} s")


def ratio(value: float, floor: float) -> float | None:
    """value / floor, or None where the floor is 0 (the lines object's phase)."""
    return value / floor if floor > 0 else None


def _groups_text(n_groups: int | None) -> str:
    return "a group seeded at every training position" if n_groups is None else f"{n_groups} groups"


def study_cells(gridsizes, losses, overlaps) -> list[tuple[int, str, str]]:
    """The study's (gridsize, loss, overlap) cells in run order: every loss at every gridsize, every
    overlap only at gridsize > 1 (gridsize 1's is NO_OVERLAP)."""
    return [(gridsize, loss, overlap) for gridsize in gridsizes for loss in losses
            for overlap in (overlaps if gridsize > 1 else [NO_OVERLAP])]


def run_name(dataset: str, gridsize: int, loss: str, overlap: str, seed: int) -> str:
    """A run's folder under runs/: the loss and overlap named only where they are not the defaults,
    so the default study keeps its folder names."""
    parts = [dataset, f"gs{gridsize}"]
    parts += [loss] if loss != DEFAULT_LOSS else []
    parts += [overlap] if overlap not in (DEFAULT_OVERLAP, NO_OVERLAP) else []
    return "_".join([*parts, f"seed{seed}"])


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


TIMES = ("train_s", "inference_stitching_s")


def summarise(runs: list[dict], floor: dict) -> dict:
    """Median and worst over the seeds of each metric, train seconds, ratios to the floor."""
    summary = {"n_seeds": len(runs)}
    for key in (*METRICS, *TIMES):
        values = [run[key] for run in runs]
        worst = max(values) if key in LOWER_IS_BETTER or key in TIMES else min(values)
        summary[key] = {"median": statistics.median(values), "worst": worst}
    for key in ("amp_mae", "phase_mae"):
        summary[f"{key}_to_floor"] = {stat: ratio(summary[key][stat], floor[key]) for stat in ("median", "worst")}
    return summary


def median_run(runs: list[dict]) -> dict:
    """The run with the median amp_mae (the lower middle one for an even count)."""
    ranked = sorted(runs, key=lambda run: run["amp_mae"])
    return ranked[(len(ranked) - 1) // 2]


def _cell(value, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dict):
        return f"{_cell(value['median'], digits)} / {_cell(value['worst'], digits)}"
    return f"{value:.{digits}f}"


TABLE_COLUMNS = (("amp_mae", 4), ("phase_mae", 4), ("amp_ssim", 3), ("phase_ssim", 3), ("frc50", 3),
                 ("amp_psnr", 2), ("train_s", 1), ("inference_stitching_s", 1), ("amp_mae_to_floor", 2),
                 ("phase_mae_to_floor", 2))
# amp / phase MAE of the same patches with each way of setting their phase offsets
OFFSET_COLUMNS = tuple(f"offsets_{mode}" for mode in PHASE_OFFSETS)
TABLE_HEADER = ("dataset", "gridsize", "row", "loss", "overlap", "seed", "amp_mae", "phase_mae (rad)", "amp_ssim",
                "phase_ssim", "frc50 (cyc/px)", "amp_psnr (dB)", "train s", "infer+stitch s", "amp_mae / floor",
                "phase_mae / floor",
                *(f"offsets {mode}: amp / phase" for mode in PHASE_OFFSETS), "iterative ref.", "note")
EVERY_WAY = tuple(f"{name}_{label}" for label in OFFSET_COLUMNS for name in ("amp_mae", "phase_mae"))


def table_row(dataset: str, gridsize: int, label: str, seed, values: dict, iterative: str = "",
              loss: str = "-", overlap: str = "-") -> str:
    cells = [dataset, str(gridsize), label, loss, overlap, str(seed)]
    cells += [_cell(values.get(key), digits) if key in values else "-" for key, digits in TABLE_COLUMNS]
    cells += [f"{values[f'amp_mae_{label}']:.4f} / {values[f'phase_mae_{label}']:.4f}"
              if f"amp_mae_{label}" in values else "-" for label in OFFSET_COLUMNS]
    cells += [iterative, AMPLITUDE_ONLY.get(dataset, "")]
    return "| " + " | ".join(cells) + " |"


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _cell_of(record: dict) -> tuple[str, str]:
    """(loss, overlap) of a run or summary (DEFAULT_LOSS and the gridsize's default overlap for a record
    written before they were recorded)."""
    default_overlap = NO_OVERLAP if record["gridsize"] == 1 else DEFAULT_OVERLAP
    return record.get("loss", DEFAULT_LOSS), record.get("overlap", default_overlap)


def _cell_label(gridsize: int, loss: str, overlap: str) -> str:
    return f"gridsize {gridsize}, {loss}" + ("" if overlap == NO_OVERLAP else f", {overlap} overlap")


def write_table(path: Path, document: dict) -> None:
    """quality.md: per (dataset, gridsize) the floor, the ceiling and the iterative, then per (loss, overlap)
    one row per run and the summary."""
    settings = document["settings"]
    lines = [
        "# Reconstruction quality: PINN against the constant-object floor and the true-patch ceiling", "",
        f"Backend {settings['backend']} on {settings['compute'].get('device', 'cpu')}, "
        f"loss {' / '.join(_as_list(settings['loss']))}, "
        f"learning rate {settings['learning_rate']:g}, "
        f"epochs {settings['epochs']}, {_groups_text(settings['n_groups'])}, batch "
        f"{settings['batch_size']}, overlap at gridsize > 1 "
        f"{' / '.join(_as_list(settings.get('overlap', DEFAULT_OVERLAP)))}, "
        f"{settings['n_images']} simulated positions (a quarter test), threads "
        f"{settings['compute']['threads']}. Metrics on the stitched test reconstruction after the global "
        "amplitude scale and phase offset fit (ptycho.evaluation.quality); amp_psnr: 20 log10(the truth's peak amplitude / "
        "amplitude RMSE). Summary cells: median / worst over seeds. "
        "floor: every patch the constant a0, phase 0; ceiling: the true patches, stitched alike. "
        f"iterative: cdtools L-BFGS, {settings['iterative_epochs']} epochs, probe known, the same test positions "
        "on the same canvas convention (its train s: the reconstruction's seconds).", "",
        "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER),
    ]
    for entry in document["references"]:
        dataset, gridsize = entry["dataset"], entry["gridsize"]
        floor = entry["floor"]
        iterative = entry["iterative"]
        for name in ("floor", "ceiling", "iterative"):
            if not isinstance(entry[name], dict):
                lines.append(table_row(dataset, gridsize, name, "-", {}, iterative=entry[name]))
                continue
            values = {**entry[name], "amp_mae_to_floor": ratio(entry[name]["amp_mae"], floor["amp_mae"]),
                      "phase_mae_to_floor": ratio(entry[name]["phase_mae"], floor["phase_mae"])}
            if name == "iterative":
                values["train_s"] = entry[name]["seconds"]
            lines.append(table_row(dataset, gridsize, name, "-", values))
        for summary in document["summaries"]:
            if (summary["dataset"], summary["gridsize"]) != (dataset, gridsize):
                continue
            cell = _cell_of(summary)
            runs = [run for run in document["runs"]
                    if (run["dataset"], run["gridsize"]) == (dataset, gridsize) and _cell_of(run) == cell]
            lines += [table_row(dataset, gridsize, "PINN", run["seed"], run, loss=cell[0], overlap=cell[1])
                      for run in runs]
            lines.append(table_row(dataset, gridsize, f"summary of {summary['n_seeds']} seeds", "-", summary,
                                   iterative=iterative_cell(summary, runs, iterative), loss=cell[0], overlap=cell[1]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _truth_part(path: Path, stitched, test, dataset: str):
    """truth | reconstruction | error of one stitched canvas (the bundle's truth figure), read back as an image."""
    from matplotlib.image import imread

    truth, inside = stitching.ground_truth_window(test.object_guess, stitched)
    rows, mask = bundle.truth_comparison_rows(stitched.canvas, stitched.covered, truth, inside)
    if dataset in AMPLITUDE_ONLY:
        rows = {"amplitude": rows["amplitude"]}
    return imread(plots.save_truth_comparison(path, rows, mask))


def write_figure(out: Path, runs: list[dict], test_sets: dict, iterative_canvases: dict) -> Path:
    """quality.png: per dataset truth | PINN | error of the median seed, then truth | iterative | error
    (the bundle's truth figure, stacked). iterative_canvases: dataset -> Stitched or None."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    parts = []
    for dataset, test in test_sets.items():
        candidates = [run for run in runs if run["dataset"] == dataset]
        gridsize = FIGURE_GRIDSIZE if any(r["gridsize"] == FIGURE_GRIDSIZE for r in candidates) \
            else max(r["gridsize"] for r in candidates)
        at_gridsize = [r for r in candidates if r["gridsize"] == gridsize]
        cell = _cell_of(at_gridsize[0])  # the first (loss, overlap) run at that gridsize
        seeds = [r for r in at_gridsize if _cell_of(r) == cell]
        chosen = median_run(seeds)
        stitched = load_stitched(chosen["run_dir"])
        only = ", amplitude only" if dataset in AMPLITUDE_ONLY else ""
        which = f"gridsize {gridsize}" if len({_cell_of(r) for r in candidates}) == len(
            {r["gridsize"] for r in candidates}) else _cell_label(gridsize, *cell)
        parts.append((f"{dataset}: PINN at {which}, seed {chosen['seed']} (median amp_mae of {len(seeds)} "
                      f"seeds){only}", _truth_part(out / f"quality_{dataset}.png", stitched, test, dataset)))
        if iterative_canvases.get(dataset) is not None:
            parts.append((f"{dataset}: iterative reference (cdtools L-BFGS){only}",
                          _truth_part(out / f"quality_{dataset}_iterative.png", iterative_canvases[dataset], test,
                                      dataset)))
    heights = [image.shape[0] for _, image in parts]
    width = max(image.shape[1] for _, image in parts)
    fig = Figure(figsize=(width / plots.DPI, (sum(heights) + 40 * len(parts)) / plots.DPI), dpi=plots.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(parts), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (title, image) in zip(axes, parts):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(title, fontsize=12)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=0.97, hspace=0.08)
    path = out / "quality.png"
    fig.savefig(path)
    return path


def load_stitched(run_dir) -> stitching.Stitched:
    """The stitched test reconstruction a run saved (RECONSTRUCTION_FILE in its run_dir)."""
    with np.load(Path(run_dir) / RECONSTRUCTION_FILE) as saved:
        return stitching.Stitched(saved["canvas"], saved["covered"], saved["offsets_xy"], saved["centre_xy"],
                                  int(saved["crop"]))


def _object_crop(image: np.ndarray, top: int, left: int, y0: int, x0: int, size: int) -> np.ndarray:
    """(size, size) float64 of ``image``, whose pixel (0, 0) is object pixel (top, left), over object rows
    y0.. and columns x0..; NaN where the image does not reach."""
    crop = np.full((size, size), np.nan)
    r0, c0 = y0 - top, x0 - left
    rows = slice(max(r0, 0), min(r0 + size, image.shape[0]))
    cols = slice(max(c0, 0), min(c0 + size, image.shape[1]))
    if rows.start < rows.stop and cols.start < cols.stop:
        crop[rows.start - r0:rows.stop - r0, cols.start - c0:cols.stop - c0] = image[rows, cols]
    return crop


def _fitted_amplitude(stitched: stitching.Stitched, object_guess: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(the canvas's amplitude after the metrics' global fit, NaN where uncovered; the object row and column
    of its pixel (0, 0))."""
    truth, inside = stitching.ground_truth_window(object_guess, stitched)
    rows, _ = bundle.truth_comparison_rows(stitched.canvas, stitched.covered, truth, inside)
    top, left = np.round(stitched.centre_xy[::-1]).astype(int) - stitched.canvas.shape[0] // 2
    return np.where(stitched.covered, rows["amplitude"][1], np.nan), int(top), int(left)


def zoom_panels(runs: list[dict], test, iterative_canvas, size: int = ZOOM_SIZE) -> tuple[int, int, list]:
    """(y0, x0, [(title, crop or None)]) of one dataset's row of quality_zoom.png: the object rows y0..y0+size-1
    and columns x0..x0+size-1 around the centre of the test canvas (the first run's ``centre_xy``); the truth's
    amplitude, the median seed's of every (gridsize, loss, overlap) cell of ``runs`` in run order and the
    iterative's (None without one), each (size, size) float64 after the metrics' global fit, NaN where uncovered."""
    centre_x, centre_y = np.round(load_stitched(runs[0]["run_dir"]).centre_xy).astype(int)
    y0, x0 = int(centre_y) - size // 2, int(centre_x) - size // 2
    panels = [("truth", _object_crop(np.abs(np.asarray(test.object_guess)), 0, 0, y0, x0, size))]
    for gridsize, loss, overlap in dict.fromkeys((run["gridsize"], *_cell_of(run)) for run in runs):
        chosen = median_run([run for run in runs if (run["gridsize"], *_cell_of(run)) == (gridsize, loss, overlap)])
        amplitude, top, left = _fitted_amplitude(load_stitched(chosen["run_dir"]), test.object_guess)
        title = (f"PINN gs{gridsize} {loss}" + ("" if overlap == NO_OVERLAP else f"\n{overlap} overlap")
                 + f", seed {chosen['seed']}\namp_mae {chosen['amp_mae']:.4f}")
        panels.append((title, _object_crop(amplitude, top, left, y0, x0, size)))
    if iterative_canvas is None:
        panels.append(("iterative: n/a", None))
    else:
        amplitude, top, left = _fitted_amplitude(iterative_canvas, test.object_guess)
        panels.append(("iterative (cdtools)", _object_crop(amplitude, top, left, y0, x0, size)))
    return y0, x0, panels


def write_zoom_figure(out: Path, runs: list[dict], test_sets: dict, iterative_canvases: dict,
                      size: int = ZOOM_SIZE) -> Path:
    """quality_zoom.png (module docstring): one row of ``zoom_panels`` per dataset, drawn pixel for pixel
    (interpolation 'nearest') on the truth crop's colour range (its 1st to 99th percentile)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n_rows, n_cols = len(test_sets), len({(run["gridsize"], *_cell_of(run)) for run in runs}) + 2
    width, height = n_cols * ZOOM_PANEL_IN + ZOOM_BAR_IN, n_rows * ZOOM_ROW_IN + 0.5
    fig = Figure(figsize=(width, height), dpi=plots.DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    fig.subplots_adjust(left=0.6 / width, right=(n_cols * ZOOM_PANEL_IN) / width, bottom=0.02,
                        top=1 - 0.75 / height, wspace=0.12, hspace=0.3)
    fig.suptitle(f"Amplitude, {size} x {size} px at the centre of the test canvas, one object pixel per block "
                 "(no interpolation),\nafter the metrics' global fit; each row on its truth's colour range",
                 fontsize=9)
    for row, (dataset, test) in enumerate(test_sets.items()):
        y0, x0, panels = zoom_panels([run for run in runs if run["dataset"] == dataset], test,
                                     iterative_canvases.get(dataset), size)
        limits = plots.robust_limits(panels[0][1])
        for ax, (title, image) in zip(axes[row], panels):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_box_aspect(1)
            ax.set_title(title, fontsize=8)
            if image is None:
                ax.text(0.5, 0.5, "no iterative reference\n(cdtools not installed)", ha="center", va="center",
                        fontsize=8, transform=ax.transAxes)
                continue
            artist = ax.imshow(np.ma.masked_invalid(image), cmap=plots.AMPLITUDE_CMAP, vmin=limits[0],
                               vmax=limits[1], interpolation="nearest", origin="upper")
            if title == "truth":
                truth_artist = artist
        axes[row, 0].set_ylabel(f"{dataset}\nobject rows {y0}..{y0 + size - 1}\ncolumns {x0}..{x0 + size - 1}",
                                fontsize=8)
        axes[row, -1].apply_aspect()
        box = axes[row, -1].get_position()
        bar = fig.colorbar(truth_artist, cax=fig.add_axes((box.x1 + 0.2 / width, box.y0, 0.15 / width, box.height)))
        bar.set_label(f"amplitude\n{limits[0]:.3g} .. {limits[1]:.3g}", fontsize=8)
    path = out / "quality_zoom.png"
    fig.savefig(path, dpi=plots.DPI)
    return path


def write_document(out: Path, document: dict, complete: bool) -> None:
    """quality.json, atomically (a temporary file, then a rename), with ``complete`` false until
    the last run: a study that is stopped (a time limit, Ctrl-C) keeps every finished run."""
    path = out / "quality.json"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps({**document, "complete": complete}, indent=2, default=str) + "\n",
                         encoding="utf-8")
    os.replace(temporary, path)


def _print_run(run: dict) -> None:
    loss, overlap = _cell_of(run)
    print(f"{run['dataset']:9s} gridsize={run['gridsize']} seed={run['seed']}: amp_mae={run['amp_mae']:.4f} "
          f"phase_mae={run['phase_mae']:.4f} amp_psnr={run['amp_psnr']:.2f} dB "
          f"amp/floor={_cell(run['amp_mae_to_floor'], 2)} "
          f"phase/floor={_cell(run['phase_mae_to_floor'], 2)} train {run['train_s']:.1f} s, "
          f"inference+stitching {run['inference_stitching_s']:.1f} s (loss {loss}, overlap {overlap})", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = determinism.resolve_threads(args.threads)
    try:
        run_phase_job, stitch_patches, compute = load_backend(args.backend, threads, args.device)
    except ValueError as exc:  # a GPU that is named but missing: say so before any work
        print(f"bench_quality: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {key: getattr(args, key) for key in
                ("datasets", "gridsizes", "seeds", "epochs", "n_groups", "batch_size", "n_images", "backend",
                 "device", "learning_rate", "loss", "overlap", "ablation", "stitch_from", "phase_offsets",
                 "iterative_epochs")}
    cells = study_cells(args.gridsizes, args.loss, args.overlap)
    document = {"settings": {**settings, "cells": [list(cell) for cell in cells], "compute": compute,
                             "neighbor_count": NEIGHBOR_COUNT,
                             "validation_split": VALIDATION_SPLIT, "reference_groups_seed": 0},
                "references": [], "runs": [], "summaries": []}
    test_sets, iterative_canvases = {}, {}
    for dataset in args.datasets:
        train, test = simulate_dataset(SimulationSpec(object_kind=DATASETS[dataset], seed=0, n_images=args.n_images))
        test_sets[dataset] = test
        iterative, iterative_canvases[dataset] = iterative_reference(test, args.iterative_epochs, threads,
                                                                     args.device)
        if isinstance(iterative, dict):
            print(f"{dataset:9s} iterative: amp_mae={iterative['amp_mae']:.4f} phase_mae={iterative['phase_mae']:.4f} "
                  f"in {iterative['seconds']:.1f} s", flush=True)
        for gridsize in args.gridsizes:
            references = reference_quality(train, test, gridsize, 0, stitch_patches)
            document["references"].append({"dataset": dataset, "gridsize": gridsize, **references,
                                           "iterative": iterative})
            for _, loss, overlap in (cell for cell in cells if cell[0] == gridsize):
                runs = []
                for seed in range(args.seeds):  # positional: run_one's first eight, then the cell
                    runs.append(run_one(run_phase_job, train, test, dataset, gridsize, seed, args,
                                        references["floor"], loss, overlap))
                    document["runs"].append(runs[-1])
                    write_document(args.out, document, complete=False)  # a study cut short keeps its runs
                    _print_run(runs[-1])
                document["summaries"].append({"dataset": dataset, "gridsize": gridsize, "loss": loss,
                                              "overlap": overlap, **summarise(runs, references["floor"])})
    write_document(args.out, document, complete=True)
    write_table(args.out / "quality.md", document)
    figure = write_figure(args.out, document["runs"], test_sets, iterative_canvases)
    zoom = write_zoom_figure(args.out, document["runs"], test_sets, iterative_canvases)
    print(f"table: {args.out / 'quality.md'}  (data: quality.json, figures: {figure.name}, {zoom.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

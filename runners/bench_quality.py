"""Reconstruction-quality study (not a test): ``python -m runners.bench_quality [--seeds 5] ...``.

For each dataset (``simulated``: the default mixed object; ``lines``: the community's
amplitude-only lines object), each gridsize and each seed it trains the PINN with the
chosen backend's ``run_phase_job`` (PyTorch by default; ``--backend tensorflow`` imports
TensorFlow instead, never both) and reads the stitched test reconstruction's quality
(``ptycho.stitching.stitched_quality``: amplitude and phase MAE and SSIM, FRC50, after the
global amplitude scale and phase offset fit of ``ptycho.quality``), stitched as the runner
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
diffraction-amplitude MAE instead of the Poisson NLL. Both are recorded in the settings.

The lines object's true phase is 0 everywhere: its phase metrics are reported but its rows
say "amplitude only", and the floor's phase MAE is exactly 0 there, so no phase ratio exists.

Writes into ``--out`` (default ``bench_quality_out/``): ``quality.json`` (settings, every run
of every seed, the references, the summaries; rewritten after every run with ``complete``
false until the study ends, so a study cut short keeps its finished runs), ``quality.md``
(one row per run, the floor and ceiling rows and a summary row per dataset and gridsize:
median / worst over seeds and the ratio to the floor; its "iterative ref." cell: the PINN's
median MAE over the iterative's and both times, inference + stitching against the
reconstruction), ``quality.png`` (per dataset:
truth | PINN | error of the median seed's stitched reconstruction at gridsize 2, or the largest
gridsize run, after the metrics' global fit, then truth | iterative | error;
``quality_<dataset>[_iterative].png`` are its parts) and ``runs/`` (each run's run_dir and bundle).
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

from ptycho import architecture, bundle, determinism, plots, stitching
from ptycho.batches import group_data
from ptycho.phase_job import RECONSTRUCTION_FILE, STITCH_SOURCES
from ptycho.simulate import SimulationSpec, simulate_dataset
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
METRICS = ("amp_mae", "phase_mae", "amp_ssim", "phase_ssim", "frc50")
LOWER_IS_BETTER = {"amp_mae", "phase_mae"}  # SSIM and FRC50 (cycles/px): higher is better


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
    parser.add_argument("--gridsizes", nargs="+", type=int, choices=(1, 2), default=[1, 2], help="default: 1 2")
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
    parser.add_argument("--loss", choices=LOSSES, default="poisson_nll",
                        help="the unsupervised training loss: poisson_nll (default, the runner's) or "
                             "diffraction_mae (mean |A_pred - sqrt(I_obs)|)")
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
    args.datasets, args.gridsizes = list(dict.fromkeys(args.datasets)), sorted(set(args.gridsizes))
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
        from ptycho.inference import stitch_patches
        from ptycho.workflow import run_phase_job
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
    return (f"PINN / iterative: amp_mae {summary['amp_mae']['median'] / reference['amp_mae']:.1f}x, "
            f"phase_mae {summary['phase_mae']['median'] / reference['phase_mae']:.1f}x; "
            f"inference {inference:.1f} s vs {reference['seconds']:.1f} s")


def ratio(value: float, floor: float) -> float | None:
    """value / floor, or None where the floor is 0 (the lines object's phase)."""
    return value / floor if floor > 0 else None


def _groups_text(n_groups: int | None) -> str:
    return "a group seeded at every training position" if n_groups is None else f"{n_groups} groups"


def run_one(run_phase_job, train, test, dataset: str, gridsize: int, seed: int, args, floor: dict) -> dict:
    """Train and stitch one run; returns its record for quality.json."""
    run_root = args.out / "runs" / f"{dataset}_gs{gridsize}_seed{seed}"
    result = run_phase_job(
        train, test,
        grouping=GroupingSpec(gridsize=gridsize, neighbor_count=NEIGHBOR_COUNT, n_groups=args.n_groups,
                              n_images=None, seed=seed),
        model_spec=ModelSpec(gridsize=gridsize, seed=seed, learning_rate=args.learning_rate, **LOSSES[args.loss]),
        train_spec=TrainSpec(max_epochs=args.epochs, batch_size=args.batch_size, seed=seed,
                             validation_split=VALIDATION_SPLIT),
        run_dir=run_root / "run", bundle_dir=run_root / "bundle", stitch_from=args.stitch_from,
        phase_offsets=args.phase_offsets,
    )
    quality = {key: result.quality[key] for key in (*METRICS, *EVERY_WAY)}
    return {
        "dataset": dataset, "gridsize": gridsize, "seed": seed, **quality,
        "amp_mae_to_floor": ratio(quality["amp_mae"], floor["amp_mae"]),
        "phase_mae_to_floor": ratio(quality["phase_mae"], floor["phase_mae"]),
        "n_groups_train": result.n_groups_train, "train_s": result.timings_s["training"],
        "inference_stitching_s": result.timings_s["inference"] + result.timings_s["stitching"],
        "run_dir": str(run_root / "run"),
    }


def summarise(runs: list[dict], floor: dict) -> dict:
    """Median and worst over the seeds of each metric, train seconds, ratios to the floor."""
    summary = {"n_seeds": len(runs)}
    for key in (*METRICS, "train_s"):
        values = [run[key] for run in runs]
        worst = max(values) if key in LOWER_IS_BETTER or key == "train_s" else min(values)
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
                 ("train_s", 1), ("amp_mae_to_floor", 2), ("phase_mae_to_floor", 2))
# amp / phase MAE of the same patches with each way of setting their phase offsets
OFFSET_COLUMNS = tuple(f"offsets_{mode}" for mode in PHASE_OFFSETS)
TABLE_HEADER = ("dataset", "gridsize", "row", "seed", "amp_mae", "phase_mae (rad)", "amp_ssim", "phase_ssim",
                "frc50 (cyc/px)", "train s", "amp_mae / floor", "phase_mae / floor",
                *(f"offsets {mode}: amp / phase" for mode in PHASE_OFFSETS), "iterative ref.", "note")
EVERY_WAY = tuple(f"{name}_{label}" for label in OFFSET_COLUMNS for name in ("amp_mae", "phase_mae"))


def table_row(dataset: str, gridsize: int, label: str, seed, values: dict, iterative: str = "") -> str:
    cells = [dataset, str(gridsize), label, str(seed)]
    cells += [_cell(values.get(key), digits) if key in values else "-" for key, digits in TABLE_COLUMNS]
    cells += [f"{values[f'amp_mae_{label}']:.4f} / {values[f'phase_mae_{label}']:.4f}"
              if f"amp_mae_{label}" in values else "-" for label in OFFSET_COLUMNS]
    cells += [iterative, AMPLITUDE_ONLY.get(dataset, "")]
    return "| " + " | ".join(cells) + " |"


def write_table(path: Path, document: dict) -> None:
    """quality.md: per (dataset, gridsize) the floor, the ceiling, one row per run and the summary."""
    settings = document["settings"]
    lines = [
        "# Reconstruction quality: PINN against the constant-object floor and the true-patch ceiling", "",
        f"Backend {settings['backend']} on {settings['compute'].get('device', 'cpu')}, loss {settings['loss']}, "
        f"learning rate {settings['learning_rate']:g}, "
        f"epochs {settings['epochs']}, {_groups_text(settings['n_groups'])}, batch "
        f"{settings['batch_size']}, {settings['n_images']} simulated positions (a quarter test), threads "
        f"{settings['compute']['threads']}. Metrics on the stitched test reconstruction after the global "
        "amplitude scale and phase offset fit (ptycho.quality). Summary cells: median / worst over seeds. "
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
        runs = [run for run in document["runs"] if (run["dataset"], run["gridsize"]) == (dataset, gridsize)]
        lines += [table_row(dataset, gridsize, "PINN", run["seed"], run) for run in runs]
        summary = next(s for s in document["summaries"] if (s["dataset"], s["gridsize"]) == (dataset, gridsize))
        lines.append(table_row(dataset, gridsize, f"summary of {summary['n_seeds']} seeds", "-", summary,
                               iterative=iterative_cell(summary, runs, iterative)))
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
        chosen = median_run([r for r in candidates if r["gridsize"] == gridsize])
        with np.load(Path(chosen["run_dir"]) / RECONSTRUCTION_FILE) as saved:
            stitched = stitching.Stitched(saved["canvas"], saved["covered"], saved["offsets_xy"],
                                          saved["centre_xy"], int(saved["crop"]))
        n_seeds = sum(r["gridsize"] == gridsize for r in candidates)
        only = ", amplitude only" if dataset in AMPLITUDE_ONLY else ""
        parts.append((f"{dataset}: PINN at gridsize {gridsize}, seed {chosen['seed']} (median amp_mae of {n_seeds} "
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


def write_document(out: Path, document: dict, complete: bool) -> None:
    """quality.json, atomically (a temporary file, then a rename), with ``complete`` false until
    the last run: a study that is stopped (a time limit, Ctrl-C) keeps every finished run."""
    path = out / "quality.json"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps({**document, "complete": complete}, indent=2, default=str) + "\n",
                         encoding="utf-8")
    os.replace(temporary, path)


def _print_run(run: dict) -> None:
    print(f"{run['dataset']:9s} gridsize={run['gridsize']} seed={run['seed']}: amp_mae={run['amp_mae']:.4f} "
          f"phase_mae={run['phase_mae']:.4f} amp/floor={_cell(run['amp_mae_to_floor'], 2)} "
          f"phase/floor={_cell(run['phase_mae_to_floor'], 2)} train {run['train_s']:.1f} s, "
          f"inference+stitching {run['inference_stitching_s']:.1f} s", flush=True)


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
                 "device", "learning_rate", "loss", "stitch_from", "phase_offsets", "iterative_epochs")}
    document = {"settings": {**settings, "compute": compute, "neighbor_count": NEIGHBOR_COUNT,
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
            runs = []
            for seed in range(args.seeds):
                runs.append(run_one(run_phase_job, train, test, dataset, gridsize, seed, args, references["floor"]))
                document["runs"].append(runs[-1])
                write_document(args.out, document, complete=False)  # a study cut short keeps its runs
                _print_run(runs[-1])
            document["summaries"].append({"dataset": dataset, "gridsize": gridsize,
                                          **summarise(runs, references["floor"])})
    write_document(args.out, document, complete=True)
    write_table(args.out / "quality.md", document)
    figure = write_figure(args.out, document["runs"], test_sets, iterative_canvases)
    print(f"table: {args.out / 'quality.md'}  (data: quality.json, figure: {figure.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PINN, iterative, and PINN then iterative (not a test): ``python -m runners.bench.pinn_iterative``.

On one simulated scan (``--n-images`` positions, ``--data-seed``; its test split is reconstructed),
quality against wall time of three ways to reconstruct it:

    iterative       cdtools' L-BFGS (``ptycho.iterative``, probe known) from the flat start, K epochs
    pinn            a trained network alone (``ptycho.pipeline.reconstruct_job``)
    pinn+iterative  the network's stitched object as the initial guess of K epochs
                    (``ptycho.iterative.start_from_canvas``; Phase C3's ``c3.init=pinn``)

for every K of ``--iterations``. Quality is ``ptycho.stitching.stitched_quality`` on C3's canvas
convention: the amplitude MAE over the constant-object floor's (the flat start itself, stitched the
same way) and FRC50. Seconds: the iterative's wall time of ``iterative.reconstruct`` (its set-up
and epochs); the network's, its grouping, loading, inference and stitching (``PINN_STEPS``, as
Phase C3 counts them) plus the placing on the solver's grid; PINN then iterative, the sum. The
frameworks' imports, one unmeasured warm-up call of each method and the network's training are not
counted (training is paid once per instrument setting).

The network: ``--network`` (as ``c3.network``: a folder holding network.json, a hub slot under
``--hub``, or an MLflow run id in ``--tracking-uri``), or else a small one trained first on PyTorch
(``--train-images`` simulated positions of seed 0, ``--epochs``; another object than the scan's).
Writes into ``--out``: ``pinn_iterative.md`` (the table and the command), ``pinn_iterative.png``
(quality against seconds), ``pinn_iterative.json`` (every row) and the network's run folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ptycho import determinism, iterative, stitching
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from runners.inputs.network_start import PINN_STEPS

ITERATIONS = (1, 2, 5, 10, 20)
NEIGHBOR_COUNT = 7
RUNNER_HUB = Path("plans/active/FIX-PYTORCH-FORWARD-PARITY-001/reports/2025-11-13T000000Z/forward_parity")  # hub.root's
COLUMNS = ("method", "K", "seconds", "amp_mae", "amp_mae_to_floor", "frc50", "phase_mae")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1; got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default=None,
                        help="a trained network (folder with network.json, hub slot or MLflow run id); "
                             "default: train a small PyTorch one first")
    parser.add_argument("--hub", type=Path, default=RUNNER_HUB,
                        help="the hub a --network slot is under; default the runner's (from the launch folder)")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db", help="where an MLflow run id is looked up")
    parser.add_argument("--n-images", type=_positive_int, default=512,
                        help="simulated positions of the scan (a quarter, its test split, reconstructed); default 512")
    parser.add_argument("--data-seed", type=int, default=1, help="the scan's simulation seed; default 1")
    parser.add_argument("--iterations", type=_positive_int, nargs="+", default=list(ITERATIONS),
                        help=f"the L-BFGS epochs K; default {' '.join(map(str, ITERATIONS))}")
    parser.add_argument("--train-images", type=_positive_int, default=512,
                        help="simulated positions (seed 0) the network trains on without --network; default 512")
    parser.add_argument("--epochs", type=_positive_int, default=10, help="training epochs without --network")
    parser.add_argument("--threads", type=_positive_int, default=None, help="default: every CPU of this process")
    parser.add_argument("--out", type=Path, default=Path("bench_pinn_iterative_out"),
                        help="default bench_pinn_iterative_out/")
    args = parser.parse_args(argv)
    args.iterations = sorted(set(args.iterations))
    return args


def trained_network(args, threads: int):
    """(the network, ``ptycho.network.TrainedNetwork``; its backend's ``reconstruct``)."""
    from ptycho.network import load_network

    if args.network is None:
        folder = train_small_network(args, threads)
    else:
        from runners.inputs.networks import find_network

        folder = find_network(args.network, launch_dir=Path.cwd(), hub_root=args.hub.resolve(),
                              tracking_uri=args.tracking_uri, download_to=args.out / "network_download",
                              key="--network")
    trained = load_network(folder)
    if trained.backend == "tensorflow":
        determinism.configure_tensorflow(threads)
        from ptycho.tf.workflow import reconstruct
    else:
        from ptycho.torch.workflow import reconstruct
    return trained, reconstruct


def train_small_network(args, threads: int) -> Path:
    """A gridsize-2 PyTorch network trained on ``--train-images`` positions of seed 0; its run folder."""
    from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
    from ptycho.torch.workflow import run_phase_job

    train, test = simulate_dataset(SimulationSpec(n_images=args.train_images, seed=0))
    run_dir = args.out / "network" / "run"
    clock = time.perf_counter()
    run_phase_job(train, test, grouping=GroupingSpec(gridsize=2, neighbor_count=NEIGHBOR_COUNT, n_groups=None,
                                                     n_images=None, seed=0),
                  model_spec=ModelSpec(gridsize=2, seed=0), train_spec=TrainSpec(max_epochs=args.epochs, seed=0),
                  run_dir=run_dir, bundle_dir=args.out / "network" / "bundle")
    print(f"trained a network on {train.n_images} positions in {time.perf_counter() - clock:.0f} s: {run_dir}",
          flush=True)
    return run_dir


def scored(stitched, data, floor_amp_mae: float) -> dict:
    quality = stitching.stitched_quality(stitched, data.object_guess)
    return {"amp_mae": quality["amp_mae"], "amp_mae_to_floor": quality["amp_mae"] / floor_amp_mae,
            "frc50": quality["frc50"], "phase_mae": quality["phase_mae"]}


def run_iterative(data, epochs: int, floor_amp_mae: float, start=None) -> tuple[dict, float]:
    """(quality, wall seconds of iterative.reconstruct) of ``epochs`` L-BFGS epochs from ``start``."""
    clock = time.perf_counter()
    result = iterative.reconstruct(data, iterative.IterativeSpec(epochs=epochs), start=start)
    seconds = time.perf_counter() - clock
    return scored(iterative.stitched(result, data), data, floor_amp_mae), seconds


def run_pinn(trained, reconstruct, data, out: Path) -> tuple[stitching.Stitched, np.ndarray, float]:
    """(the network's stitched object, that object placed on the solver's grid, the seconds of both)."""
    result = reconstruct(trained, data, run_dir=out / "pinn", bundle_dir=out / "pinn_bundle", source="the scan")
    clock = time.perf_counter()
    with np.load(out / "pinn" / "reconstruction.npz") as saved:
        canvas, covered, centre = saved["canvas"], saved["covered"], saved["centre_xy"]
        start = iterative.start_from_canvas(data, canvas, covered, centre)
    placing = time.perf_counter() - clock
    seconds = sum(result.timings_s.get(key, 0.0) for key in PINN_STEPS) + placing
    stitched = stitching.Stitched(canvas, covered, np.zeros((0, 2)), centre, data.N // 2)  # what quality reads
    return stitched, start, seconds


def floor_of(data) -> float:
    """The amplitude MAE of the flat start (C3's floor) on C3's canvas."""
    origin, shape = iterative.object_frame(data.xcoords, data.ycoords, data.N)
    flat = np.full(shape, iterative.constant_amplitude(data.diffraction, data.probe), np.complex64)
    stitched = iterative.stitched(iterative.IterativeResult(flat, origin, (0.0,), 0.0, "-"), data)
    return stitching.stitched_quality(stitched, data.object_guess)["amp_mae"]


def measure(args) -> dict:
    threads = args.threads or determinism.resolve_threads(None)
    determinism.configure_torch(threads)
    trained, reconstruct = trained_network(args, threads)
    _, data = simulate_dataset(SimulationSpec(N=trained.spec.N, n_images=args.n_images, seed=args.data_seed))
    floor = floor_of(data)
    rows = []

    def add(method, k, quality, seconds):
        rows.append({"method": method, "K": k, "seconds": seconds, **quality})
        print(f"{method:15s} K={k!s:>3s} {seconds:7.1f} s  amp_mae {quality['amp_mae']:.4f} "
              f"({quality['amp_mae_to_floor']:.3f}x floor)  frc50 {quality['frc50']:.3f}", flush=True)

    # each method once unmeasured: first-call costs (allocations, kernels) are no method's
    reconstruct(trained, data, run_dir=args.out / "warm", bundle_dir=args.out / "warm_bundle")
    run_iterative(data, 1, floor)
    stitched, start, pinn_seconds = run_pinn(trained, reconstruct, data, args.out)
    add("pinn", "-", scored(stitched, data, floor), pinn_seconds)
    for k in args.iterations:
        add("iterative", k, *run_iterative(data, k, floor))
    for k in args.iterations:
        quality, seconds = run_iterative(data, k, floor, start)
        add("pinn+iterative", k, quality, pinn_seconds + seconds)
    provenance = trained.card.get("provenance", {})
    return {"rows": rows, "floor_amp_mae": floor, "n_positions": data.n_images, "N": data.N,
            "network": {"folder": str(trained.folder), "backend": trained.backend, "gridsize": trained.spec.gridsize,
                        "mlflow_run_id": provenance.get("mlflow_run_id", "-")},
            "threads": threads, "command": "python -m runners.bench.pinn_iterative " + " ".join(sys.argv[1:])}


def targets(study: dict) -> list[str]:
    """The issue's target: within 1.1x of the converged iterative MAE in <= 1/3 of its wall time."""
    flat = [row for row in study["rows"] if row["method"] == "iterative"]
    converged = flat[-1]
    lines = [f"Converged reference: iterative K={converged['K']}, amp MAE {converged['amp_mae']:.4f} in "
             f"{converged['seconds']:.1f} s."]
    for row in (row for row in study["rows"] if row["method"] == "pinn+iterative"):
        ratio, share = row["amp_mae"] / converged["amp_mae"], row["seconds"] / converged["seconds"]
        met = "met" if ratio <= 1.1 and share <= 1 / 3 else "not met"
        lines.append(f"- PINN + {row['K']} epochs: {ratio:.2f}x its MAE in {share:.2f} of its time ({met})")
    return lines


def write_table(study: dict, path: Path) -> None:
    header = "| method | K | seconds | amp MAE | amp MAE / floor | FRC50 | phase MAE (rad) |"
    lines = [f"Command: `{study['command']}`", "",
             f"{study['n_positions']} test positions, N={study['N']}, network {study['network']['backend']} "
             f"gridsize {study['network']['gridsize']} ({study['network']['folder']}), {study['threads']} threads; "
             f"floor amp MAE {study['floor_amp_mae']:.4f}.", "", header, "|" + "---|" * 7]
    for row in study["rows"]:
        lines.append(f"| {row['method']} | {row['K']} | {row['seconds']:.1f} | {row['amp_mae']:.4f} | "
                     f"{row['amp_mae_to_floor']:.3f} | {row['frc50']:.3f} | {row['phase_mae']:.4f} |")
    path.write_text("\n".join([*lines, "", *targets(study), ""]), encoding="utf-8")


def write_figure(study: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    big = {"pinn": 12}
    for method, style in (("iterative", "o-"), ("pinn+iterative", "s-"), ("pinn", "*")):
        rows = [row for row in study["rows"] if row["method"] == method]
        seconds = [row["seconds"] for row in rows]
        for axis, key in zip(axes, ("amp_mae_to_floor", "frc50")):
            axis.plot(seconds, [row[key] for row in rows], style, label=method, markersize=big.get(method, 5))
            for row in rows if method != "pinn" else ():  # each point's K
                axis.annotate(str(row["K"]), (row["seconds"], row[key]), fontsize=7, xytext=(3, 3),
                              textcoords="offset points")
    for axis, label in zip(axes, ("amplitude MAE / constant-object floor", "FRC50 (cycles/pixel)")):
        axis.set_xscale("log")
        axis.set_xlabel("wall time (s)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"PINN, iterative and PINN then iterative: {study['n_positions']} positions, N={study['N']} "
                    "(K: L-BFGS epochs)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    study = measure(args)
    (args.out / "pinn_iterative.json").write_text(json.dumps(study, indent=2) + "\n", encoding="utf-8")
    write_table(study, args.out / "pinn_iterative.md")
    write_figure(study, args.out / "pinn_iterative.png")
    print(f"wrote {args.out / 'pinn_iterative.md'} and {args.out / 'pinn_iterative.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

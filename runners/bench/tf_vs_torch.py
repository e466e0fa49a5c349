"""Benchmark: PyTorch port vs TensorFlow training throughput, side by side in one run.

    python -m runners.bench.tf_vs_torch                      # scaled settings, batch 4 and 16
    python -m runners.bench.tf_vs_torch --epochs 6 --batch-sizes 16 --torch-threads 2

Scaled phase settings: a compact subset of 64 images of the default simulated dataset,
32 groups, gridsize 2, K = 7, no validation split, XLA translation off (the C1 phase).
Each (backend, batch size, thread count) trains in its own subprocess, so that neither
framework's thread pool competes with the other's, through the backend's own ``train``
(``ptycho.tf.training.train`` / ``ptycho.torch.training.train``). Steady throughput is the
number of groups over the median epoch time, the first epoch (tracing, warm-up) excluded;
the best (fastest) steady epoch is reported too, as other load on a shared machine slows
single epochs far more than it speeds any.
torch runs with each thread count of ``--torch-threads``: its OpenMP threads busy-wait, so
on a loaded 2-core machine one thread can beat two.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

SCALED = {"n_images": 64, "n_groups": 32, "gridsize": 2, "neighbor_count": 7, "seed": 0}


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        print(json.dumps(_measure(args.worker, args.batch_size, args.epochs, args.threads)))
        return 0
    rows = []
    for batch_size in args.batch_sizes:
        rows.append(_spawn("tensorflow", batch_size, args.epochs, 0))
        rows.extend(_spawn("pytorch", batch_size, args.epochs, t) for t in args.torch_threads)
    print(_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(rows, handle, indent=2)
    return 0


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs per run, first excluded")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--torch-threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--worker", choices=["tensorflow", "pytorch"], help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def _spawn(backend, batch_size, epochs, threads):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", USE_XLA_TRANSLATE="0",
               TF_XLA_FLAGS="--tf_xla_auto_jit=0")
    command = [sys.executable, "-m", "runners.bench.tf_vs_torch", "--worker", backend,
               "--batch-size", str(batch_size), "--epochs", str(epochs), "--threads", str(threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {backend} batch {batch_size} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _measure(backend, batch_size, epochs, threads):
    """One training run at the scaled settings; returns a row of figures."""
    from ptycho.spec import ModelSpec, TrainSpec

    data = _scaled_groups()
    spec = ModelSpec(gridsize=SCALED["gridsize"], intensity_scale=data["scale"],
                     canvas_size=data["canvas"])
    train_spec = TrainSpec(max_epochs=epochs, batch_size=batch_size, validation_split=0.0)
    start = time.perf_counter()
    if backend == "pytorch":
        import torch

        from ptycho.torch import model as torch_model, training as torch_training

        torch.set_num_threads(threads)
        model = torch_model.build_model(spec, data["probe"])
        history = torch_training.train(model, data["grouped"], train_spec)
    else:
        from ptycho.tf import model as tf_model, training as tf_training

        model = tf_model.build_model(spec, data["probe"])
        history = tf_training.train(model, data["grouped"], train_spec)
    times = history["epoch_time_s"]
    n_groups = data["grouped"].n_groups
    steady = times[1:] if len(times) > 1 else times
    return {"backend": backend, "threads": threads or None, "batch_size": batch_size,
            "epochs": len(times), "first_epoch_s": times[0],
            "steady_groups_per_s": n_groups / float(np.median(steady)),
            "steady_range": [n_groups / max(steady), n_groups / min(steady)],
            "final_loss": history["loss"][-1], "wall_s": time.perf_counter() - start}


def _scaled_groups():
    """Grouped training data of the scaled settings (one data layer for both backends)."""
    from ptycho.data import grouping, normalization
    from ptycho.data.batches import group_data
    from ptycho.data.simulate import SimulationSpec, simulate_dataset
    from ptycho.stitching import canvas_size_for

    train, _ = simulate_dataset(SimulationSpec(n_images=512))
    train = train.subset(grouping.compact_subset(train.xcoords, train.ycoords,
                                                 SCALED["n_images"], SCALED["seed"]))
    groups = grouping.group_positions(train.xcoords, train.ycoords, SCALED["gridsize"],
                                      SCALED["neighbor_count"], SCALED["n_groups"], SCALED["seed"])
    scale = normalization.dataset_intensity_scale(train.diffraction)
    return {"grouped": group_data(train, groups, scale), "probe": train.probe, "scale": scale,
            "canvas": canvas_size_for(train.N, groups.coords_relative)}


def _table(rows):
    """One line per run; ratios against TensorFlow at the same batch size, for the median
    epoch and for the best (fastest) one, which other load on the machine disturbs least,
    and the final loss's ratio (both backends start from the same weights and batches, so
    it shows that the two ran the same training)."""
    lines = [f"{'backend':<11}{'threads':>8}{'batch':>6}{'epochs':>7}{'first epoch s':>14}"
             f"{'median groups/s':>17}{'best groups/s':>15}{'vs TF median':>14}{'vs TF best':>12}"
             f"{'final loss vs TF':>18}"]
    tf_rows = {r["batch_size"]: r for r in rows if r["backend"] == "tensorflow"}
    for r in rows:
        tf_row = tf_rows[r["batch_size"]]
        best, tf_best = r["steady_range"][1], tf_row["steady_range"][1]
        lines.append(f"{r['backend']:<11}{r['threads'] or '-':>8}{r['batch_size']:>6}"
                     f"{r['epochs']:>7}{r['first_epoch_s']:>14.2f}{r['steady_groups_per_s']:>17.1f}"
                     f"{best:>15.1f}{r['steady_groups_per_s'] / tf_row['steady_groups_per_s']:>13.2f}x"
                     f"{best / tf_best:>11.2f}x{r['final_loss'] / tf_row['final_loss']:>18.6f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

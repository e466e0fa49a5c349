"""Benchmark of inference against training (not a test): ``python -m runners.bench.inference``.

For each backend (``--backends``, default both), in a fresh subprocess with 2 threads and
XLA translation off, on the default simulated dataset (2048 positions) and the full network
(N = 64, gridsize 2, n_filters_scale 2, the c1 phases' network):

* training throughput: groups/s over the median epoch after the first, ``--train-groups``
  groups at ``--train-batch`` (the quality study's batch, 16);
* inference throughput: groups/s of the forward pass alone (``predict_patches``: encoder and
  decoders, the object read-out) over every test group (512), at each ``--batch-sizes``; the
  first pass (tracing, warm-up) is timed apart, the figure is the best of ``--repeats``
  later passes; and of the canvas pass (``diffracted_patches``, object_big's group average)
  at the same batch, which ``stitch_from=canvas`` adds;
* the FLOP-count ceiling: forward FLOPs per group (TensorFlow's cost analysis of the object
  path; the PyTorch port is the same network) over the GFLOP/s of a large fp32 3x3 conv2d
  in that framework on this machine: the groups/s a perfectly efficient forward pass reaches.

The report gives inference over training throughput (target: >= 4x) and inference over
its ceiling. The machine is shared: run nothing else beside it; the load average is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "pytorch")
N, GRIDSIZE = 64, 2
CONV_SHAPE = (16, 64, 64, 256)  # batch, height, width, channels in and out of the peak conv


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        print("BENCH_RESULT " + json.dumps(_measure(args)))
        return 0
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = [_spawn(backend, args) for backend in args.backends]
    print(_report(rows, args.batch_sizes))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[4, 16, 64, 128],
                        help="inference batches (groups); default 4 16 64 128")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--train-groups", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (the first is excluded)")
    parser.add_argument("--repeats", type=int, default=2, help="timed inference passes per batch size")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    return parser


def _spawn(backend: str, args) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", USE_XLA_TRANSLATE="0", TF_XLA_FLAGS="--tf_xla_auto_jit=0")
    command = [sys.executable, "-m", "runners.bench.inference", "--worker", backend,
               "--batch-sizes", *map(str, args.batch_sizes), "--train-batch", str(args.train_batch),
               "--train-groups", str(args.train_groups), "--epochs", str(args.epochs),
               "--repeats", str(args.repeats)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {backend} failed:\n{done.stderr[-4000:]}")
    line = next(line for line in reversed(done.stdout.splitlines()) if line.startswith("BENCH_RESULT "))
    return json.loads(line.removeprefix("BENCH_RESULT "))


def _measure(args) -> dict:
    """One backend's figures (module docstring), in this process."""
    import numpy as np

    from ptycho import determinism
    from ptycho.data.batches import prepare_job_data
    from ptycho.data.simulate import SimulationSpec, simulate_dataset
    from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec

    if args.worker == "tensorflow":
        determinism.configure_tensorflow(2)
        from ptycho.tf import inference, model as backend_model, training
    else:
        determinism.configure_torch(2, "cpu")
        from ptycho.torch import inference, model as backend_model, training
    train, test = simulate_dataset(SimulationSpec(n_images=2048, seed=0))
    grouping = GroupingSpec(gridsize=GRIDSIZE, neighbor_count=7, n_groups=args.train_groups, seed=0)
    spec, train_grouped, test_grouped, _ = prepare_job_data(train, test, grouping, ModelSpec(N=N, gridsize=GRIDSIZE))
    model = backend_model.build_model(spec, train.probe)
    history = training.train(model, train_grouped, TrainSpec(max_epochs=args.epochs, batch_size=args.train_batch,
                                                             validation_split=0.0, seed=0))
    epoch_s = history["epoch_time_s"][1:] or history["epoch_time_s"]
    row = {"backend": args.worker, "train_groups_per_s": train_grouped.n_groups / float(np.median(epoch_s)),
           "n_test_groups": test_grouped.n_groups, "inference": {}, "canvas": {}}
    inputs = test_grouped.inputs()
    for batch in args.batch_sizes:
        first, best = _timed_passes(lambda: inference.predict_patches(model, inputs, batch), args.repeats)
        patches = inference.predict_patches(model, inputs, batch)
        _, canvas_best = _timed_passes(
            lambda: inference.diffracted_patches(model, patches, test_grouped.coords_relative, batch), args.repeats)
        row["inference"][str(batch)] = {"first_s": first, "groups_per_s": test_grouped.n_groups / best}
        row["canvas"][str(batch)] = {"groups_per_s": test_grouped.n_groups / canvas_best}
    row["conv_gflops"] = _conv_gflops(args.worker)
    if args.worker == "tensorflow":
        row["forward_flops_per_group"] = _object_path_flops(model)
    return row


def _timed_passes(function, repeats: int) -> tuple[float, float]:
    """(seconds of the first call, best seconds of ``repeats`` later calls)."""
    start = time.perf_counter()
    function()
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return first, best


def _conv_gflops(backend: str) -> float:
    """GFLOP/s of a large fp32 3x3 conv2d in ``backend`` (CONV_SHAPE), best of 5 after a warm-up."""
    batch, height, width, channels = CONV_SHAPE
    flops = 2 * batch * height * width * 9 * channels * channels
    if backend == "tensorflow":
        import tensorflow as tf

        x, w = tf.random.normal(CONV_SHAPE), tf.random.normal((3, 3, channels, channels))
        conv = tf.function(lambda: tf.nn.conv2d(x, w, 1, "SAME"))
        run = lambda: conv().numpy()  # noqa: E731
    else:
        import torch

        x, w = torch.randn(batch, channels, height, width), torch.randn(channels, channels, 3, 3)

        def run():
            with torch.no_grad():
                torch.nn.functional.conv2d(x, w, padding=1)
    _, best = _timed_passes(run, 5)
    return flops / best / 1e9


def _object_path_flops(model) -> float:
    """FLOPs of one group's object read-out (encoder and decoders): TensorFlow's cost analysis."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder

    spec = model.spec
    graph = tf.function(model.object_patches).get_concrete_function(
        tf.TensorSpec((1, spec.N, spec.N, spec.channels))).graph
    options = option_builder.ProfileOptionBuilder(
        option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return float(model_analyzer.profile(graph, options=options).total_float_ops)


def _report(rows: list[dict], batch_sizes: list[int]) -> str:
    flops = next((r["forward_flops_per_group"] for r in rows if "forward_flops_per_group" in r), None)
    lines = []
    for row in rows:
        train = row["train_groups_per_s"]
        ceiling = None if flops is None else row["conv_gflops"] * 1e9 / flops
        lines.append(f"{row['backend']}: training {train:.1f} groups/s; conv2d peak {row['conv_gflops']:.0f} GFLOP/s"
                     + ("" if ceiling is None else f"; forward {flops / 1e9:.3f} GFLOP/group, "
                        f"ceiling {ceiling:.0f} groups/s"))
        lines.append(f"  {'batch':>6}{'first pass s':>14}{'inference groups/s':>20}{'vs training':>13}"
                     f"{'vs ceiling':>12}{'canvas groups/s':>17}")
        for batch in batch_sizes:
            found = row["inference"][str(batch)]
            speed = found["groups_per_s"]
            lines.append(f"  {batch:>6}{found['first_s']:>14.2f}{speed:>20.1f}{speed / train:>12.1f}x"
                         + (f"{speed / ceiling:>11.0%}" if ceiling else f"{'-':>12}")
                         + f"{row['canvas'][str(batch)]['groups_per_s']:>17.1f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

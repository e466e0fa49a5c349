"""Benchmark of the phase runner: ``python -m runners.bench.phase [--runs N] [--backends B ...]`` (not a test).

Times ``python -m runners.phase c1=scaled xla=off backend=B`` for each B of ``--backends``
(tensorflow, the default, and/or pytorch; runs interleaved, so both see the same machine)
as a whole process, from launch to exit, in a subprocess whose cwd, hub, MLflow store and
dataset cache are in a temporary folder of the backend's own. The first run is the first in
a new folder, as a new user's first command is: it simulates the dataset and creates and
migrates the MLflow database; it is reported apart (``first run``), and the later runs,
which reuse both, by their median. For each run it prints ``phase_s`` (the wall time the
user waits, launch to exit), ``outside_job_s`` (of that, what the job's own clock does not
see: interpreter start, Hydra, and the exit), the peak resident memory of the job process
(``peak_gb``) and of its process tree, i.e. with the concurrent guard subprocess
(``peak_tree_gb``), both polled with psutil, the CPU seconds of the process tree (``cpu_s``:
user + system, the guard included; on a shared machine it moves far less than the wall time), and the split the job itself recorded in
``run_scaled/timings.json``:

    process_start_to_job_s    interpreter start, imports of Hydra, config composition
    imports_s                 TensorFlow and the core (the guard starts just before)
    tracking_start_s          MLflow import, store, run creation, params
    data_s                    dataset simulation or loading and validation, sha1s
    model_build_s             grouping, scaling, model construction
    guard_wait_s              time training waited for the guard (0 when it was already done)
    first_epoch_s             first epoch, dominated by graph tracing
    later_epochs_s            the remaining epochs
    training_s                all epochs (first_epoch_s + later_epochs_s)
    inference_stitching_bundle_s  with the core's own split core.inference/stitching/evaluation/bundle
    tracking_results_s, hub_s, tracking_end_s
                              MLflow metrics and artifacts; inventory and summary; final
                              MLflow tags, timings, logs, run end (timings.json only)
    guard_s                   the guard's own wall time (concurrent with the steps above)
    mlflow_s                  all time in MLflow (its import and store set-up run in a thread
                              beside TensorFlow's import, so this overlaps imports_s)

Runner overhead = what the runner adds on the job's critical path: process_start_to_job_s
+ tracking_start_s + tracking_results_s + hub_s + tracking_end_s + guard_wait_s. It also times
``python -m runners.phase --help`` and the guard selector run alone. ``--load`` then repeats
the runs beside one CPU-bound process and reports the speed kept (quiet time / loaded time).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from runners.evidence.envinfo import project_root
from runners.schema import INITIATIVE_ID

# backend -> (slot variant, guard selector): runners/conf/backend/*.yaml and runners/conf/guard/*.yaml
BACKENDS = {
    "tensorflow": ("tf_baseline", "runners/process/guard_checks/tf_translation.py::test_non_xla_translation_guard"),
    "pytorch": ("torch_baseline", "runners/process/guard_checks/torch_translation.py::test_translation_guard"),
}
OVERHEAD_KEYS = ("process_start_to_job_s", "tracking_start_s", "tracking_results_s", "hub_s", "tracking_end_s",
                 "guard_wait_s")
TARGETS = {"phase_s": 15.0, "peak_gb": 1.0, "overhead_s": 3.0, "help_s": 2.0}  # issue 25


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(project_root())}
    for key in ("TF_XLA_FLAGS", "USE_XLA_TRANSLATE"):
        env.pop(key, None)
    return env


def run_watched(argv: list[str], cwd: Path) -> tuple[float, float, float, int, float]:
    """(wall s, peak RSS of the process tree in GB, peak RSS of the process alone in GB, exit status,
    CPU seconds of the tree: user + system of the process and every descendant it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    process = subprocess.Popen(argv, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    watched, tree_peak, own_peak = psutil.Process(process.pid), 0, 0
    while process.poll() is None:
        try:
            own = watched.memory_info().rss
            children = sum(child.memory_info().rss for child in watched.children(recursive=True))
        except psutil.Error:
            continue  # a process of the tree ended between listing and reading
        own_peak, tree_peak = max(own_peak, own), max(tree_peak, own + children)
        time.sleep(0.05)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.perf_counter() - t0, tree_peak / 1e9, own_peak / 1e9, process.returncode, cpu


def phase_run(workdir: Path, backend: str) -> dict[str, float]:
    argv = [
        sys.executable, "-m", "runners.phase", "c1=scaled", "xla=off", f"backend={backend}", "force=true",
        f"hub.root={workdir / 'hub'}", f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        f"hydra.run.dir={workdir / 'outputs' / str(time.time_ns())}",
    ]
    wall, tree_gb, job_gb, status, cpu = run_watched(argv, workdir)
    if status != 0:
        raise SystemExit(f"phase run failed (exit {status}): {shlex.join(argv)}")
    timings_file = Path(BACKENDS[backend][0]) / "phase_c1_scaled" / "run_scaled" / "timings.json"
    timings = json.loads((workdir / "hub" / timings_file).read_text())
    overhead = sum(timings.get(k, 0.0) for k in OVERHEAD_KEYS)
    return {"phase_s": wall, "cpu_s": cpu, "outside_job_s": wall - timings["job_s"], "peak_gb": job_gb,
            "peak_tree_gb": tree_gb, "overhead_s": overhead, **timings}


def help_seconds(repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "runners.phase", "--help"], cwd=project_root(), env=_env(),
                       stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def guard_alone_seconds(backend: str) -> float:
    argv = [sys.executable, "-m", "pytest", BACKENDS[backend][1], "-vv", "-p", "no:cacheprovider", "-q"]
    wall, _, _, status, _ = run_watched(argv, project_root())
    if status != 0:
        raise SystemExit(f"guard selector failed alone: {shlex.join(argv)}")
    return wall


def report(runs: list[dict[str, float]], help_s: float, guard_s: float, backend: str) -> None:
    """One column per run, the first (a new folder) apart, then the median of the later ones."""
    keys = list(runs[0])
    later = runs[1:]
    print(f"python -m runners.phase c1=scaled xla=off backend={backend} ({INITIATIVE_ID}): the first run in a "
          f"new folder, then {len(later)} run(s) in the same folder")
    header = ["first run", *[f"run {i + 2}" for i in range(len(later))], *(["median"] if later else []), "target"]
    print(f"{'':32s}" + "".join(f"{name:>10s}" for name in header))
    for key in keys:
        target = TARGETS.get(key)
        values = [run.get(key, float("nan")) for run in runs]
        median = [statistics.median(values[1:])] if later else []
        cells = "".join(f"{value:10.2f}" for value in [*values, *median])
        print(f"{key:32s}{cells}{'<= %.1f' % target if target else '':>10s}")
    print(f"{'guard selector alone (s)':32s}{guard_s:10.2f}")
    print(f"{'--help (s, median of 3)':32s}{help_s:10.2f}{'<= %.1f' % TARGETS['help_s']:>10s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3,
                        help="phase runs per backend (the first in a new folder); default 3")
    parser.add_argument("--backends", nargs="+", choices=sorted(BACKENDS), default=["tensorflow"],
                        help="default tensorflow")
    parser.add_argument("--load", action="store_true",
                        help="then as many runs again beside one CPU-bound process, and the speed ratio")
    args = parser.parse_args()
    runs = {backend: [] for backend in args.backends}
    loaded = {backend: [] for backend in args.backends}
    with tempfile.TemporaryDirectory(prefix="bench_phase_") as folder:
        for _ in range(args.runs):
            for backend in args.backends:
                workdir = Path(folder) / backend
                workdir.mkdir(exist_ok=True)
                runs[backend].append(phase_run(workdir, backend))
        if args.load:
            with cpu_burner():
                for _ in range(args.runs):
                    for backend in args.backends:
                        loaded[backend].append(phase_run(Path(folder) / backend, backend))
    help_s = help_seconds()
    for backend, backend_runs in runs.items():
        report(backend_runs, help_s, guard_alone_seconds(backend), backend)
        if loaded[backend]:
            report_load(backend_runs[1:] or backend_runs, loaded[backend], backend)


@contextlib.contextmanager
def cpu_burner():
    """One other CPU-bound process (a busy loop) for the duration."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def report_load(quiet: list[dict[str, float]], loaded: list[dict[str, float]], backend: str) -> None:
    """Median phase and training times quiet and beside the busy process; speed = quiet / loaded."""
    print(f"backend={backend} beside one CPU-bound process ({len(loaded)} runs; quiet: the same folder's runs)")
    for key in ("phase_s", "training_s", "inference_stitching_bundle_s"):
        q = statistics.median(run[key] for run in quiet)
        b = statistics.median(run[key] for run in loaded)
        print(f"  {key:30s} quiet {q:8.2f}  loaded {b:8.2f}  speed kept {q / b:5.2f}x")


if __name__ == "__main__":
    main()

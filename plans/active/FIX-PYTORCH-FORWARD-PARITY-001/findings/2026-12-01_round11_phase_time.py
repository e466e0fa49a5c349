# A record of a probe run, kept as it ran at commit 01fbb2a (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 01fbb2a
"""Round 11 (issue 8, not a project tool): `c1=scaled xla=off` end to end on the 2048-position default
against the 512-position scan it replaced, interleaved (runners.bench_phase's own measurement, one override
added). Usage: python <this file> [runs per size, default 3]. The first run in each folder simulates the data."""
import statistics, sys, tempfile
from pathlib import Path
sys.path.insert(0, "/work/main")
from runners import bench_phase

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
real_run_watched = bench_phase.run_watched
results = {512: [], 2048: []}
with tempfile.TemporaryDirectory() as tmp:
    for i in range(runs):
        for n in results:
            bench_phase.run_watched = lambda argv, cwd, n=n: real_run_watched([*argv, f"dataset.simulation.n_images={n}"], cwd)
            folder = Path(tmp) / str(n)
            folder.mkdir(exist_ok=True)
            results[n].append(bench_phase.phase_run(folder, "tensorflow"))
for n, found in results.items():
    for key in ("phase_s", "data_s", "inference_stitching_bundle_s", "peak_gb", "peak_tree_gb"):
        values = [run.get(key, float("nan")) for run in found]
        print(f"{n:5d} positions {key:30s} first {values[0]:7.2f}  later median {statistics.median(values[1:]):7.2f}")

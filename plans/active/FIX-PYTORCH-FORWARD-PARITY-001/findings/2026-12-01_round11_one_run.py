# A record of a probe run, kept as it ran at commit 909a927 (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 909a927
"""Round 11 (issue 8, not a project tool): one run of the quality study's code path for one seed.

Usage: python <this file> <dataset> <gridsize> <seed> <out> [bench_quality options ...]
e.g. ... simulated 2 3 /tmp/r11/a --n-groups 1536 --epochs 8. Prints the study's line for the run.
"""
import sys
from pathlib import Path
sys.path.insert(0, "/work/main")
from runners import bench_quality as bq
from ptycho.simulate import SimulationSpec, simulate_dataset

dataset, gridsize, seed, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
args = bq.parse_args(["--out", str(out), *sys.argv[5:]])
run_phase_job, stitch_patches, _ = bq.load_backend("pytorch", 2, "cpu")
train, test = simulate_dataset(SimulationSpec(object_kind=bq.DATASETS[dataset], seed=0, n_images=args.n_images))
references = bq.reference_quality(train, test, gridsize, 0, stitch_patches)
run = bq.run_one(run_phase_job, train, test, dataset, gridsize, seed, args, references["floor"])
bq._print_run(run)
print({key: round(value, 4) for key, value in run.items() if key.startswith(("amp_mae_offsets", "phase_mae_offsets"))})

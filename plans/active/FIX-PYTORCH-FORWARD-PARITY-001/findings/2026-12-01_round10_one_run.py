"""Round 10 (issue 8, not a project tool): one run of the quality study's recipe for one seed, with its epochs chosen.

runners.bench_quality runs seeds 0..S-1; this runs one (dataset, gridsize, seed, epochs) with the same code path
(bench_quality.run_one) and prints the same line. Usage: python <this file> <dataset> <gridsize> <seed> <epochs> <out> [learning rate]
"""
import functools, sys
from pathlib import Path
sys.path.insert(0, "/work/main")
from runners import bench_quality as bq
from ptycho.simulate import SimulationSpec, simulate_dataset

dataset, gridsize, seed, epochs, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
if len(sys.argv) > 6:  # the learning rate of ModelSpec (default 1e-4), for this run only
    bq.ModelSpec = functools.partial(bq.ModelSpec, learning_rate=float(sys.argv[6]))
args = bq.parse_args(["--epochs", str(epochs), "--out", str(out)])
run_phase_job, stitch_patches, _ = bq.load_backend("pytorch", 2, "cpu")
train, test = simulate_dataset(SimulationSpec(object_kind=bq.DATASETS[dataset], seed=0, n_images=args.n_images))
references = bq.reference_quality(train, test, gridsize, 0, stitch_patches)
run = bq.run_one(run_phase_job, train, test, dataset, gridsize, seed, args, references["floor"])
bq._print_run(run)
print({key: round(value, 4) for key, value in run.items() if key.startswith(("amp_mae_offsets", "phase_mae_offsets"))})

# A record of a probe run, kept as it ran at commit ca13a09 (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe ca13a09
"""Round 12 (issue 8, not a project tool): where `c1=scaled`'s memory peak is, on the 512- and 2048-position
datasets. One TF phase job each (c1=scaled's settings: gridsize 2, 64 train images, 32 groups, batch 4, one
epoch, stitching from the canvas with `com` offsets), in a fresh process per size; a thread samples the
process's RSS every 10 ms and the peak within each of the job's timed steps is printed.
Run: PYTHONPATH=. python plans/active/FIX-PYTORCH-FORWARD-PARITY-001/findings/2026-12-01_round12_phase_memory.py 2048"""
import sys
import tempfile
import threading
import time

import psutil

from ptycho import phase_job, workflow
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec

process, peak, stop = psutil.Process(), [0], threading.Event()


def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.01)


real_lap = phase_job._lap
step_peaks = []


def lap(start):
    step_peaks.append(peak[0] / 2**30)
    peak[0] = 0
    return real_lap(start)


phase_job._lap = lap
train, test = simulate_dataset(SimulationSpec(n_images=int(sys.argv[1])))
threading.Thread(target=sample, daemon=True).start()
time.sleep(0.1)
print(f"{sys.argv[1]} positions: before the job {peak[0] / 2**30:.2f} GB")
peak[0] = 0
with tempfile.TemporaryDirectory() as tmp:
    result = workflow.run_phase_job(
        train, test, grouping=GroupingSpec(gridsize=2, n_images=64, n_groups=32), model_spec=ModelSpec(gridsize=2),
        train_spec=TrainSpec(max_epochs=1, batch_size=4, quiet=True), run_dir=f"{tmp}/run", bundle_dir=f"{tmp}/bundle")
step_peaks.append(peak[0] / 2**30)
stop.set()
steps = ["data_prep", "training", "inference", "stitching", "evaluation", "bundle"]
print("  peak GB per step:", ", ".join(f"{step} {value:.2f}" for step, value in zip(steps, step_peaks)))
print("  seconds per step:", ", ".join(f"{k} {v:.1f}" for k, v in result.timings_s.items()))

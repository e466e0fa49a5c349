# A record of a probe run, kept as it ran at commit cf004a2 (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe cf004a2
"""Round 12 (issue 8, not a project tool): what the inference batch costs. `c1=scaled`'s inference (512 test
groups of the 2048-position default, gridsize 2, the default ModelSpec, untrained weights: the time does not
depend on them) runs at the training batch, 4. predict_patches + diffracted_patches (phase_job's inference
step) on both backends at batch 4, 16, 64 and 128, interleaved, 3 repeats (the first call of each size
traces; the median of the later two is reported beside it).
Run: PYTHONPATH=. python plans/active/FIX-PYTORCH-FORWARD-PARITY-001/findings/2026-12-01_round12_inference_batch.py"""
import statistics
import time

from ptycho import inference as tf_inference, model as tf_model
from ptycho.batches import prepare_job_data
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec
from ptycho.torch import inference as pt_inference, model as pt_model

train, test = simulate_dataset(SimulationSpec(n_images=2048))
spec, _, test_grouped, _ = prepare_job_data(train, test, GroupingSpec(gridsize=2, n_images=64, n_groups=32),
                                            ModelSpec(gridsize=2))
backends = {"tensorflow": (tf_inference, tf_model.build_model(spec, train.probe)),
            "pytorch": (pt_inference, pt_model.build_model(spec, train.probe))}
inputs, coords = test_grouped.inputs(), test_grouped.coords_relative
times = {(name, batch): [] for name in backends for batch in (4, 16, 64, 128)}
for _ in range(3):
    for (name, batch), found in times.items():
        module, model = backends[name]
        start = time.perf_counter()
        module.diffracted_patches(model, module.predict_patches(model, inputs, batch), coords, batch)
        found.append(time.perf_counter() - start)
for (name, batch), found in times.items():
    print(f"{name:10s} batch {batch:3d}: first {found[0]:6.2f} s, later {statistics.median(found[1:]):6.2f} s "
          f"({len(inputs['diffraction'])} groups)")

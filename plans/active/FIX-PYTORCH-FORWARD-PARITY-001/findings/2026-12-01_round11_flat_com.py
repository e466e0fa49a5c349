# A record of a probe run, kept as it ran at commit 6d24bad (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 6d24bad
"""Round 11 (issue 8, not a project tool): how much of the stitched phase is the network's? The constant
object (every patch a0, phase 0: the study's floor patches) stitched with each patch's offset anchored by
`com`, against the floor stitched as is, on the study's simulated data (2048 positions), gridsize 1 and 2."""
import sys
sys.path.insert(0, "/work/main")
import numpy as np
from ptycho import architecture, com_phase, stitching
from ptycho.batches import group_data
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.torch.inference import stitch_patches

train, test = simulate_dataset(SimulationSpec(object_kind="mixed", seed=0, n_images=2048))
com = com_phase.integrated_com_phase(test.diffraction, test.probe, test.xcoords, test.ycoords)
a0 = architecture.initial_amplitude_from_data(train.diffraction, train.probe)
for gridsize in (1, 2):
    groups = stitching.inference_groups(test, gridsize, 7, 0)
    true = group_data(test, groups, 1.0, with_object=True).object
    constant = np.full(true.shape, a0, np.complex64)
    for name, patches in (("constant", constant), ("truth", true)):
        for mode in ("none", "com"):
            q = stitching.stitched_quality(stitch_patches(patches, groups, phase_offsets=mode, com=com), test.object_guess)
            print(f"gridsize {gridsize} {name:8s} offsets {mode:4s}: amp_mae {q['amp_mae']:.4f} phase_mae {q['phase_mae']:.4f}")

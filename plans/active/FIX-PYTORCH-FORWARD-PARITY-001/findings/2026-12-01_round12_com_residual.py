# A record of a probe run, kept as it ran at commit cf004a2 (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe cf004a2
"""Round 12 (issue 8, not a project tool): how much false phase does the `com` anchoring itself put on an
amplitude-only object? The true patches (no network) of `lines` and `simulated` (mixed), 2048 positions,
seed 0, stitched with offsets `none` and `com`, and `com` at other grid spacings and smoothings
(com_phase.GRID_PER_PROBE, com_phase.SMOOTHING; the shipped values are 8 and 1e-3).
Run: PYTHONPATH=. python plans/active/FIX-PYTORCH-FORWARD-PARITY-001/findings/2026-12-01_round12_com_residual.py"""
import numpy as np

from ptycho import com_phase, stitching
from ptycho.batches import group_data
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.torch.inference import stitch_patches

for kind in ("lines", "mixed"):
    _, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0, n_images=2048))
    com = com_phase.integrated_com_phase(test.diffraction, test.probe, test.xcoords, test.ycoords)
    phi = com.phi - com.phi.mean()
    print(f"{kind}: com phi rms {np.sqrt((phi ** 2).mean()):.4f} rad, 95th percentile |phi| "
          f"{np.percentile(abs(phi), 95):.4f}")
    for gridsize in (1, 2):
        groups = stitching.inference_groups(test, gridsize, 7, 0)
        true = group_data(test, groups, 1.0, with_object=True).object
        for mode in ("none", "com"):
            q = stitching.stitched_quality(stitch_patches(true, groups, phase_offsets=mode, com=com), test.object_guess)
            print(f"  gs {gridsize} true patches, offsets {mode}: amp {q['amp_mae']:.4f} phase {q['phase_mae']:.4f}")
    groups = stitching.inference_groups(test, 1, 7, 0)
    true = group_data(test, groups, 1.0, with_object=True).object
    for grid in (4, 8, 16):
        for smoothing in (1e-4, 1e-3, 1e-2):
            com_phase.GRID_PER_PROBE, com_phase.SMOOTHING = grid, smoothing
            com = com_phase.integrated_com_phase(test.diffraction, test.probe, test.xcoords, test.ycoords)
            q = stitching.stitched_quality(stitch_patches(true, groups, phase_offsets="com", com=com), test.object_guess)
            print(f"  gs 1 com grid N/{grid} smoothing {smoothing:g}: phase {q['phase_mae']:.4f}")
    com_phase.GRID_PER_PROBE, com_phase.SMOOTHING = 8, 1e-3

# A record of a probe run, kept as it ran at commit c3acdf1 (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe c3acdf1
"""Round 10 (issue 8, not a project tool): re-stitch a saved study network with other stitching settings (no training).

Usage: python <this file> <run dir> [kind] [n_images]. Prints amp/phase over the floor for crops and phase offsets.
"""
import json, sys
import numpy as np
sys.path.insert(0, "/work/main")
from ptycho import com_phase, determinism, stitching
determinism.configure_torch(2)
from ptycho.batches import group_data
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import ModelSpec
from ptycho.torch.inference import diffracted_patches, predict_patches, stitch_patches
from ptycho.torch.model import load_model

run = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "mixed"
n_img = int(sys.argv[3]) if len(sys.argv) > 3 else 2048
train, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0, n_images=n_img))
spec = ModelSpec(**json.load(open(f"{run}/model_spec.json")))
model = load_model(spec, train.probe, f"{run}/model.pt")
com = com_phase.integrated_com_phase(test.diffraction, test.probe, test.xcoords, test.ycoords)
for draw in (0, 1, 2):
    groups = stitching.inference_groups(test, spec.gridsize, 7, draw)
    g = group_data(test, groups, spec.intensity_scale)
    raw = predict_patches(model, g.inputs(), 16)
    canvas = diffracted_patches(model, raw, g.coords_relative) if spec.gridsize > 1 else raw
    crops = (16, 20, 24, 28, 32, 40, 64) if draw == 0 else (32,)
    for crop in crops:
        floor = stitching.stitched_quality(  # the floor on the same covered region
            stitch_patches(np.full(raw.shape, spec.initial_amplitude, np.complex64), groups, crop=crop), test.object_guess)
        q = stitching.stitched_quality(stitch_patches(canvas, groups, crop=crop, phase_offsets="com", com=com), test.object_guess)
        print(json.dumps({"draw": draw, "crop": crop, "amp/floor": round(q["amp_mae"] / floor["amp_mae"], 4),
                          "phase/floor": round(q["phase_mae"] / floor["phase_mae"], 4) if floor["phase_mae"] else round(q["phase_mae"], 4)}), flush=True)

# weighted stitching instead of a crop: sum(w z) / sum(w) over the whole patch, the patches anchored first
groups = stitching.inference_groups(test, spec.gridsize, 7, 0)
g = group_data(test, groups, spec.intensity_scale)
raw = predict_patches(model, g.inputs(), 16)
canvas = diffracted_patches(model, raw, g.coords_relative) if spec.gridsize > 1 else raw
phi = com.phi[groups.nn_indices]  # (B, C)
anchored = canvas * com_phase.anchor_factors(canvas, phi, test.probe)[:, None, None, :]
N = canvas.shape[1]
r = np.hypot(*np.meshgrid(np.arange(N) - N / 2, np.arange(N) - N / 2))
windows = {f"|P|^{p}": np.abs(test.probe) ** p for p in (2, 4, 8)}
windows.update({f"gauss sigma {s}": np.exp(-0.5 * (r / s) ** 2) for s in (6, 8, 10, 12)})
for label, w in windows.items():
    w = w.astype(np.float32)[None, :, :, None]
    top = stitch_patches((anchored * w).astype(np.complex64), groups, crop=N)
    bottom = stitch_patches(np.broadcast_to(w, anchored.shape).astype(np.complex64), groups, crop=N)
    weight = np.abs(bottom.canvas)
    covered = weight > 0.05 * weight.max()  # where the sum of weights is not a thin rim
    from dataclasses import replace
    st = replace(top, canvas=np.where(covered, top.canvas / np.where(covered, weight, 1), 0).astype(np.complex64), covered=covered)
    fl = replace(st, canvas=np.where(covered, spec.initial_amplitude, 0).astype(np.complex64))
    q, f = stitching.stitched_quality(st, test.object_guess), stitching.stitched_quality(fl, test.object_guess)
    print(json.dumps({"weights": label, "amp/floor": round(q["amp_mae"] / f["amp_mae"], 4),
                      "phase/floor": round(q["phase_mae"] / f["phase_mae"], 4) if f["phase_mae"] else round(q["phase_mae"], 4),
                      "covered px": int(covered.sum())}), flush=True)

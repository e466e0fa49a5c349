# A record of a probe run, kept as it ran at commit 67090ee (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 67090ee
"""Round 7 (issue 8, not a project tool): stitch a saved run from the decoder patches and from the patches the forward
model diffracted, with and without phase sync. Usage: python <this file> <run dir> [mixed|lines] [n_images]"""
import json, sys
import numpy as np, torch
sys.path.insert(0, "/work/main")
from ptycho import determinism, stitching
determinism.configure_torch(2)
from ptycho.batches import group_data
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import ModelSpec
from ptycho.torch.inference import predict_patches, stitch_patches
from ptycho.torch.model import load_model
run, kind = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else "mixed")
n_img = int(sys.argv[3]) if len(sys.argv) > 3 else 512
train, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0, n_images=n_img))
spec = ModelSpec(**json.load(open(f"{run}/run/model_spec.json")))
model = load_model(spec, train.probe, f"{run}/run/model.pt")
for name, data in (("train", train), ("test", test)):
    groups = stitching.inference_groups(data, spec.gridsize, 7, 0)
    g = group_data(data, groups, spec.intensity_scale)
    raw = predict_patches(model, g.inputs(), 16)
    with torch.no_grad():
        cons = model.illuminated_patches(torch.from_numpy(raw), torch.from_numpy(g.coords_relative)).numpy()
    const = np.full(raw.shape, spec.initial_amplitude, np.complex64)
    f = stitching.stitched_quality(stitch_patches(const, groups), data.object_guess)
    for label, p in (("raw", raw), ("consistent", cons)):
        for sync in (False, True):
            q = stitching.stitched_quality(stitch_patches(p, groups, phase_offsets="sync" if sync else "none"), data.object_guess)
            print(f"{name} {label:10s} sync={sync!s:5s} amp {q['amp_mae']:.4f} ({q['amp_mae']/f['amp_mae']:.2f}x) phase {q['phase_mae']:.4f} ({q['phase_mae']/max(f['phase_mae'],1e-9):.2f}x)", flush=True)

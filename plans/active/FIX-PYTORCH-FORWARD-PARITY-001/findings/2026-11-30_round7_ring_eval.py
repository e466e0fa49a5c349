# A record of a probe run, kept as it ran at commit 114407d (2026-11-30); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 114407d
"""Round 7 (issue 8, not a project tool; usage: python <this file> <run dir> mixed <n_images>): the outer ring phase vs the swish floor."""
import json, sys
import numpy as np, torch
sys.path.insert(0, "/work/main")
from ptycho import determinism, stitching
determinism.configure_torch(2)
from ptycho.batches import group_data
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import ModelSpec
from ptycho.torch.inference import predict_patches
from ptycho.torch.model import load_model
from ptycho.architecture import border_mask
run, kind, n_images = sys.argv[1], sys.argv[2], int(sys.argv[3])
train, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0, n_images=n_images))
spec = ModelSpec(**json.load(open(f"{run}/run/model_spec.json")))
model = load_model(spec, train.probe, f"{run}/run/model.pt")
N = spec.N
y, x = (np.mgrid[:N, :N] - N // 2).astype(float)
lit = np.hypot(x, y) < 5 * N / 16
ring = lit & (border_mask(N) > 0)
centre = lit & ~(border_mask(N) > 0)
groups = stitching.inference_groups(test, spec.gridsize, 7, 0)
g = group_data(test, groups, spec.intensity_scale, with_object=True)
raw = np.moveaxis(predict_patches(model, g.inputs(), 16), -1, 1).reshape(-1, N, N)
t = np.moveaxis(g.object, -1, 1).reshape(-1, N, N)
ph = np.angle(raw)
print("ring pixels", ring.sum(), "centre", centre.sum())
print("pred ring phase percentiles", np.percentile(ph[:, ring], [1, 5, 25, 50, 75, 95, 99]).round(3))
print("pred centre phase percentiles", np.percentile(ph[:, centre], [1, 5, 25, 50, 75, 95, 99]).round(3))
print("share of ring phase < -0.25:", (ph[:, ring] < -0.25).mean().round(3))
# relative to each patch's centre mean
mc = np.angle(np.sum(raw[:, centre], 1)); tc = np.angle(np.sum(t[:, centre], 1))
rp = np.angle(raw[:, ring] * np.exp(-1j * mc)[:, None]); rt = np.angle(t[:, ring] * np.exp(-1j * tc)[:, None])
print("ring phase rel centre: pred std", rp.std().round(3), "true std", rt.std().round(3), "corr", np.corrcoef(rp.ravel(), rt.ravel())[0, 1].round(3))
cp = np.angle(raw[:, centre] * np.exp(-1j * mc)[:, None]); ct = np.angle(t[:, centre] * np.exp(-1j * tc)[:, None])
print("centre phase rel centre: pred std", cp.std().round(3), "true std", ct.std().round(3), "corr", np.corrcoef(cp.ravel(), ct.ravel())[0, 1].round(3))
print("ring amp: pred mean", np.abs(raw[:, ring]).mean().round(3), "true", np.abs(t[:, ring]).mean().round(3), "corr", np.corrcoef(np.abs(raw[:, ring]).ravel(), np.abs(t[:, ring]).ravel())[0,1].round(3))
print("centre amp: pred mean", np.abs(raw[:, centre]).mean().round(3), "true", np.abs(t[:, centre]).mean().round(3), "corr", np.corrcoef(np.abs(raw[:, centre]).ravel(), np.abs(t[:, centre]).ravel())[0,1].round(3))

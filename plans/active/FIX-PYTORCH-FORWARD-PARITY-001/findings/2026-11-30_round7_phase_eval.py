# A record of a probe run, kept as it ran at commit 114407d (2026-11-30); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 114407d
"""Round 7 (issue 8, not a project tool; usage: python <this file> <run dir> mixed <n_images>). Per-patch phase: predicted vs true (mean removed over the lit disk): std, correlation, regression slope; by radial ramp/curvature."""
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
run, kind, n_images = sys.argv[1], sys.argv[2], int(sys.argv[3])
train, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0, n_images=n_images))
spec = ModelSpec(**json.load(open(f"{run}/run/model_spec.json")))
model = load_model(spec, train.probe, f"{run}/run/model.pt")
N = spec.N
y, x = (np.mgrid[:N, :N] - N // 2).astype(float)
lit = np.hypot(x, y) < 5 * N / 16
for name, data in (("train", train), ("test", test)):
    groups = stitching.inference_groups(data, spec.gridsize, 7, 0)
    g = group_data(data, groups, spec.intensity_scale, with_object=True)
    raw = predict_patches(model, g.inputs(), 16)
    with torch.no_grad():
        cons = model.illuminated_patches(torch.from_numpy(raw), torch.from_numpy(g.coords_relative)).numpy()
    t = np.moveaxis(g.object, -1, 1).reshape(-1, N, N)
    for label, pp in (("raw", raw), ("cons", cons)):
        p = np.moveaxis(pp, -1, 1).reshape(-1, N, N)
        # phase relative to the patch's mean (complex mean over lit), so wrap-safe
        def rel(z):
            m = np.sum(z[:, lit], axis=1)
            return np.angle(z * np.conj(m)[:, None, None] / np.abs(m)[:, None, None])[:, lit]
        pr, tr = rel(p), rel(t)
        # least-squares plane (ramp) and quadratic fits
        X = np.stack([np.ones(lit.sum()), x[lit], y[lit], x[lit]**2 + y[lit]**2], 1)
        cp = np.linalg.lstsq(X, pr.T, rcond=None)[0]; ct = np.linalg.lstsq(X, tr.T, rcond=None)[0]
        corr = np.corrcoef(pr.ravel(), tr.ravel())[0, 1]
        slope = np.sum(pr * tr) / np.sum(tr * tr)
        print(f"{name} {label}: std pred {pr.std():.3f} true {tr.std():.3f} corr {corr:.3f} slope {slope:.3f} | "
              f"ramp corr x {np.corrcoef(cp[1], ct[1])[0,1]:.3f} y {np.corrcoef(cp[2], ct[2])[0,1]:.3f} "
              f"ramp std pred {cp[1].std()*20:.3f} true {ct[1].std()*20:.3f} | quad corr {np.corrcoef(cp[3], ct[3])[0,1]:.3f} "
              f"| resid (after plane+quad) corr {np.corrcoef((pr - (X@cp).T).ravel(), (tr - (X@ct).T).ravel())[0,1]:.3f}", flush=True)

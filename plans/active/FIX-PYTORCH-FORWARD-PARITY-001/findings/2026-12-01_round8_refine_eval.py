# A record of a probe run, kept as it ran at commit 67090ee (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 67090ee
"""Round 8 (issue 8, not a project tool): does a per-group physics refinement of the network's patches fix them?

For each test group: the network's patches (or a constant object, the control), then K Adam steps on free amplitude and
phase pixels against the group's own measured intensities (the training loss, the same forward model), then the
diffracted patches stitched with and without phase sync. Usage: python <this file> <run dir> [steps ...]"""
import json, sys, time
import numpy as np, torch
sys.path.insert(0, "/work/main")
from ptycho import determinism, stitching
determinism.configure_torch(int(__import__("os").environ.get("THREADS", "2")))
from ptycho.batches import group_data
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import ModelSpec
from ptycho.torch import ops, training as tt
from ptycho.torch.inference import predict_patches, stitch_patches
from ptycho.torch.model import load_model

run = sys.argv[1]
steps = [int(s) for s in sys.argv[2:]] or [0, 50, 200]
n_img = int(__import__("os").environ.get("N_IMAGES", "2048"))
train, test = simulate_dataset(SimulationSpec(object_kind="mixed", seed=0, n_images=n_img))
spec = ModelSpec(**json.load(open(f"{run}/run/model_spec.json")))
model = load_model(spec, train.probe, f"{run}/run/model.pt")
for p in model.parameters():
    p.requires_grad_(False)
groups = stitching.inference_groups(test, spec.gridsize, 7, 0)
g = group_data(test, groups, spec.intensity_scale)
I = torch.from_numpy(g.intensity)
coords = torch.from_numpy(g.coords_relative)
raw = predict_patches(model, g.inputs(), 16)
const = np.full(raw.shape, spec.initial_amplitude, np.complex64)
floor = stitching.stitched_quality(stitch_patches(const, groups), test.object_guess)
scale = torch.exp(model.log_scale)


def forward(amp, ph):
    obj = torch.complex(amp * torch.cos(ph), amp * torch.sin(ph))
    diffracted = model.illuminated_patches(obj, coords)
    return diffracted, tt.poisson_nll(I, (ops.pad_and_diffract(diffracted * model.probe) * scale) ** 2)


for label, start in (("network", raw), ("constant", const)):
    amp = torch.tensor(np.abs(start), requires_grad=True)
    ph = torch.tensor(np.angle(start), requires_grad=True)
    opt = torch.optim.Adam([amp, ph], lr=1e-2)
    t, done = time.time(), 0
    for n_steps in sorted(steps):  # one trajectory, evaluated at each step count
        for _ in range(n_steps - done):
            _, loss = forward(amp, ph)
            opt.zero_grad(); loss.backward(); opt.step()
        done = n_steps
        with torch.no_grad():
            diffracted, loss = forward(amp, ph)
        out = {"start": label, "steps": n_steps, "nll": round(float(loss), 2), "s": round(time.time() - t, 1)}
        for sync in (False, True):
            q = stitching.stitched_quality(stitch_patches(diffracted.numpy(), groups, phase_offsets="sync" if sync else "none"),
                                           test.object_guess)
            out[f"sync={sync}"] = [round(q["amp_mae"] / floor["amp_mae"], 3), round(q["phase_mae"] / floor["phase_mae"], 3)]
        print(json.dumps(out), flush=True)

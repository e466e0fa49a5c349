# Issue 22 supervised-fit probe (2026-12-08), ran on commit a9753ad; not maintained, not imported by the package.
import numpy as np, torch
torch.set_num_threads(1)
from ptycho.data.batches import prepare_job_data
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec
from ptycho.torch import training
from ptycho.torch.model import build_model
from ptycho.data import batches
train, test = simulate_dataset(SimulationSpec(n_images=512, object_kind="lines", seed=0, nphotons=1e9))
mspec = ModelSpec(gridsize=1, n_filters_scale=2, learning_rate=1e-4, seed=0, overlap="weighted", nll_weight=0.0, realspace_weight=1.0)
spec, tg, _, _ = prepare_job_data(train, test, GroupingSpec(gridsize=1, n_groups=None, seed=0), mspec, 1e9)
torch.manual_seed(0); model = build_model(spec, train.probe)
loss = training.loss_for(model); opt = training.make_optimizer(model)
order = batches.epoch_order(tg.n_groups, 0, 0)
for s, b in enumerate(range(0, 40 * 16, 16)):
    inputs, targets = training.batch_tensors(tg, order[b % len(order):b % len(order) + 16]); training.train_step(model, opt, loss, inputs, targets)
trunk = [p for n, p in model.named_parameters() if n.startswith("encoder") or (n.startswith("amplitude_decoder.block"))]
mask = torch.zeros(64, 64, dtype=torch.bool); mask[16:48, 16:48] = True
def grads(fn, inputs, targets):
    model.zero_grad(); out = model(inputs["diffraction"], inputs["coords_relative"])
    d = out["object"] - targets["object"]; e = (d.real**2 + d.imag**2)[..., 0]
    fn(e).backward(); return torch.cat([p.grad.flatten().clone() for p in trunk])
for b in range(0, 64, 16):
    inputs, targets = training.batch_tensors(tg, order[b:b + 16])
    gc = grads(lambda e: e[:, mask].sum() / e.numel(), inputs, targets)
    gr = grads(lambda e: e[:, ~mask].sum() / e.numel(), inputs, targets)
    print(f"batch {b//16}: trunk |grad| centre-part {gc.norm():.3e} ring-part {gr.norm():.3e} ratio ring/centre {gr.norm()/gc.norm():.2f} cosine {torch.dot(gc, gr)/(gc.norm()*gr.norm()):.3f}")
w = {n: p.detach().pow(2).mean().sqrt().item() for n, p in model.named_parameters() if "head" in n and "weight" in n and "amplitude" in n}
print(w)

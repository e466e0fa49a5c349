# Issue 22 supervised-fit probe (2026-12-08), ran on commit a9753ad; not maintained, not imported by the package.
import sys, numpy as np, torch
torch.set_num_threads(1)
from ptycho.data.batches import prepare_job_data
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec
from ptycho.torch import training
from ptycho.torch.model import build_model
from ptycho.data import batches
lossname = sys.argv[1]; nsteps = int(sys.argv[2])
train, test = simulate_dataset(SimulationSpec(n_images=512, object_kind="lines", seed=0, nphotons=1e9))
w = {"nll": dict(nll_weight=1.0), "supervised": dict(nll_weight=0.0, realspace_weight=1.0)}[lossname]
mspec = ModelSpec(gridsize=1, n_filters_scale=2, learning_rate=1e-4, seed=0, overlap="weighted", **w)
spec, tg, _, _ = prepare_job_data(train, test, GroupingSpec(gridsize=1, n_groups=None, seed=0), mspec, 1e9)
torch.manual_seed(0)
model = build_model(spec, train.probe)
loss = training.loss_for(model); opt = training.make_optimizer(model)
order = batches.epoch_order(tg.n_groups, 0, 0)
step = 0
def report(tag):
    print(f"--- {tag}")
    for name, p in model.named_parameters():
        if p.grad is None: continue
        g = p.grad.detach(); st = opt.state.get(p, {})
        v = st.get("v"); 
        ratio = float((v.sqrt() / (v.sqrt() + 1e-7)).mean()) if v is not None else float("nan")
        print(f"{name:45s} |w|rms {p.detach().pow(2).mean().sqrt():.3e} |g|rms {g.pow(2).mean().sqrt():.3e} sqrt(v)/(sqrt(v)+eps) {ratio:.3f}")
while step < nsteps:
    for b in range(0, len(order), 16):
        inputs, targets = training.batch_tensors(tg, order[b:b+16])
        t = training.train_step(model, opt, loss, inputs, targets)
        if step in (0, 1, nsteps - 1): print(step, t); report(f"after step {step}") if step == nsteps - 1 or step == 1 else None
        step += 1
        if step >= nsteps: break
    order = batches.epoch_order(tg.n_groups, 0, step)

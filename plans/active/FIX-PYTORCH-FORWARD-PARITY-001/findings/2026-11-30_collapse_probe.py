# A record of a probe run, kept as it ran at commit 1b9bcff (2026-11-30); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 1b9bcff
"""Collapse experiments on the PyTorch port (gridsize 1 or 2), issue 8's findings of 2026-11-30.

A one-off probe, not a project tool: it monkeypatches the port to try variants (flags). With
no variant flags it trains the model as shipped, e.g. the E7 row:
    python plans/active/FIX-PYTORCH-FORWARD-PARITY-001/findings/2026-11-30_collapse_probe.py --gridsize 2 --epochs 20 --tag E7
Round 1's rows ran on the code before the fix (Glorot, raw input, lr 1e-3), where the flags
--input_norm rms --init he --amp_bias 2 added what the code now does itself.
"""
import argparse, json, math, time, sys
import numpy as np, torch
from torch.nn import functional as F
torch.set_num_threads(2)
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.batches import prepare_job_data
from ptycho.torch import model as tm, training as tt, inference as ti
from ptycho import stitching

p = argparse.ArgumentParser()
p.add_argument("--gridsize", type=int, default=1)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--n_groups", type=int, default=384)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--input_norm", default="none")   # none | rms
p.add_argument("--init", default="glorot")       # glorot | he
p.add_argument("--amp_head", default="sigmoid")  # sigmoid | scaled
p.add_argument("--loss", default="nll")          # nll | mae_amp (amplitude MAE in diffraction)
p.add_argument("--tag", default="")
p.add_argument("--out", default="probe_out", help="folder for results.jsonl and the weights")
p.add_argument("--norm", default="none")  # none | gn
p.add_argument("--est", type=int, default=0)
p.add_argument("--he_heads", type=int, default=0)
p.add_argument("--amp_bias", type=int, default=0)
p.add_argument("--n_images", type=int, default=512)
a = p.parse_args()

train, test = simulate_dataset(SimulationSpec(seed=0, n_images=a.n_images))
g = GroupingSpec(gridsize=a.gridsize, neighbor_count=7, n_groups=a.n_groups, n_images=None, seed=a.seed)
spec, tr, te, te_groups = prepare_job_data(train, test, g, ModelSpec(gridsize=a.gridsize, learning_rate=a.lr, seed=a.seed, **({'nll_weight': 0.0, 'realspace_weight': 1.0} if a.loss == 'sup' else {})))
A = tr.diffraction / spec.intensity_scale
rms = float(np.sqrt(np.mean(A.astype(np.float64) ** 2)))
P = train.probe
a0 = float(np.sqrt(np.mean(np.sum(A.astype(np.float64)**2, axis=(1, 2))) / np.sum(np.abs(P)**2) ))
print(f"input rms {rms:.4f} max {A.max():.2f} a0 {a0:.3f} true mean|Y| {np.abs(train.Y).mean():.3f}", flush=True)

model = tm.build_model(spec, P)
if a.init == "he":
    g_ = torch.Generator().manual_seed(a.seed)
    for name, conv in model.convolutions().items():
        if a.init == "he" and ("centre_conv" in name or "outer_conv" in name) and not a.he_heads:
            continue
        fan_in = conv.weight.shape[1] * 9
        with torch.no_grad():
            conv.weight.normal_(0, math.sqrt(2.0 / fan_in), generator=g_)
if a.norm == "gn":
    import types
    from torch import nn
    def fwd_pool(self, x):
        return F.max_pool2d(F.relu(self.gn1(self.conv1(F.relu(self.gn0(self.conv0(x)))))), 2)
    def fwd_up(self, x):
        return F.interpolate(F.relu(self.gn1(self.conv1(F.relu(self.gn0(self.conv0(x)))))), scale_factor=2, mode="nearest")
    for mod in list(model.modules()):
        if isinstance(mod, (tm.ConvPoolBlock, tm.ConvUpBlock)):
            f = mod.conv0.out_channels
            mod.gn0 = nn.GroupNorm(min(8, f), f); mod.gn1 = nn.GroupNorm(min(8, f), f)
            mod.forward = types.MethodType(fwd_pool if isinstance(mod, tm.ConvPoolBlock) else fwd_up, mod)
if a.amp_bias:
    with torch.no_grad():
        model.amplitude_decoder.head.centre_conv.bias.fill_(math.log(a0 / (1 - a0)))
        if a.amp_bias > 1:
            from scipy.optimize import brentq
            b = brentq(lambda z: z / (1 + math.exp(-z)) - a0, 0, 5)
            model.amplitude_decoder.head.outer_conv.bias.fill_(b)
            print("ring bias", b)
norm = rms if a.input_norm == "rms" else 1.0
orig_obj = model.object_patches
def object_patches(x):
    if a.input_norm.startswith("log"):
        k = float(a.input_norm[3:] or 1)
        return orig_obj(torch.log1p(k * x / rms))
    return orig_obj(x / norm)
model.object_patches = object_patches
if a.amp_head == "scaled":
    for dec in (model.amplitude_decoder,):
        dec.head.activation = lambda x: 2 * a0 * torch.sigmoid(x)

def estimate(diff_channels, probe):
    # (B,N,N,C) amplitudes A_file -> (B,N,N,2C) [Re, Im] of conj(P) psi / (|P|^2 + eps)
    Pc = probe.astype(np.complex128)
    u = np.fft.fftshift(np.fft.fft2(Pc)); u = u / np.maximum(np.abs(u), 1e-30)
    A = np.transpose(diff_channels, (0, 3, 1, 2)).astype(np.float64)
    n = A.shape[-1]
    psi = np.fft.ifft2(np.fft.ifftshift(A * u, axes=(-2, -1))) * n
    w = np.abs(Pc) ** 2
    O = psi * np.conj(Pc) / (w + 0.01 * w.max())
    O = np.transpose(O, (0, 2, 3, 1))
    return np.concatenate([O.real, O.imag], axis=-1).astype(np.float32)
if a.est:
    from torch import nn
    est_tr = estimate(tr.diffraction / spec.intensity_scale, P)
    est_te = estimate(te.diffraction / spec.intensity_scale, P)
    print("estimate |O| mean in centre", np.abs(est_tr[:, 24:40, 24:40, 0]).mean())
    C = a.gridsize ** 2
    old = model.encoder.block0.conv0
    model.encoder.block0.conv0 = nn.Conv2d(2 * C, old.out_channels, 3, padding=1)
    cur = {}
    orig_bt = tt.batch_tensors
    def batch_tensors(data, index):
        i, t = orig_bt(data, index)
        cur["est"] = torch.from_numpy((est_tr if data is tr else est_te)[index])
        return i, t
    tt.batch_tensors = batch_tensors
    orig_obj2 = model.object_patches
    model.object_patches = lambda x: orig_obj2(cur["est"])
    import ptycho.torch.inference as ti_mod
    orig_pred = ti.predict_patches
    def predict_patches(model_, inputs, bs):
        outs = []
        for b in range(0, len(est_te), bs):
            cur["est"] = torch.from_numpy(est_te[b:b + bs])
            with torch.no_grad():
                outs.append(orig_obj2(cur["est"]).numpy())
        return np.concatenate(outs)
    ti.predict_patches = predict_patches
acts = {}
model.encoder.register_forward_hook(lambda m, i, o: acts.__setitem__("bottleneck", o.detach()))
loss = tt.loss_for(model)
if a.loss == "mae_amp":
    class L:
        term_names = ["loss"]
        def __call__(self, targets, outputs):
            return {"loss": torch.mean(torch.abs(outputs["amplitude"] - torch.sqrt(targets["intensity"])))}
    loss = L()
opt = tt.make_optimizer(model)
train_part = tr
t0 = time.time()
step = 0
for epoch in range(a.epochs):
    order = np.random.default_rng((a.seed, epoch)).permutation(train_part.n_groups)
    losses = []
    for b in range(0, len(order), a.batch):
        inputs, targets = tt.batch_tensors(train_part, order[b:b + a.batch])
        if a.loss == 'sup': targets['object'] = torch.from_numpy(train_part.object[order[b:b + a.batch]])
        terms = tt.train_step(model, opt, loss, inputs, targets)
        losses.append(terms["loss"]); step += 1
    dead = float((acts["bottleneck"].amax(dim=(0, 2, 3)) <= 0).float().mean())
    print(f"epoch {epoch} loss {np.mean(losses):.6g} dead {dead:.2f} t {time.time()-t0:.0f}s", flush=True)

patches = ti.predict_patches(model, te.inputs(), 32)
amp = np.abs(patches)
spread = float(np.std(amp[:, 24:40, 24:40, :], axis=0).mean())
true_spread = float(np.std(np.abs(test.Y)[:, 24:40, 24:40], axis=0).mean())
stitched = ti.stitch_patches(patches, te_groups)
q = stitching.stitched_quality(stitched, test.object_guess)
# constant floor
import dataclasses
floor = stitching.stitched_quality(dataclasses.replace(stitched, canvas=np.full_like(stitched.canvas, a0)), test.object_guess)
print("floor", {k: round(floor[k], 4) for k in ("amp_mae", "phase_mae")})
from ptycho.batches import group_data
tr_groups = stitching.inference_groups(train, a.gridsize, 7, a.seed)
tr_all = group_data(train, tr_groups, spec.intensity_scale, with_object=False)
if a.est:
    est_te = estimate(tr_all.diffraction / spec.intensity_scale, P)
q_tr = stitching.stitched_quality(ti.stitch_patches(ti.predict_patches(model, tr_all.inputs(), 32), tr_groups), train.object_guess)
print("train quality", {k: round(q_tr[k], 4) for k in ("amp_mae", "phase_mae")})
import os
os.makedirs(a.out, exist_ok=True)
torch.save(model.state_dict(), os.path.join(a.out, f"{a.tag or 'model'}.pt"))
res = dict(vars(a), train_amp_mae=q_tr["amp_mae"], train_phase_mae=q_tr["phase_mae"], spread=spread, true_spread=true_spread, dead=dead, **{k: q[k] for k in ("amp_mae", "phase_mae", "amp_ssim", "phase_ssim") if k in q}, secs=time.time() - t0)
print("RESULT", json.dumps(res), flush=True)
with open(os.path.join(a.out, "results.jsonl"), "a") as f:
    f.write(json.dumps(res) + "\n")

# A record of a probe run, kept as it ran at commit 67090ee (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 67090ee
"""Round-8 probe (issue 8): round 7's probe plus --poly K: a low-order phase surface per patch (K=2 ramps, K=5 ramps and
quadratics) from a zero-initialised linear map of the flattened bottleneck, added to the phase decoder's output; then the
saved model stitched from the decoder patches and the diffracted patches, with and without phase sync. Not a project tool."""
import argparse, json, time, sys
from pathlib import Path
sys.path.insert(0, "/work/main")
from ptycho import determinism
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
p = argparse.ArgumentParser()
p.add_argument("--kind", default="mixed"); p.add_argument("--gs", type=int, default=2)
p.add_argument("--seed", type=int, default=0); p.add_argument("--epochs", type=int, default=20)
p.add_argument("--n_groups", type=int, default=384); p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=1e-4); p.add_argument("--scale", type=int, default=2)
p.add_argument("--n_images", type=int, default=512)
p.add_argument("--tag", default="x"); p.add_argument("--dmae", type=float, default=0.0)
p.add_argument("--nll", type=float, default=1.0); p.add_argument("--leaky", type=float, default=0.0); p.add_argument("--coord", type=float, default=0.0); p.add_argument("--warm", type=float, default=0.0); p.add_argument("--offsets", type=float, default=0.0); p.add_argument("--warm_epoch", type=int, default=3); p.add_argument("--phase_gain", type=float, default=1.0); p.add_argument("--ring_tanh", type=int, default=0); p.add_argument("--poly", type=int, default=0)
a = p.parse_args()
determinism.configure_torch(2)
if a.leaky:
    import torch.nn.functional as F
    F.relu = lambda x, inplace=False, _s=a.leaky: F.leaky_relu(x, _s)
from ptycho.torch.workflow import run_phase_job
if a.phase_gain != 1.0 or a.ring_tanh:
    import math as _m, torch as _t
    import torch.nn.functional as _F
    from ptycho.torch import model as _tm
    def _phase(x, _g=a.phase_gain):
        return _m.pi * _t.tanh(_g * x)
    _tm.phase_activation = _phase
    def _head_forward(self, x):
        q = self.quarter
        centre = _F.pad(self.activation(self.centre_conv(x[:, :-_tm.OUTER_CHANNELS])), (q, q, q, q))
        z = self.outer_conv(self.outer_block(x[:, -_tm.OUTER_CHANNELS:]))
        outer = self.activation(z) if (a.ring_tanh and self.activation is _phase) else _F.silu(z)
        return centre + outer * self.border_mask
    _tm.DecoderHead.forward = _head_forward

if a.poly:
    import torch as _pt
    from torch import nn as _nn
    from ptycho.torch import model as _pm
    _orig_init_p = _pm.PtychoPINN.__init__
    def _init_p(self, spec, probe):
        _orig_init_p(self, spec, probe)
        C, N = self.channels, spec.N
        feats = 2 * (32 * spec.n_filters_scale) * 2 * (N // 8) ** 2  # 128s channels at N/8 x N/8
        self.phase_poly = _nn.Linear(feats, a.poly * C)
        _nn.init.zeros_(self.phase_poly.weight); _nn.init.zeros_(self.phase_poly.bias)
        k = (_pt.arange(N, dtype=_pt.float32) - N // 2) / (N / 2)
        y, x = _pt.meshgrid(k, k, indexing="ij")
        basis = _pt.stack([x, y, x * x + y * y - 2 / 3, x * x - y * y, 2 * x * y])[:a.poly]  # (K, N, N)
        self.register_buffer("poly_basis", basis, persistent=False)
    def _op_p(self, scaled_diffraction):
        features = self.encoder(scaled_diffraction.permute(0, 3, 1, 2))
        amplitude = self.amplitude_decoder(features).permute(0, 2, 3, 1)
        phase = self.phase_decoder(features).permute(0, 2, 3, 1)
        B, C = phase.shape[0], self.channels
        coef = self.phase_poly(features.flatten(1)).view(B, a.poly, C)
        phase = phase + _pt.einsum("bkc,kyx->byxc", coef, self.poly_basis)
        return _pt.complex(amplitude * _pt.cos(phase), amplitude * _pt.sin(phase))
    _pm.PtychoPINN.__init__ = _init_p
    _pm.PtychoPINN.object_patches = _op_p

if a.offsets:
    import torch, math
    from torch import nn
    from ptycho.torch import model as tm, ops as tops
    orig_init2 = tm.PtychoPINN.__init__
    def init2(self, spec, probe):
        orig_init2(self, spec, probe)
        C = self.channels
        old = self.encoder.block0.conv0
        new = nn.Conv2d(3 * C, old.out_channels, 3, padding=1)
        g = torch.Generator().manual_seed(1000 + spec.seed)
        with torch.no_grad():
            new.weight.zero_(); new.bias.copy_(old.bias)
            new.weight[:, :C] = old.weight
            new.weight[:, C:] = torch.randn(new.weight[:, C:].shape, generator=g) * math.sqrt(2 / (9 * 3 * C))
        self.encoder.block0.conv0 = new
    def fwd(self, diffraction, coords_relative):
        scale = torch.exp(self.log_scale)
        x = diffraction / (scale * self.spec.encoder_input_rms)
        B, N, _, C = x.shape
        off = coords_relative[:, 0] / a.offsets  # (B, 2, C)
        planes = off[:, :, None, None, :].expand(B, 2, N, N, C)  # (B,2,N,N,C)
        xa = torch.cat([x, planes[:, 0], planes[:, 1]], dim=-1)
        features = self.encoder(xa.permute(0, 3, 1, 2))
        amplitude = self.amplitude_decoder(features).permute(0, 2, 3, 1)
        phase = self.phase_decoder(features).permute(0, 2, 3, 1)
        obj = torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))
        illuminated = self.illuminated_patches(obj, coords_relative) * self.probe
        predicted = tops.pad_and_diffract(illuminated) * scale
        return {"object": obj, "amplitude": predicted, "intensity": torch.square(predicted)}
    tm.PtychoPINN.__init__ = init2
    tm.PtychoPINN.forward = fwd

callbacks = []
if a.warm:
    from ptycho.torch import training as _tt
    _opt = {}
    _orig_mo = _tt.make_optimizer
    def _mo(model):
        _opt["o"] = _orig_mo(model); return _opt["o"]
    _tt.make_optimizer = _mo
    class Warm:
        def on_epoch_begin(self, epoch, logs):
            if epoch == a.warm_epoch:
                _opt["o"].learning_rate = a.warm
    callbacks.append(Warm())

if a.coord:
    import torch, math
    from torch import nn
    from ptycho.torch import model as tm
    orig_init = tm.PtychoPINN.__init__
    def init(self, spec, probe):
        orig_init(self, spec, probe)
        C = self.channels
        old = self.encoder.block0.conv0
        new = nn.Conv2d(3 * C, old.out_channels, 3, padding=1)
        g = torch.Generator().manual_seed(1000 + spec.seed)
        with torch.no_grad():
            new.weight.zero_(); new.bias.copy_(old.bias)
            new.weight[:, :C] = old.weight
            new.weight[:, C:] = torch.randn(new.weight[:, C:].shape, generator=g) * math.sqrt(2 / (9 * 3 * C))
        self.encoder.block0.conv0 = new
        N = spec.N
        k = (torch.arange(N, dtype=torch.float32) - N // 2) / (N / 2)
        self.register_buffer("kx", k[None, None, :, None].expand(1, N, N, 1).clone(), persistent=False)
        self.register_buffer("ky", k[None, :, None, None].expand(1, N, N, 1).clone(), persistent=False)
    def op(self, x):
        xa = torch.cat([x, x * self.kx * a.coord, x * self.ky * a.coord], dim=-1)
        features = self.encoder(xa.permute(0, 3, 1, 2))
        amplitude = self.amplitude_decoder(features).permute(0, 2, 3, 1)
        phase = self.phase_decoder(features).permute(0, 2, 3, 1)
        return torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))
    tm.PtychoPINN.__init__ = init
    tm.PtychoPINN.object_patches = op
train, test = simulate_dataset(SimulationSpec(object_kind=a.kind, seed=0, n_images=a.n_images))
out = Path(f"/tmp/exp3/runs/{a.tag}_{a.kind}_gs{a.gs}_s{a.seed}")
t = time.time()
ms = dict(gridsize=a.gs, seed=a.seed, learning_rate=a.lr, n_filters_scale=a.scale)
if a.dmae: ms.update(diffraction_mae_weight=a.dmae, nll_weight=a.nll)
r = run_phase_job(train, test,
    grouping=GroupingSpec(gridsize=a.gs, neighbor_count=7, n_groups=a.n_groups, n_images=None, seed=a.seed),
    model_spec=ModelSpec(**ms),
    train_spec=TrainSpec(max_epochs=a.epochs, batch_size=a.batch, seed=a.seed, validation_split=0.05, quiet=True),
    run_dir=out / "run", bundle_dir=out / "bundle", callbacks=callbacks)
q = {k: round(r.quality[k], 4) for k in ("amp_mae", "phase_mae")}
line = json.dumps({"tag": a.tag, "kind": a.kind, "gs": a.gs, "seed": a.seed, "batch": a.batch, "lr": a.lr,
                   "epochs_run": len(r.history["loss"]), "train_s": round(r.timings_s["training"]),
                   "loss": r.history["loss"][-1], "loss_hist": [round(x) for x in r.history["loss"]], "lr_hist": r.history["learning_rate"], **q})
print(line); open("/tmp/exp3/results.jsonl", "a").write(line + "\n")
# the group-consistent patches (what the forward model saw) stitched, with and without sync
import numpy as np, torch
from ptycho import stitching
from ptycho.batches import group_data
from ptycho.torch.inference import predict_patches, stitch_patches
from ptycho.torch.model import load_model
spec = ModelSpec(**json.load(open(out / "run" / "model_spec.json")))
model = load_model(spec, train.probe, out / "run" / "model.pt")
res = {}
for name, data in (("train", train), ("test", test)):
    groups = stitching.inference_groups(data, spec.gridsize, 7, 0)
    g = group_data(data, groups, spec.intensity_scale)
    raw = predict_patches(model, g.inputs(), 16)
    with torch.no_grad():
        cons = model.illuminated_patches(torch.from_numpy(raw), torch.from_numpy(g.coords_relative)).numpy()
    const = np.full(raw.shape, spec.initial_amplitude, np.complex64)
    f = stitching.stitched_quality(stitch_patches(const, groups), data.object_guess)
    for label, p in (("raw", raw), ("cons", cons)):
        for sync in (False, True):
            q = stitching.stitched_quality(stitch_patches(p, groups, phase_offsets="sync" if sync else "none"), data.object_guess)
            res[f"{name}_{label}{'_sync' if sync else ''}"] = [round(q['amp_mae'] / f['amp_mae'], 3), round(q['phase_mae'] / max(f['phase_mae'], 1e-9), 3)]
line = json.dumps({"tag": a.tag, "ratios": res})
print(line); open("/tmp/exp3/results.jsonl", "a").write(line + "\n")

"""Round-6 probe (issue 8): one torch run like runners.bench_quality with knobs that monkeypatch the port
(--batch, --lr, --leaky, --coord, --offsets, --warm); appends a JSON line to results.jsonl. Not a project tool.
Run from the repo root with PYTHONPATH=. ; writes under /tmp/exp2."""
import argparse, json, time, sys
from pathlib import Path

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
p.add_argument("--nll", type=float, default=1.0); p.add_argument("--leaky", type=float, default=0.0); p.add_argument("--coord", type=float, default=0.0); p.add_argument("--warm", type=float, default=0.0); p.add_argument("--offsets", type=float, default=0.0); p.add_argument("--warm_epoch", type=int, default=3)
a = p.parse_args()
determinism.configure_torch(2)
if a.leaky:
    import torch.nn.functional as F
    F.relu = lambda x, inplace=False, _s=a.leaky: F.leaky_relu(x, _s)
from ptycho.torch.workflow import run_phase_job

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
out = Path(f"/tmp/exp2/runs/{a.tag}_{a.kind}_gs{a.gs}_s{a.seed}")
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
print(line); open("/tmp/exp2/results.jsonl", "a").write(line + "\n")

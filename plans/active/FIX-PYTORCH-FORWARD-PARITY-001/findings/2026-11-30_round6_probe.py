# A record of a probe run, kept as it ran at commit 9691b19 (2026-11-30); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 9691b19
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

import math
import torch
from torch import nn
from ptycho.torch import model as tm, ops as tops


def widen_encoder_input(model, extra_per_pattern, seed):
    """Give the first convolution ``extra_per_pattern`` more input channels per pattern: its kernels
    for the diffraction as they were, He-normal ones for the new channels."""
    C = model.channels
    old = model.encoder.block0.conv0
    wide = nn.Conv2d((1 + extra_per_pattern) * C, old.out_channels, 3, padding=1)
    generator = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        wide.weight.zero_()
        wide.bias.copy_(old.bias)
        wide.weight[:, :C] = old.weight
        wide.weight[:, C:] = torch.randn(wide.weight[:, C:].shape, generator=generator) * math.sqrt(
            2 / (9 * wide.in_channels))
    model.encoder.block0.conv0 = wide


def decode(model, encoder_input):
    """(B, N, N, C') encoder input -> (B, N, N, C) complex object patches."""
    features = model.encoder(encoder_input.permute(0, 3, 1, 2))
    amplitude = model.amplitude_decoder(features).permute(0, 2, 3, 1)
    phase = model.phase_decoder(features).permute(0, 2, 3, 1)
    return torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))


original_init = tm.PtychoPINN.__init__
if a.offsets:  # the group's relative offsets (px / a.offsets) as two constant planes per pattern
    def init_with_offsets(self, spec, probe):
        original_init(self, spec, probe)
        widen_encoder_input(self, 2, spec.seed)

    def forward_with_offsets(self, diffraction, coords_relative):
        scale = torch.exp(self.log_scale)
        x = diffraction / (scale * self.spec.encoder_input_rms)
        B, N, _, C = x.shape
        planes = (coords_relative[:, 0] / a.offsets)[:, :, None, None, :].expand(B, 2, N, N, C)
        obj = decode(self, torch.cat([x, planes[:, 0], planes[:, 1]], dim=-1))
        predicted = tops.pad_and_diffract(self.illuminated_patches(obj, coords_relative) * self.probe) * scale
        return {"object": obj, "amplitude": predicted, "intensity": torch.square(predicted)}

    tm.PtychoPINN.__init__, tm.PtychoPINN.forward = init_with_offsets, forward_with_offsets

if a.coord:  # the pattern's first moments: A * kx and A * ky (k in [-1, 1]) times a.coord
    def init_with_moments(self, spec, probe):
        original_init(self, spec, probe)
        widen_encoder_input(self, 2, spec.seed)
        k = (torch.arange(spec.N, dtype=torch.float32) - spec.N // 2) / (spec.N / 2)
        self.register_buffer("kx", k[None, None, :, None].expand(1, spec.N, spec.N, 1).clone(), persistent=False)
        self.register_buffer("ky", k[None, :, None, None].expand(1, spec.N, spec.N, 1).clone(), persistent=False)

    def patches_with_moments(self, x):
        return decode(self, torch.cat([x, x * self.kx * a.coord, x * self.ky * a.coord], dim=-1))

    tm.PtychoPINN.__init__, tm.PtychoPINN.object_patches = init_with_moments, patches_with_moments

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

# A record of a probe run, kept as it ran at commit 1b9bcff (2026-11-30); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 1b9bcff
import numpy as np, torch
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec
from ptycho.batches import prepare_job_data
from ptycho.torch import ops, training as tt
torch.manual_seed(0)
train, test = simulate_dataset(SimulationSpec(seed=0))
spec, tr, te, _ = prepare_job_data(train, test, GroupingSpec(gridsize=1, n_groups=384, seed=0), ModelSpec(gridsize=1, mae_weight=1.0))
s = spec.intensity_scale
P = torch.from_numpy(train.probe.astype(np.complex64))[None, :, :, None]
n = 16
I = torch.from_numpy(tr.intensity[:n]); Y = tr.object[:n]
amp = torch.full((n, 64, 64, 1), 0.7, requires_grad=True); ph = torch.zeros((n, 64, 64, 1), requires_grad=True)
opt = torch.optim.Adam([amp, ph], lr=1e-2)
c = slice(16, 48)
for it in range(1501):
    O = torch.complex(amp * torch.cos(ph), amp * torch.sin(ph))
    loss = tt.poisson_nll(I, (ops.pad_and_diffract(O * P) * s) ** 2)
    opt.zero_grad(); loss.backward(); opt.step()
    if it % 300 == 0:
        Oc = O.detach().numpy()[:, c, c, 0]; Tc = Y[:, c, c, 0]
        # per-patch global phase alignment
        g = np.angle(np.sum(Oc * np.conj(Tc), axis=(1, 2)))[:, None, None]
        print(it, float(loss), "amp_mae %.4f" % np.mean(np.abs(np.abs(Oc) - np.abs(Tc))), "phase_mae %.4f" % np.mean(np.abs(np.angle(Oc * np.exp(-1j * g) * np.conj(Tc)))))
print("truth loss", float(tt.poisson_nll(I, (ops.pad_and_diffract(torch.from_numpy(Y) * P) * s) ** 2)))

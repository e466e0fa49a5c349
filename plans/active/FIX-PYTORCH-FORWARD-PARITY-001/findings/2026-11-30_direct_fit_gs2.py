# A record of a probe run, kept as it ran at commit 1b9bcff (2026-11-30); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 1b9bcff
import numpy as np, torch
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec
from ptycho.batches import prepare_job_data
from ptycho.torch import ops, training as tt, reassembly
train, test = simulate_dataset(SimulationSpec(seed=0))
spec, tr, te, _ = prepare_job_data(train, test, GroupingSpec(gridsize=2, n_groups=384, seed=0), ModelSpec(gridsize=2, mae_weight=1.0))
s = spec.intensity_scale; M = spec.canvas_size
P = torch.from_numpy(train.probe.astype(np.complex64))[None, :, :, None]
n = 16
I = torch.from_numpy(tr.intensity[:n]); Y = tr.object[:n]; coords = torch.from_numpy(tr.coords_relative[:n])
amp = torch.full((n, 64, 64, 4), 0.7, requires_grad=True); ph = torch.zeros((n, 64, 64, 4), requires_grad=True)
opt = torch.optim.Adam([amp, ph], lr=1e-2)
c = slice(16, 48)
def fwd(O):
    canvas = reassembly.reassemble_patches(O, coords, M)
    return reassembly.extract_patches_at_offsets(canvas, coords, 64)
for it in range(1501):
    O = torch.complex(amp * torch.cos(ph), amp * torch.sin(ph))
    E = fwd(O)
    loss = tt.poisson_nll(I, (ops.pad_and_diffract(E * P) * s) ** 2)
    opt.zero_grad(); loss.backward(); opt.step()
    if it % 300 == 0:
        Oc = E.detach().numpy()[:, c, c, :]; Tc = Y[:, c, c, :]
        g = np.angle(np.sum(Oc * np.conj(Tc), axis=(1, 2, 3)))[:, None, None, None]
        print(it, float(loss.detach()), "amp_mae %.4f" % np.mean(np.abs(np.abs(Oc) - np.abs(Tc))), "phase_mae %.4f" % np.mean(np.abs(np.angle(Oc * np.exp(-1j * g) * np.conj(Tc)))), flush=True)
Yt = torch.from_numpy(Y)
print("truth loss", float(tt.poisson_nll(I, (ops.pad_and_diffract(fwd(Yt) * P) * s) ** 2)))

# Issue 22 supervised-fit probe (2026-12-08), ran on commit a9753ad; not maintained, not imported by the package.
import numpy as np, torch, dataclasses
torch.set_num_threads(1)
from ptycho.data.batches import prepare_job_data
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec
from ptycho.torch import training
from ptycho.torch.model import build_model
train, test = simulate_dataset(SimulationSpec(n_images=512, object_kind="lines", seed=0, nphotons=1e9))
Y = train.Y
print("Y", Y.shape, Y.dtype, "|Y| mean", np.abs(Y).mean(), "min", np.abs(Y).min(), "max", np.abs(Y).max())
ph = np.angle(Y); print("phase Y mean", ph.mean(), "std", ph.std(), "min", ph.min(), "max", ph.max())
O = train.object_guess; print("object |O| mean", np.abs(O).mean(), "phase range", np.angle(O).min(), np.angle(O).max())
mspec = ModelSpec(gridsize=1, n_filters_scale=2, learning_rate=1e-4, seed=0, overlap="weighted", nll_weight=0.0, realspace_weight=1.0)
spec, tg, _, _ = prepare_job_data(train, test, GroupingSpec(gridsize=1, n_groups=None, seed=0), mspec, 1e9)
print("spec a0", spec.initial_amplitude, "amplitude_scale", spec.amplitude_scale, "intensity_scale", spec.intensity_scale,
      "weights nll", spec.nll_weight, "rs", spec.realspace_weight, "mae", spec.mae_weight)
print("tg.object", tg.object.shape, "diffraction", tg.diffraction.shape)
torch.manual_seed(0)
model = build_model(spec, train.probe)
loss = training.loss_for(model)
print("loss weights", loss.weights)
idx = slice(0, 64)
inputs, targets = training.batch_tensors(tg, idx)
with torch.no_grad():
    out = model(inputs["diffraction"], inputs["coords_relative"])
    o = out["object"]
    print("net out shape", o.shape, "|out| mean", o.abs().mean().item(), "centre mean", o.abs()[:, 16:48, 16:48].mean().item(),
          "ring mean", (o.abs().sum() - o.abs()[:, 16:48, 16:48].sum()).item() / (o.numel() - o[:, 16:48, 16:48].numel()))
    print("net phase mean", o.angle().mean().item(), "std", o.angle().std().item())
    t = targets["object"]
    print("target |t| mean", t.abs().mean().item(), "centre", t.abs()[:, 16:48, 16:48].mean().item())
    print("loss(net init)", {k: float(v) for k, v in loss(targets, out).items()})
    out2 = dict(out); out2["object"] = t.clone()
    print("loss(truth as output)", {k: float(v) for k, v in loss(targets, out2).items()})
    const = torch.full_like(t, complex(spec.initial_amplitude * spec.amplitude_scale))
    out3 = dict(out); out3["object"] = const
    print("loss(constant a0 object)", {k: float(v) for k, v in loss(targets, out3).items()})
    m = t.abs().mean()
    out4 = dict(out); out4["object"] = torch.full_like(t, complex(float(m)))
    print("loss(constant mean|t|)", {k: float(v) for k, v in loss(targets, out4).items()})
    out5 = dict(out); out5["object"] = t.abs().to(torch.complex64)
    print("loss(|t| with zero phase)", {k: float(v) for k, v in loss(targets, out5).items()})
    # check orientation: does the truth's diffraction match the data?
    from ptycho import physics
    P = model.probe[0, :, :, 0]
    A = torch.abs(torch.fft.fftshift(torch.fft.fft2(P * t[..., 0]), dim=(-2, -1)))
    out6 = {"object": t, "amplitude": None}
    full = model.forward  # not used
    # forward path with truth: reuse model internals
    ill = model.illuminated_patches(t, inputs["coords_relative"]) * model.probe
    from ptycho.torch import ops
    pred = ops.pad_and_diffract(ill) * torch.exp(model.log_scale)
    nll_truth = training.poisson_nll(targets["intensity"], pred**2).item()
    nll_net = training.poisson_nll(targets["intensity"], out["intensity"]).item()
    print("poisson nll truth", nll_truth, "net init", nll_net)

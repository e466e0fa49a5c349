# Issue 22 supervised-fit probe (2026-12-08), ran on commit a9753ad; not maintained, not imported by the package.
"""Issue 22 experiment: is the low-pass picture an optimisation limit or a generalisation limit?

Trains the PyTorch PINN on the simulated 'lines' (or 'mixed') train split and scores the stitched
reconstruction of the TRAIN region and of the TEST region (amp MAE over the constant floor, FRC50,
SSIM). Sharp on train and blurred on test: generalisation (data). Blurred on both: optimisation,
architecture or loss.

    python plans/active/FIX-RESOLUTION-OVERLAP-001/train_vs_test.py --gridsize 2 --epochs 10 ...
"""
import argparse, dataclasses, json, time
import numpy as np
import torch
from ptycho.data import batches
from ptycho import stitching, pipeline
from ptycho.data.batches import prepare_job_data, group_data
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from ptycho.torch import inference, training
from ptycho.torch.model import build_model

p = argparse.ArgumentParser()
p.add_argument("--kind", default="lines")
p.add_argument("--n-images", type=int, default=1024)
p.add_argument("--gridsize", type=int, default=2)
p.add_argument("--epochs", type=int, default=10)
p.add_argument("--batch", type=int, default=16)
p.add_argument("--lr", type=float, default=1e-4)
p.add_argument("--filters", type=int, default=2)
p.add_argument("--loss", default="nll", choices=["nll", "dmae", "supervised"],
               help="supervised: real-space MSE against the true patches (what the network can learn at all)")
p.add_argument("--seed", type=int, default=0)
p.add_argument("--nphotons", type=float, default=1e9)
p.add_argument("--step", type=float, default=None)
p.add_argument("--out", default=None)
p.add_argument("--overlap", default="weighted")
p.add_argument("--amplitude-range", type=float, nargs=2, default=None)
p.add_argument("--probe-scale", type=float, default=1.0, help="divide the probe by this (another normalisation)")
p.add_argument("--old-start", action="store_true", help="amplitude_scale 1, a0 clipped (before amplitude_start)")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--skip-train-region", action="store_true")
p.add_argument("--rs-weight", type=float, default=1.0)
a = p.parse_args()
torch.set_num_threads(a.threads)

train, test = simulate_dataset(SimulationSpec(n_images=a.n_images, object_kind=a.kind, seed=0,
                                              nphotons=a.nphotons, scan_step_px=a.step,
                                              amplitude_range=tuple(a.amplitude_range) if a.amplitude_range else None))
if a.probe_scale != 1.0:
    train, test = (dataclasses.replace(d, probe=d.probe / a.probe_scale) for d in (train, test))
gspec = GroupingSpec(gridsize=a.gridsize, n_groups=None, seed=a.seed)
weights = {"nll": dict(nll_weight=1.0), "dmae": dict(nll_weight=0.0, diffraction_mae_weight=1.0),
           "supervised": dict(nll_weight=0.0, realspace_weight=a.rs_weight)}[a.loss]
mspec = ModelSpec(gridsize=a.gridsize, n_filters_scale=a.filters, learning_rate=a.lr, seed=a.seed,
                  overlap=a.overlap, **weights)
spec, tg, _, _ = prepare_job_data(train, test, gspec, mspec, a.nphotons)
if a.old_start:
    from ptycho import architecture
    spec = dataclasses.replace(spec, amplitude_scale=1.0, initial_amplitude=architecture.initial_amplitude_from_data(
        train.diffraction, train.probe))
print("start: a0", spec.initial_amplitude, "amplitude_scale", spec.amplitude_scale, flush=True)
torch.manual_seed(a.seed)
model = build_model(spec, train.probe)
t0 = time.time()
history = training.train(model, tg, TrainSpec(max_epochs=a.epochs, batch_size=a.batch, seed=a.seed), [])
train_s = time.time() - t0

def score(data, label):
    groups = stitching.inference_groups(data, a.gridsize, 7, a.seed)
    g = group_data(data, groups, spec.intensity_scale, with_object=False)
    patches = inference.predict_patches(model, g.inputs(), 16)
    patches = inference.diffracted_patches(model, patches, g.coords_relative, 16)
    st = inference.stitch_patches(patches, groups, phase_offsets="none")
    q = stitching.stitched_quality(st, data.object_guess)
    const = np.broadcast_to(np.complex64(spec.initial_amplitude * spec.amplitude_scale), patches.shape)
    fl = stitching.stitched_quality(inference.stitch_patches(const, groups, phase_offsets="none"), data.object_guess)
    truthp = np.transpose(data.Y[groups.nn_indices], (0, 2, 3, 1)).astype(np.complex64)
    ce = stitching.stitched_quality(inference.stitch_patches(truthp, groups, phase_offsets="none"), data.object_guess)
    row = {"region": label, "amp/floor": round(q["amp_mae"] / fl["amp_mae"], 3),
           "amp_mae": round(q["amp_mae"], 4), "amp_ssim": round(q["amp_ssim"], 3), "frc50": round(q["frc50"], 3),
           "ceiling_frc50": round(ce["frc50"], 3), "ceiling_amp/floor": round(ce["amp_mae"] / fl["amp_mae"], 3),
           "floor_frc50": round(fl["frc50"], 3)}
    return row, st

rows = []
for data, label in ((train, "train"), (test, "test"))[1 if a.skip_train_region else 0:]:
    row, st = score(data, label)
    rows.append(row)
result = {"args": vars(a), "train_s": train_s, "epochs_run": len(history["loss"]),
          "final_loss": history["loss"][-1], "lr_history": history.get("learning_rate"), "loss_history": history["loss"], "val_loss": history.get("val_loss"), "rows": rows}
print(json.dumps(result, indent=1, default=float))
if a.out:
    with open(a.out, "a") as f:
        f.write(json.dumps(result, default=float) + "\n")

"""Issue 22 step 1: does the gridsize-2 forward path prefer the true object over a blurred one?

Feeds the TRUE patches Y (and blurred / flat variants) through the model's forward path
(illuminated_patches -> probe -> pad_and_diffract * s) and reports the Poisson NLL over the
data's floor and the diffraction-amplitude MAE. No training.
"""
import dataclasses, sys
import numpy as np
from scipy import ndimage
import tensorflow as tf
from ptycho import batches, grouping, normalization, stitching, architecture, physics
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import ModelSpec
from ptycho.model import build_model
from ptycho import tf_helper
from ptycho.phase_job import poisson_nll_floor

kind = sys.argv[1] if len(sys.argv) > 1 else "lines"
train, _ = simulate_dataset(SimulationSpec(n_images=512, object_kind=kind, seed=0))
print("positions", train.n_images, "object", train.object_guess.shape)

def variants(Y):
    amp, ph = np.abs(Y), np.angle(Y)
    out = {"true": Y}
    for s in (0.5, 1.0, 2.0):
        b = lambda a: ndimage.gaussian_filter(a, (0, s, s, 0))
        out[f"blur{s}"] = (b(Y.real) + 1j * b(Y.imag)).astype(np.complex64)
    mean = np.mean(np.abs(Y))
    out["flat"] = np.full_like(Y, mean)
    return out

for gs in (1, 2):
    groups = grouping.group_positions(train.xcoords, train.ycoords, gs, 7 if gs > 1 else 1, 256, 0)
    scale = normalization.dataset_intensity_scale(train.diffraction, 1e9)
    g = batches.group_data(train, groups, scale)
    spec = ModelSpec(gridsize=gs, intensity_scale=scale,
                     canvas_size=stitching.canvas_size_for(64, groups.coords_relative), use_xla_translate=False)
    model = build_model(spec, train.probe)
    offs = np.abs(groups.coords_relative).reshape(-1)
    frac = np.abs(groups.coords_relative - np.round(groups.coords_relative)).reshape(-1)
    print(f"gs{gs}: canvas {spec.canvas_size}, |offset| median {np.median(offs):.2f} px, fractional part median {np.median(frac):.2f}")
    I = g.intensity
    floor = poisson_nll_floor(I)
    for name, Y in variants(g.object).items():
        patches = model.illuminated_patches(tf.constant(Y), tf.constant(g.coords_relative)) * model.probe
        A = (tf_helper.pad_and_diffract(patches) * scale).numpy()
        nll = float(np.mean(A**2 + 1e-6 - I * np.log(A**2 + 1e-6)))
        mae = float(np.mean(np.abs(A - np.sqrt(I))))
        # high-q share: residual outside radius N/4 in the diffraction plane
        r = np.hypot(*np.meshgrid(np.arange(64) - 32, np.arange(64) - 32))
        hi = r > 16
        mae_hi = float(np.mean(np.abs(A - np.sqrt(I))[:, hi]))
        print(f"  gs{gs} {name:8s} NLL-floor {nll - floor:12.4f}  diffMAE {mae:9.4f}  diffMAE(q>N/4) {mae_hi:9.4f}")

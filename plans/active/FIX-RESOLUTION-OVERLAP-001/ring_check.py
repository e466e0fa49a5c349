"""Issue 22: what the decoder's outer ring does at gridsize 2 (no training).

A network's patch has a full-capacity centre (the central N/2 square, the decoder's main branch) and
an outer ring from a 4-channel side branch. Patches below are the TRUE centre with a degraded ring
(flat a0, or blurred), fed through the model's forward path. Reported: the Poisson NLL over the
data's floor, and the FRC50 / amplitude MAE of the stitched readouts: 'canvas' (what the forward
model diffracted, the runner's default readout) and 'patches' (the decoder's own centres).
    python plans/active/FIX-RESOLUTION-OVERLAP-001/ring_check.py [lines|mixed] [weighting]
"""
import sys, dataclasses
import numpy as np
from scipy import ndimage
import tensorflow as tf
from ptycho.data import batches, grouping, normalization
from ptycho import stitching, architecture
from ptycho.tf import ops as tf_ops
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import ModelSpec
from ptycho.tf.model import build_model
from ptycho.pipeline import poisson_nll_floor
from ptycho.tf.reassembly import reassemble_by_offsets

kind = sys.argv[1] if len(sys.argv) > 1 else "lines"
extra = dict(arg.split("=") for arg in sys.argv[2:])
_, test = simulate_dataset(SimulationSpec(n_images=1024, object_kind=kind, seed=0))
ring = architecture.border_mask(64)[None, :, :, None].astype(bool)

def degrade(Y, how):
    if how == "true":
        return Y
    if how == "ring_flat":
        other = np.full_like(Y, np.mean(np.abs(Y)))
    else:
        s = float(how.split("blur")[1])
        b = lambda a: ndimage.gaussian_filter(a, (0, s, s, 0))
        other = (b(Y.real) + 1j * b(Y.imag)).astype(np.complex64)
    return np.where(ring, other, Y).astype(np.complex64)

for gs in (1, 2):
    groups = stitching.inference_groups(test, gs, 7, 0)
    scale = normalization.dataset_intensity_scale(test.diffraction, 1e9)
    g = batches.group_data(test, groups, scale)
    spec = ModelSpec(gridsize=gs, intensity_scale=scale, use_xla_translate=False,
                     canvas_size=stitching.canvas_size_for(64, groups.coords_relative),
                     **{k: v for k, v in extra.items()})
    model = build_model(spec, test.probe)
    I = g.intensity
    floor = poisson_nll_floor(I)
    for how in ("true", "ring_flat", "ring_blur2.0"):
        Y = degrade(g.object, how)
        seen = model.illuminated_patches(tf.constant(Y), tf.constant(g.coords_relative))
        A = (tf_ops.pad_and_diffract(seen * model.probe) * scale).numpy().astype(np.float64)
        nll = float(np.mean(A**2 + 1e-6 - I * np.log(A**2 + 1e-6)))
        out = []
        for label, patches in (("canvas", seen.numpy()), ("patches", Y)):
            st = stitching.stitch_patches(patches, groups, reassemble_by_offsets)
            q = stitching.stitched_quality(st, test.object_guess)
            out.append(f"{label}: FRC50 {q['frc50']:.3f} amp_mae {q['amp_mae']:.4f} ssim {q['amp_ssim']:.2f}")
        print(f"gs{gs} {how:12s} NLL-floor {nll - floor:9.2f} | " + " | ".join(out), flush=True)

"""Inference and global stitching for the PyTorch port, as ``ptycho.inference`` does them.

Prediction and the shift-and-sum of the stitched canvas run in torch. The bookkeeping
(inference groups, global offsets, the covered mask, ground-truth window and quality) is
plain numpy that lives in ``ptycho.inference``; that module imports TensorFlow at the top,
so it is imported here only when a stitch is made (see the note in ``ptycho.torch``).
"""
from __future__ import annotations

import numpy as np
import torch

from ptycho.torch.model import PtychoPINN
from ptycho.torch.reassembly import reassemble_by_offsets, required_canvas_size


def predict_patches(model: PtychoPINN, inputs: dict, batch_size: int = 32) -> np.ndarray:
    """Object patches (B, N, N, C) complex64 for inputs {'diffraction', 'coords_relative'} (numpy)."""
    if batch_size < 1:
        raise ValueError(f"predict_patches: batch_size must be >= 1; got {batch_size}")
    model.eval()
    chunks = []
    with torch.no_grad():
        for begin in range(0, len(inputs["diffraction"]), batch_size):
            window = slice(begin, begin + batch_size)
            outputs = model(torch.from_numpy(inputs["diffraction"][window]),
                            torch.from_numpy(inputs["coords_relative"][window]))
            chunks.append(outputs["object"].numpy())
    return np.concatenate(chunks).astype(np.complex64)


def stitch_patches(patches: np.ndarray, groups, crop: int | None = None):
    """``ptycho.inference.stitch_patches`` with the canvas summed in torch; returns its Stitched.

    patches (B, N, N, C) complex; groups: the Groups the patches were predicted for; crop:
    even side of the central region stitched (default N/2).
    """
    from ptycho import inference  # numpy bookkeeping; the module imports TensorFlow

    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[1] != patches.shape[2]:
        raise ValueError(f"stitch_patches: patches must be (B, N, N, C); got shape {patches.shape}")
    B, N, _, C = patches.shape
    if np.shape(groups.coords_nn) != (B, 1, 2, C):
        raise ValueError(f"stitch_patches: groups.coords_nn must be (B, 1, 2, C) = ({B}, 1, 2, "
                         f"{C}) to match the patches; got {np.shape(groups.coords_nn)}")
    crop = N // 2 if crop is None else int(crop)
    if not 2 <= crop <= N or crop % 2:
        raise ValueError(f"stitch_patches: crop must be an even number in [2, N={N}]; got {crop}")
    offsets, centre = inference.global_offsets(groups)
    start = (N - crop) // 2
    flat = np.transpose(patches, (0, 3, 1, 2)).reshape(B * C, N, N)
    flat = flat[:, start:start + crop, start:start + crop]
    size = required_canvas_size(crop, offsets)
    canvas = reassemble_by_offsets(flat, offsets, canvas_size=size)
    return inference.Stitched(canvas, inference.covered_mask(size, crop, offsets), offsets,
                              centre, crop)

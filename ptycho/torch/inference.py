"""Inference and global stitching for the PyTorch port, as ``ptycho.inference`` does them.

Prediction and the shift-and-sum of the stitched canvas run in torch; the bookkeeping
(groups, offsets, canvas, quality) is :mod:`ptycho.stitching`'s, shared with the TF side.
"""
from __future__ import annotations

import numpy as np
import torch

from ptycho import stitching
from ptycho.torch.model import PtychoPINN
from ptycho.torch.reassembly import reassemble_by_offsets


def predict_patches(model: PtychoPINN, inputs: dict, batch_size: int = 32) -> np.ndarray:
    """Object patches (B, N, N, C) complex64 for inputs {'diffraction', ...} (numpy, X = s * A).

    Only the encoder and decoders run (``PtychoPINN.object_patches``), as on the TF side: the
    forward model is not needed to read out the object.
    """
    if batch_size < 1:
        raise ValueError(f"predict_patches: batch_size must be >= 1; got {batch_size}")
    model.eval()
    diffraction = inputs["diffraction"]
    chunks = []
    with torch.no_grad():
        for begin in range(0, len(diffraction), batch_size):
            batch = torch.as_tensor(np.array(diffraction[begin:begin + batch_size]), device=model.device)
            chunks.append(model.object_patches(batch).cpu().numpy())
    return np.concatenate(chunks).astype(np.complex64)


def diffracted_patches(model: PtychoPINN, patches: np.ndarray, coords_relative: np.ndarray,
                       batch_size: int = 32) -> np.ndarray:
    """The object patches the forward model diffracts, (B, N, N, C) complex64: with object_big at
    gridsize > 1 each group's patches overlap-averaged onto its canvas and cut out again at their
    offsets (``PtychoPINN.illuminated_patches``); otherwise ``patches`` themselves."""
    if batch_size < 1:
        raise ValueError(f"diffracted_patches: batch_size must be >= 1; got {batch_size}")
    if not model.reassembles:
        return patches
    chunks = []
    with torch.no_grad():
        for begin in range(0, len(patches), batch_size):
            window = slice(begin, begin + batch_size)
            # a copy: torch warns on a read-only array (a memory-mapped dataset's)
            chunks.append(model.illuminated_patches(torch.as_tensor(np.array(patches[window]), device=model.device),
                                                    torch.as_tensor(np.array(coords_relative[window]),
                                                                    device=model.device)).cpu().numpy())
    return np.concatenate(chunks).astype(np.complex64)


def stitch_patches(patches: np.ndarray, groups, crop: int | None = None,
                   phase_offsets: str = "none", com=None) -> stitching.Stitched:
    """``stitching.stitch_patches`` of patches (B, N, N, C) complex, summed in torch."""
    return stitching.stitch_patches(patches, groups, reassemble_by_offsets, crop, phase_offsets, com)

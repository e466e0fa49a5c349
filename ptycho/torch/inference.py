"""Inference and global stitching for the PyTorch port, as ``ptycho.tf.inference`` does them.

Prediction and the shift-and-sum of the stitched canvas run in torch; the bookkeeping
(groups, offsets, canvas, quality) is :mod:`ptycho.stitching`'s, shared with the TF side.
"""
from __future__ import annotations

import numpy as np
import torch

from ptycho import stitching
from ptycho.preflight import INFERENCE_BATCH_MAX as INFERENCE_BATCH
from ptycho.torch.model import PtychoPINN
from ptycho.torch.reassembly import reassemble_by_offsets


def predict_patches(model: PtychoPINN, inputs: dict, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Object patches (B, N, N, C) complex64 for inputs {'diffraction', ...} (numpy, X = s * A).

    Only the encoder and decoders run (``PtychoPINN.object_patches``), as on the TF side: the
    forward model is not needed to read out the object.
    """
    if batch_size < 1:
        raise ValueError(f"predict_patches: batch_size must be >= 1; got {batch_size}")
    model.eval()
    return _in_batches(model.object_patches, model.device, batch_size, inputs["diffraction"])


def diffracted_patches(model: PtychoPINN, patches: np.ndarray, coords_relative: np.ndarray,
                       batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """The object patches the forward model diffracts, (B, N, N, C) complex64: with object_big at
    gridsize > 1 each group's patches overlap-averaged onto its canvas and cut out again at their
    offsets (``PtychoPINN.illuminated_patches``); otherwise ``patches`` themselves."""
    if batch_size < 1:
        raise ValueError(f"diffracted_patches: batch_size must be >= 1; got {batch_size}")
    if not model.reassembles:
        return patches
    return _in_batches(model.illuminated_patches, model.device, batch_size, patches, coords_relative)


def _in_batches(function, device, batch_size: int, *arrays: np.ndarray) -> np.ndarray:
    """``function`` without gradients over ``batch_size`` rows of every array at a time, the results
    (B, ...) complex64 written into one array (no list of chunks and their concatenation)."""
    n = len(arrays[0])
    out = None
    with torch.no_grad():
        for begin in range(0, n, batch_size):
            window = slice(begin, begin + batch_size)
            # copies: torch warns on a read-only array (a memory-mapped dataset's)
            result = function(*(torch.as_tensor(np.array(array[window]), device=device) for array in arrays))
            if out is None:
                out = np.empty((n, *result.shape[1:]), np.complex64)
            out[window] = result.cpu().numpy()
    return out


def stitch_patches(patches: np.ndarray, groups, crop: int | None = None,
                   phase_offsets: str = "none", com=None) -> stitching.Stitched:
    """``stitching.stitch_patches`` of patches (B, N, N, C) complex, summed in torch."""
    return stitching.stitch_patches(patches, groups, reassemble_by_offsets, crop, phase_offsets, com)

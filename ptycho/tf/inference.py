"""Inference on a test split with the Keras model, and global stitching in TensorFlow.

The groups, offsets, canvas and quality bookkeeping is :mod:`ptycho.stitching`'s, shared with
the PyTorch port; this module adds what needs the Keras model or TensorFlow.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ptycho import stitching
from ptycho.tf import reassembly as tf_reassembly
from ptycho.data.grouping import Groups
from ptycho.preflight import INFERENCE_BATCH_MAX as INFERENCE_BATCH


def predict_patches(model, inputs: dict[str, np.ndarray], batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Object patches (B, N, N, C) complex64 predicted for inputs {'diffraction', ...} (X = s * A).

    Only the encoder and decoders run (``PtychoPINN.object_patches``, as ``predict_step``), one traced
    graph for every batch of ``batch_size`` groups.
    """
    _check_batch_size(batch_size, "predict_patches")
    spec = model.spec
    read_out = tf.function(model.object_patches, input_signature=[
        tf.TensorSpec((None, spec.N, spec.N, spec.channels), tf.float32)])
    return _in_batches(read_out, batch_size, (inputs["diffraction"], tf.float32))


def diffracted_patches(model, patches: np.ndarray, coords_relative: np.ndarray,
                       batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """The object patches the forward model diffracts, (B, N, N, C) complex64: with object_big at
    gridsize > 1 each group's patches overlap-averaged onto its canvas and cut out again at their
    offsets (``PtychoPINN.illuminated_patches``); otherwise ``patches`` themselves."""
    _check_batch_size(batch_size, "diffracted_patches")
    if not model.spec.reassembles:
        return patches
    spec = model.spec
    illuminate = tf.function(model.illuminated_patches, input_signature=[
        tf.TensorSpec((None, spec.N, spec.N, spec.channels), tf.complex64),
        tf.TensorSpec((None, 1, 2, spec.channels), tf.float32)])
    return _in_batches(illuminate, batch_size, (patches, tf.complex64), (coords_relative, tf.float32))


def _check_batch_size(batch_size: int, caller: str) -> None:
    if batch_size < 1:
        raise ValueError(f"{caller}: batch_size must be >= 1; got {batch_size}")


def _in_batches(function, batch_size: int, *arrays: tuple[np.ndarray, tf.DType]) -> np.ndarray:
    """``function`` over ``batch_size`` rows of every array at a time, the results (B, ...) complex64
    written into one array: traced (op by op, eager execution costs more than the arithmetic at small
    batches) and without a second copy of the result (a list of chunks, then their concatenation)."""
    n = len(arrays[0][0])
    out = None
    for begin in range(0, n, batch_size):
        window = slice(begin, begin + batch_size)
        result = function(*(tf.convert_to_tensor(array[window], dtype) for array, dtype in arrays)).numpy()
        if out is None:
            out = np.empty((n, *result.shape[1:]), np.complex64)
        out[window] = result
    return out


def stitch_patches(patches: np.ndarray, groups: Groups, crop: int | None = None,
                   phase_offsets: str = "none", com=None) -> stitching.Stitched:
    """``stitching.stitch_patches`` of patches (B, N, N, C) complex, summed in TensorFlow."""
    return stitching.stitch_patches(patches, groups, tf_reassembly.reassemble_by_offsets, crop, phase_offsets, com)

"""Inference on a test split with the Keras model, and global stitching in TensorFlow.

The groups, offsets, canvas and quality bookkeeping is :mod:`ptycho.stitching`'s, shared with
the PyTorch port; this module adds what needs the Keras model or TensorFlow.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from ptycho import stitching, tf_reassembly
from ptycho.grouping import Groups

INFERENCE_BATCH = 16


def predict_patches(model, inputs: dict[str, np.ndarray], batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Object patches (B, N, N, C) complex64 predicted for inputs {'diffraction', ...} (X = s * A).

    Only the encoder and decoders run (``PtychoPINN.predict_step``), ``batch_size`` groups at a time.
    """
    if batch_size < 1:
        raise ValueError(f"predict_patches: batch_size must be >= 1; got {batch_size}")
    outputs = model.predict({"diffraction": inputs["diffraction"]}, batch_size=batch_size, verbose=0)
    return np.asarray(outputs["object"], np.complex64)


def diffracted_patches(model, patches: np.ndarray, coords_relative: np.ndarray,
                       batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """The object patches the forward model diffracts, (B, N, N, C) complex64: with object_big at
    gridsize > 1 each group's patches overlap-averaged onto its canvas and cut out again at their
    offsets (``PtychoPINN.illuminated_patches``); otherwise ``patches`` themselves."""
    if batch_size < 1:
        raise ValueError(f"diffracted_patches: batch_size must be >= 1; got {batch_size}")
    if not model.spec.reassembles:
        return patches
    # one traced graph for every batch: op by op, eager execution cost more than the arithmetic
    spec = model.spec
    illuminate = tf.function(model.illuminated_patches, input_signature=[
        tf.TensorSpec((None, spec.N, spec.N, spec.channels), tf.complex64),
        tf.TensorSpec((None, 1, 2, spec.channels), tf.float32)])
    chunks = [illuminate(tf.constant(patches[begin:begin + batch_size], tf.complex64),
                         tf.constant(coords_relative[begin:begin + batch_size], tf.float32)).numpy()
              for begin in range(0, len(patches), batch_size)]
    return np.concatenate(chunks).astype(np.complex64)


def stitch_patches(patches: np.ndarray, groups: Groups, crop: int | None = None,
                   phase_offsets: str = "none", com=None) -> stitching.Stitched:
    """``stitching.stitch_patches`` of patches (B, N, N, C) complex, summed in TensorFlow."""
    return stitching.stitch_patches(patches, groups, tf_reassembly.reassemble_by_offsets, crop, phase_offsets, com)

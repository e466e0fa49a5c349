"""One phase job on the TensorFlow model: :func:`run_phase_job`, the API the runner calls.

The steps, files and history names are ``ptycho.pipeline``'s (shared with
``ptycho.torch.workflow``); this module supplies the Keras model, its training, inference
and stitching. Weights go to ``run_dir/model.weights.h5``. :func:`reconstruct` applies a trained
network (``ptycho.network.load_network``) to other data.
"""
from __future__ import annotations

import numpy as np

from ptycho.tf import inference
from ptycho import pipeline
from ptycho.data.contract import PtychoData
from ptycho.network import TrainedNetwork
from ptycho.tf.model import build_model, load_model, save_weights
from ptycho.spec import JobResult
from ptycho.tf.training import train


def _model_canvas(model, patches: np.ndarray, coords_relative: np.ndarray) -> np.ndarray:
    return model.object_canvas(patches, coords_relative).numpy()[0, :, :, 0]


BACKEND = pipeline.JobBackend(
    name="tensorflow", build_model=build_model, load_model=load_model, train=train, save_weights=save_weights,
    predict_patches=inference.predict_patches, diffracted_patches=inference.diffracted_patches,
    stitch_patches=inference.stitch_patches,
    model_canvas=_model_canvas, release=lambda model: model.release_traced_functions(),
)


def run_phase_job(train_data: PtychoData, test_data: PtychoData, **options) -> JobResult:
    """``pipeline.run_job`` on TensorFlow. Options: grouping (GroupingSpec), model_spec
    (ModelSpec), train_spec (TrainSpec), run_dir, bundle_dir, do_stitching=True, phase_offsets='com'
    (``stitching.PHASE_OFFSETS``), stitch_from='canvas'
    ('canvas' or 'patches', ``ptycho.pipeline``), callbacks=()
    (Keras callbacks), nphotons=None, inference_batch_size=None. Raises before writing a bundle on any failure."""
    return pipeline.run_job(BACKEND, train_data, test_data, **options)


def reconstruct(network: TrainedNetwork, data: PtychoData, **options) -> pipeline.Reconstruction:
    """``pipeline.reconstruct_job`` on TensorFlow: ``network`` (its backend must be 'tensorflow') applied
    to ``data``. Options: run_dir, bundle_dir, source='data', pixel_size_m=None, inference_batch_size=None."""
    return pipeline.reconstruct_job(BACKEND, network, data, **options)

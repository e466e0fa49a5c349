"""One phase job on the PyTorch port: the twin of ``ptycho.tf.workflow.run_phase_job``.

The steps, files and history names are ``ptycho.pipeline``'s, shared with the TensorFlow
side, so a runner switches backends by choosing the module. ``run_dir`` receives
``model.pt`` (the torch state dict) instead of ``model.weights.h5``. Callbacks are called
duck-typed (``ptycho.torch.training``). Nothing here imports TensorFlow. :func:`reconstruct` applies a trained network
(``ptycho.network.load_network``) to other data.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from ptycho import pipeline
from ptycho.data.contract import PtychoData
from ptycho.network import TrainedNetwork
from ptycho.spec import JobResult
from ptycho.torch import inference, training
from ptycho.torch.model import build_model, load_model, save_weights


def _model_canvas(model, patches: np.ndarray, coords_relative: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        canvas = model.object_canvas(torch.from_numpy(patches).to(model.device),
                                     torch.from_numpy(coords_relative).to(model.device))
    return canvas.cpu().numpy()[0, :, :, 0]


BACKEND = pipeline.JobBackend(
    name="pytorch", build_model=build_model, load_model=load_model, train=training.train, save_weights=save_weights,
    predict_patches=inference.predict_patches, diffracted_patches=inference.diffracted_patches,
    stitch_patches=inference.stitch_patches,
    model_canvas=_model_canvas,
)


def run_phase_job(train_data: PtychoData, test_data: PtychoData, device: str | None = None,
                  **options) -> JobResult:
    """``pipeline.run_job`` on PyTorch; the options of ``ptycho.tf.workflow.run_phase_job``, and
    ``device`` (``ptycho.torch.device``: 'cpu' when None, 'cuda', 'cuda:<index>', 'auto') where
    the model trains and predicts. Stitching and the bundle run on the CPU either way."""
    backend = BACKEND
    if device is not None:
        backend = dataclasses.replace(BACKEND, build_model=functools.partial(build_model, device=device))
    return pipeline.run_job(backend, train_data, test_data, **options)


def reconstruct(network: TrainedNetwork, data: PtychoData, device: str | None = None,
                **options) -> pipeline.Reconstruction:
    """``pipeline.reconstruct_job`` on PyTorch; the options of ``ptycho.tf.workflow.reconstruct``, and
    ``device`` (as in :func:`run_phase_job`) where the network predicts."""
    backend = BACKEND
    if device is not None:
        backend = dataclasses.replace(BACKEND, load_model=functools.partial(load_model, device=device))
    return pipeline.reconstruct_job(backend, network, data, **options)

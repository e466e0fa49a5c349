"""Weight transfer between the Keras PINN (``ptycho.tf.model``) and its PyTorch twin.

Layers are matched by their path below the model: a Keras variable
``ptycho_pinn/encoder/block0/conv0/kernel`` belongs to layer ``encoder/block0/conv0``, the
torch convolution at module path ``encoder.block0.conv0``. Layout:

    Keras Conv2D kernel  (kh, kw, in, out)  HWIO  <->  torch weight (out, in, kh, kw) OIHW
    bias                 (out,)                   <->  bias (out,)
    log_scale            ()                       <->  log_scale ()
    probe_field          (N, N, 2)                <->  probe_field (N, N, 2)   (ModelSpec.refine_probe only)

Both frameworks compute cross-correlations, so kernels are transposed, never flipped;
Keras 'same' padding of a 3x3 stride-1 conv is torch's symmetric padding 1, and
UpSampling2D / MaxPooling2D(2) are ``interpolate(mode='nearest')`` / ``max_pool2d(2)``,
so no further conversion is needed. Any missing, extra or mis-shaped layer is an error
naming it. Functions take a Keras model duck-typed (``.weights`` with ``.path``), so this
module never imports TensorFlow.
"""
from __future__ import annotations

import numpy as np
import torch

from ptycho.architecture import PROBE_FIELD
from ptycho.torch.model import PtychoPINN

LOG_SCALE = "log_scale"
MODEL_VARIABLES = (LOG_SCALE, PROBE_FIELD)  # the model's own variables, outside any layer


class WeightTransferError(ValueError):
    """The two models do not have the same layers or shapes."""


def keras_variables(keras_model) -> dict[str, dict]:
    """{layer path: {'kernel': var, 'bias': var}} plus {'log_scale': {'value': var}} (and 'probe_field' of a
    refined probe).

    Layer paths drop the model's own name and the variable name: ``encoder/block0/conv0``.
    """
    layers: dict[str, dict] = {}
    for variable in keras_model.weights:
        parts = variable.path.split("/")[1:]
        if len(parts) == 1 and parts[0] in MODEL_VARIABLES:
            layers[parts[0]] = {"value": variable}
        else:
            layers.setdefault("/".join(parts[:-1]), {})[parts[-1]] = variable
    return layers


def torch_convolutions(torch_model: PtychoPINN) -> dict:
    """{layer path: torch Conv2d}, paths written the Keras way (``encoder/block0/conv0``)."""
    return {name.replace(".", "/"): conv for name, conv in torch_model.convolutions().items()}


def tf_to_torch(keras_model, torch_model: PtychoPINN) -> PtychoPINN:
    """Copy every weight of ``keras_model`` into ``torch_model`` (in place); returns it."""
    source = keras_variables(keras_model)
    convs = torch_convolutions(torch_model)
    _check_same_layers(set(source) - set(MODEL_VARIABLES), set(convs))
    _check_same_probe(PROBE_FIELD in source, torch_model.probe_field is not None)
    with torch.no_grad():
        for name, conv in convs.items():
            kernel = _numpy(source[name], "kernel", name)
            _copy(conv.weight, np.transpose(kernel, (3, 2, 0, 1)), f"{name}/kernel")
            _copy(conv.bias, _numpy(source[name], "bias", name), f"{name}/bias")
        _copy(torch_model.log_scale, _numpy(source.get(LOG_SCALE, {}), "value", LOG_SCALE),
              LOG_SCALE)
        if torch_model.probe_field is not None:
            _copy(torch_model.probe_field, _numpy(source[PROBE_FIELD], "value", PROBE_FIELD), PROBE_FIELD)
    return torch_model


def torch_to_tf(torch_model: PtychoPINN, keras_model):
    """Copy every weight of ``torch_model`` into ``keras_model`` (in place); returns it."""
    target = keras_variables(keras_model)
    convs = torch_convolutions(torch_model)
    _check_same_layers(set(target) - set(MODEL_VARIABLES), set(convs))
    _check_same_probe(PROBE_FIELD in target, torch_model.probe_field is not None)
    for name, conv in convs.items():
        kernel = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
        _assign(target[name], "kernel", kernel, name)
        _assign(target[name], "bias", conv.bias.detach().numpy(), name)
    _assign(target.get(LOG_SCALE, {}), "value", torch_model.log_scale.detach().numpy(), LOG_SCALE)
    if torch_model.probe_field is not None:
        _assign(target[PROBE_FIELD], "value", torch_model.probe_field.detach().numpy(), PROBE_FIELD)
    return keras_model


def _check_same_layers(keras_names, torch_names):
    if keras_names != torch_names:
        raise WeightTransferError(
            f"the models differ in layers: only in Keras {sorted(keras_names - torch_names)}, "
            f"only in torch {sorted(torch_names - keras_names)} (same N, gridsize, "
            "n_filters_scale on both sides?)")


def _check_same_probe(keras_refines, torch_refines):
    if keras_refines != torch_refines:
        raise WeightTransferError(f"the probe is refined (a {PROBE_FIELD} weight) in "
                                  f"{'Keras' if keras_refines else 'torch'} only (same ModelSpec.refine_probe on both sides?)")


def _numpy(layer, key, name):
    if key not in layer:
        raise WeightTransferError(f"Keras layer {name!r} has no {key!r} variable")
    return np.asarray(layer[key].numpy())


def _copy(parameter, value, name):
    if tuple(parameter.shape) != value.shape:
        raise WeightTransferError(f"{name}: Keras shape {value.shape} (converted) does not match "
                                  f"torch shape {tuple(parameter.shape)}")
    parameter.copy_(torch.from_numpy(np.array(value, dtype=np.float32, order="C")))


def _assign(layer, key, value, name):
    if key not in layer:
        raise WeightTransferError(f"Keras layer {name!r} has no {key!r} variable")
    variable = layer[key]
    if tuple(variable.shape) != value.shape:
        raise WeightTransferError(f"{name}/{key}: torch shape {value.shape} (converted) does not "
                                  f"match Keras shape {tuple(variable.shape)}")
    variable.assign(value.astype(np.float32))

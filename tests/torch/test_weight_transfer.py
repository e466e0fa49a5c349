"""Keras <-> torch weight transfer: layouts, round trip, clear errors on mismatches."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from ptycho.tf import model as tf_model
from ptycho.spec import ModelSpec
from ptycho.torch import model as pt_model
from ptycho.torch.weights import WeightTransferError, keras_variables, tf_to_torch, torch_to_tf


@pytest.fixture(scope="module")
def spec():
    return ModelSpec(gridsize=2, canvas_size=80, intensity_scale=900.0, seed=1)


@pytest.fixture(scope="module")
def keras_model(spec, probe):
    return tf_model.build_model(spec, probe)


def test_conv_kernels_go_hwio_to_oihw(keras_model, spec, probe):
    torch_model = tf_to_torch(keras_model, pt_model.build_model(spec, probe))
    kernel = keras_model.get_layer("encoder").blocks[1].conv0.kernel.numpy()  # (3, 3, in, out)
    weight = torch_model.encoder.block1.conv0.weight.detach().numpy()  # (out, in, 3, 3)
    assert weight[5, 7, 0, 2] == kernel[0, 2, 7, 5]
    assert float(torch_model.log_scale.detach()) == pytest.approx(np.log(900.0))


def test_round_trip_through_a_second_keras_model(keras_model, spec, probe, tmp_path):
    """torch -> a Keras model of another seed: it then predicts what the first one does."""
    torch_model = tf_to_torch(keras_model, pt_model.build_model(spec, probe))
    with torch.no_grad():
        torch_model.log_scale.add_(0.25)  # a trained scale must travel too
    other = tf_model.build_model(ModelSpec(gridsize=2, canvas_size=80, seed=9), probe)
    torch_to_tf(torch_model, other)
    rng = np.random.default_rng(0)
    inputs = {"diffraction": rng.random((2, 64, 64, 4), np.float32) * 50,
              "coords_relative": rng.normal(scale=3, size=(2, 1, 2, 4)).astype(np.float32)}
    with torch.no_grad():
        expected = torch_model(*(torch.from_numpy(v) for v in inputs.values()))["amplitude"]
    got = other(inputs)["amplitude"].numpy()
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4,
                               atol=1e-5 * float(expected.abs().max()))
    saved = pt_model.save_weights(torch_model, tmp_path)
    reloaded = pt_model.load_model(spec, probe, saved)
    assert torch.equal(reloaded.log_scale, torch_model.log_scale)


def test_mismatched_models_are_named_errors(keras_model, probe):
    wider = ModelSpec(gridsize=2, canvas_size=80, n_filters_scale=1)
    with pytest.raises(WeightTransferError, match=r"encoder/block0/conv0/kernel.*shape"):
        tf_to_torch(keras_model, pt_model.build_model(wider, probe))
    big = ModelSpec(N=128, gridsize=2, canvas_size=160)
    probe_128 = np.ones((128, 128), np.complex64)
    with pytest.raises(WeightTransferError,
                       match=r"only in Keras \[\], only in torch .*'encoder/block3/conv0'"):
        tf_to_torch(keras_model, pt_model.build_model(big, probe_128))
    assert "log_scale" in keras_variables(keras_model)


def test_importing_the_port_does_not_import_tensorflow():
    code = ("import sys, ptycho.torch.workflow, ptycho.torch.weights, ptycho.evaluation.compare; "
            "sys.exit(int('tensorflow' in sys.modules or 'keras' in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

"""Forward parity: the PyTorch PINN with weights transferred from the Keras PINN agrees
with it at every stage, at gridsize 1 and 2 with object_big on.

Tolerances (max |tf - torch| / max |tf|): 1e-5 for stages downstream of the network,
1e-6 for the physics stages given the same object (translation, reassembly, extraction,
illumination and diffraction). Both sides run in float32, TF's precision.
"""
import numpy as np
import pytest
import torch

from ptycho.tf import model as tf_model
from ptycho.tf import ops as tf_ops, training as tf_training
from ptycho.architecture import OUTPUT_CONVS
from ptycho.data.batches import group_data
from ptycho.spec import ModelSpec
from ptycho.stitching import canvas_size_for
from ptycho.torch import model as pt_model
from ptycho.torch import ops, training as pt_training, weights

NETWORK_RTOL = 1e-5
PHYSICS_RTOL = 1e-6


def max_relative_error(reference, other):
    reference, other = np.asarray(reference), np.asarray(other)
    assert reference.shape == other.shape
    return float(np.max(np.abs(reference - other)) / np.max(np.abs(reference)))


class Pair:
    """A Keras PINN, its torch twin with the same weights, and one batch of inputs."""

    def __init__(self, gridsize, data, groups, scale, probe):
        batch = group_data(data, groups, scale).take(slice(0, 4))
        canvas = canvas_size_for(data.N, groups.coords_relative)
        self.spec = ModelSpec(gridsize=gridsize, intensity_scale=scale,
                                       canvas_size=canvas, seed=5)
        self.keras = tf_model.build_model(self.spec, probe)
        _randomise_output_convs(self.keras, seed=gridsize)
        self.torch = weights.tf_to_torch(self.keras, pt_model.build_model(self.spec, probe))
        self.inputs, self.targets = batch.inputs(), batch.targets()
        self.torch_inputs = {k: torch.from_numpy(v) for k, v in self.inputs.items()}

    def stages_tf(self):
        k, x = self.keras, self.inputs
        scale = np.exp(np.asarray(k.log_scale))
        features = k.encoder(x["diffraction"] / scale)
        amplitude, phase = k.amplitude_decoder(features), k.phase_decoder(features)
        obj = np.asarray(amplitude) * np.exp(1j * np.asarray(phase))
        outputs = k(x)
        stages = {"amplitude_head": amplitude, "phase_head": phase, "object": outputs["object"],
                  "extracted": k.illuminated_patches(outputs["object"], x["coords_relative"]),
                  "predicted_amplitude": outputs["amplitude"],
                  "predicted_intensity": outputs["intensity"]}
        if self.spec.gridsize > 1:
            stages["canvas"] = k.object_canvas(outputs["object"], x["coords_relative"])
        stages = {name: np.asarray(value) for name, value in stages.items()}
        np.testing.assert_allclose(stages["object"], obj, rtol=1e-4, atol=2e-5)
        return stages

    def stages_torch(self):
        t, x = self.torch, self.torch_inputs
        with torch.no_grad():
            features = t.encoder((x["diffraction"] / torch.exp(t.log_scale)).permute(0, 3, 1, 2))
            outputs = t(x["diffraction"], x["coords_relative"])
            stages = {
                "amplitude_head": t.amplitude_decoder(features).permute(0, 2, 3, 1),
                "phase_head": t.phase_decoder(features).permute(0, 2, 3, 1),
                "object": outputs["object"],
                "extracted": t.illuminated_patches(outputs["object"], x["coords_relative"]),
                "predicted_amplitude": outputs["amplitude"],
                "predicted_intensity": outputs["intensity"],
            }
            if self.spec.gridsize > 1:
                stages["canvas"] = t.object_canvas(outputs["object"], x["coords_relative"])
        return {name: value.numpy() for name, value in stages.items()}


def _randomise_output_convs(keras_model, seed):
    """The output convolutions start at zero (a constant object for any input), which would make
    the heads' parity trivial: give them Glorot-uniform kernels before the transfer to torch."""
    generator = np.random.default_rng(seed)
    for variable in keras_model.weights:
        if variable.path.endswith(tuple(f"{conv}/kernel" for conv in OUTPUT_CONVS)):
            *_, fan_in, fan_out = variable.shape
            limit = np.sqrt(6.0 / (9 * (fan_in + fan_out)))
            variable.assign(generator.uniform(-limit, limit, variable.shape).astype(np.float32))


@pytest.fixture(scope="module", params=[1, 2], ids=["gridsize1", "gridsize2"])
def pair(request, small_dataset, groups_by_gridsize, intensity_scale, probe):
    gridsize = request.param
    return Pair(gridsize, small_dataset[0], groups_by_gridsize[gridsize], intensity_scale, probe)


def test_every_network_stage_agrees(pair):
    tf_stages, torch_stages = pair.stages_tf(), pair.stages_torch()
    expected = {"amplitude_head", "phase_head", "object", "extracted", "predicted_amplitude",
                "predicted_intensity"} | ({"canvas"} if pair.spec.gridsize > 1 else set())
    assert set(tf_stages) == set(torch_stages) == expected
    errors = {name: max_relative_error(tf_stages[name], torch_stages[name]) for name in tf_stages}
    assert all(error <= NETWORK_RTOL for error in errors.values()), errors


def test_loss_agrees(pair):
    tf_loss = tf_training.PinnLoss()(pair.targets, pair.keras(pair.inputs))["loss"]
    targets = {k: torch.from_numpy(v) for k, v in pair.targets.items()}
    with torch.no_grad():
        outputs = pair.torch(**pair.torch_inputs)
        torch_loss = pt_training.PinnLoss()(targets, outputs)["loss"]
    assert max_relative_error(float(tf_loss), float(torch_loss)) <= NETWORK_RTOL


def test_physics_stages_agree_given_the_same_object(pair):
    """TF's object patches through the torch physics: canvas, extraction, diffraction."""
    coords = pair.inputs["coords_relative"]
    obj_tf = pair.keras(pair.inputs)["object"]
    extracted_tf = pair.keras.illuminated_patches(obj_tf, coords)
    obj_pt, coords_pt = torch.from_numpy(np.array(obj_tf)), torch.from_numpy(coords)
    if pair.spec.gridsize > 1:
        canvas_tf = pair.keras.object_canvas(obj_tf, coords)
        canvas_pt = pair.torch.object_canvas(obj_pt, coords_pt)
        assert max_relative_error(canvas_tf, canvas_pt) <= PHYSICS_RTOL
    extracted_pt = pair.torch.illuminated_patches(obj_pt, coords_pt)
    assert max_relative_error(extracted_tf, extracted_pt) <= PHYSICS_RTOL
    psi_tf = extracted_tf * pair.keras.probe
    psi_pt = extracted_pt * pair.torch.probe
    assert max_relative_error(psi_tf, psi_pt) <= PHYSICS_RTOL
    amplitude_tf = tf_ops.pad_and_diffract(psi_tf)
    assert max_relative_error(amplitude_tf, ops.pad_and_diffract(psi_pt)) <= PHYSICS_RTOL


def test_both_backends_start_from_the_same_initial_weights(pair, probe):
    """No transfer: each backend builds its own model from the spec and gets the same numbers."""
    own_torch, own_keras = pt_model.build_model(pair.spec, probe), tf_model.build_model(pair.spec, probe)
    keras_layers = weights.keras_variables(own_keras)
    convs = weights.torch_convolutions(own_torch)
    assert set(convs) == set(keras_layers) - {weights.LOG_SCALE}
    for name, conv in convs.items():
        kernel = conv.weight.detach().numpy().transpose(2, 3, 1, 0)
        np.testing.assert_array_equal(kernel, keras_layers[name]["kernel"].numpy(), err_msg=name)
        np.testing.assert_array_equal(conv.bias.detach().numpy(), keras_layers[name]["bias"].numpy())
    assert own_torch.log_scale.item() == float(own_keras.log_scale.numpy())
    assert sum(p.numel() for p in own_torch.parameters()) == own_keras.count_params()


def test_diffracted_patches_agree_and_batching_changes_nothing(pair):
    """The inference helpers behind stitch_from='canvas': the same patches on both backends, in
    batches of 3 as in one call; at gridsize 1 the patches themselves."""
    from ptycho.tf import inference as tf_inference
    from ptycho.torch import inference as pt_inference

    obj = np.asarray(pair.keras(pair.inputs)["object"])
    coords = pair.inputs["coords_relative"]
    tf_patches = tf_inference.diffracted_patches(pair.keras, obj, coords, batch_size=3)
    pt_patches = pt_inference.diffracted_patches(pair.torch, obj, coords, batch_size=3)
    assert tf_patches.dtype == pt_patches.dtype == np.complex64 and tf_patches.shape == obj.shape
    assert max_relative_error(tf_patches, pt_patches) <= PHYSICS_RTOL
    np.testing.assert_allclose(tf_patches, np.asarray(pair.keras.illuminated_patches(obj, coords)), rtol=0, atol=1e-6)
    if pair.spec.gridsize == 1:
        assert pt_patches is obj and tf_patches is obj
    for helper, model in ((tf_inference.diffracted_patches, pair.keras), (pt_inference.diffracted_patches, pair.torch)):
        with pytest.raises(ValueError, match="diffracted_patches: batch_size must be >= 1; got 0"):
            helper(model, obj, coords, batch_size=0)


def test_predicted_patches_agree_from_the_diffraction_alone(pair):
    """predict_patches on both backends: the network's object from {'diffraction'} alone (the forward
    model is not run to read out the object), the same in batches of 3 as the model's own output."""
    from ptycho.tf import inference as tf_inference
    from ptycho.torch import inference as pt_inference

    expected = np.asarray(pair.keras(pair.inputs)["object"])
    diffraction_only = {"diffraction": pair.inputs["diffraction"]}
    tf_patches = tf_inference.predict_patches(pair.keras, diffraction_only, batch_size=3)
    pt_patches = pt_inference.predict_patches(pair.torch, diffraction_only, batch_size=3)
    assert tf_patches.dtype == pt_patches.dtype == np.complex64 and tf_patches.shape == expected.shape
    assert max_relative_error(expected, tf_patches) <= NETWORK_RTOL
    assert max_relative_error(expected, pt_patches) <= NETWORK_RTOL

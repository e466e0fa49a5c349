"""The network: architecture, parameter counts, the learnable intensity scale, weights I/O."""
import math

import numpy as np
import pytest
import tensorflow as tf

from ptycho.tf.model import build_model, load_model, save_weights
from ptycho.spec import ModelSpec
from ptycho.stitching import canvas_size_for, check_offsets_fit
from ptycho.data.phantoms import make_probe

PROBE = make_probe(64)
REFERENCE_PARAMS = {1: 2.33e6, 2: 2.34e6}  # REFERENCE.md, N = 64, n_filters_scale 2


@pytest.fixture(scope="module")
def full_models():
    """The reference-size models (n_filters_scale 2) at gridsize 1 and 2, built once."""
    return {g: build_model(ModelSpec(gridsize=g, canvas_size=96), PROBE) for g in (1, 2)}


@pytest.mark.parametrize("gridsize", [1, 2])
def test_parameter_count_matches_the_reference(full_models, gridsize):
    model = full_models[gridsize]
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == pytest.approx(REFERENCE_PARAMS[gridsize], rel=0.02)


def test_parameter_count_exact_at_gridsize_2(full_models):
    # encoder 1,145,984 + two decoders of 597,112 + log_scale
    assert full_models[2].count_params() == 1_145_984 + 2 * 597_112 + 1


def test_two_gridsizes_coexist_in_one_process(full_models):
    for gridsize, model in full_models.items():
        C = gridsize**2
        out = model({"diffraction": tf.ones((2, 64, 64, C)) * 100.0, "coords_relative": tf.zeros((2, 1, 2, C))})
        assert out["object"].shape == (2, 64, 64, C) and out["object"].dtype == tf.complex64
        assert out["amplitude"].shape == (2, 64, 64, C) and out["amplitude"].dtype == tf.float32
        assert out["intensity"].shape == (2, 64, 64, C)
        np.testing.assert_allclose(out["intensity"].numpy(), out["amplitude"].numpy() ** 2, rtol=1e-6)


def test_layers_are_named_in_forward_order(full_models):
    paths = [w.path for w in full_models[2].weights]
    assert paths[0] == "ptycho_pinn/log_scale"
    assert paths[1:3] == ["ptycho_pinn/encoder/block0/conv0/kernel", "ptycho_pinn/encoder/block0/conv0/bias"]
    head = "ptycho_pinn/phase_decoder/head/"
    layers_in_order = ["centre_conv", "outer_block/conv0", "outer_block/conv1", "outer_conv"]
    expected_tail = [f"{head}{layer}/{kind}" for layer in layers_in_order for kind in ("kernel", "bias")]
    assert paths[-8:] == expected_tail
    assert len(set(paths)) == len(paths)


def test_log_scale_is_a_tracked_trainable_weight(full_models):
    model = full_models[2]
    assert any(w is model.log_scale for w in model.trainable_weights)
    assert model.intensity_scale == pytest.approx(988.2, rel=1e-6)
    frozen = build_model(ModelSpec(gridsize=1, n_filters_scale=1, intensity_scale_trainable=False), PROBE)
    assert not any(w is frozen.log_scale for w in frozen.trainable_weights)
    assert any(w is frozen.log_scale for w in frozen.non_trainable_weights)


def test_larger_n_builds_and_runs():
    model = build_model(ModelSpec(N=128, gridsize=1, n_filters_scale=1), make_probe(128))
    out = model({"diffraction": tf.ones((1, 128, 128, 1)) * 50.0, "coords_relative": tf.zeros((1, 1, 2, 1))})
    assert out["object"].shape == (1, 128, 128, 1)
    assert np.all(np.isfinite(out["intensity"].numpy()))


def test_decoder_output_is_the_padded_centre_plus_the_masked_ring(full_models):
    """Inside the central N/2 square the amplitude is the sigmoid branch, so it lies in (0, 1)."""
    model = full_models[1]
    features = model.encoder(tf.random.stateless_uniform((1, 64, 64, 1), seed=(1, 2)))
    amplitude = model.amplitude_decoder(features).numpy()[0, ..., 0]
    phase = model.phase_decoder(features).numpy()[0, ..., 0]
    assert np.all((amplitude[16:48, 16:48] > 0) & (amplitude[16:48, 16:48] < 1))
    assert np.all(np.abs(phase[16:48, 16:48]) < math.pi)


@pytest.mark.parametrize("field, value, match", [
    ("N", 96, "ModelSpec.N"), ("gridsize", 0, "ModelSpec.gridsize"),
    ("intensity_scale", -1.0, "ModelSpec.intensity_scale"), ("mae_weight", -0.5, "ModelSpec.mae_weight"),
    ("diffraction_mae_weight", float("nan"), "ModelSpec.diffraction_mae_weight"),
    ("canvas_size", 32, "ModelSpec.canvas_size"), ("use_xla_translate", "yes", "ModelSpec.use_xla_translate"),
    ("learning_rate", float("nan"), "ModelSpec.learning_rate"),
])
def test_model_spec_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        ModelSpec(**{field: value})


def test_reassembling_model_needs_a_canvas_size():
    with pytest.raises(ValueError, match="canvas_size is required"):
        build_model(ModelSpec(gridsize=2, canvas_size=None), PROBE)


def test_canvas_size_comes_from_the_actual_offsets():
    coords = np.zeros((3, 1, 2, 4))
    coords[1, 0, 0, 2] = -13.2  # largest |offset| 13.2 px -> 64 + 2 * 14 = 92
    assert canvas_size_for(64, coords) == 92
    check_offsets_fit(ModelSpec(canvas_size=92), coords)
    with pytest.raises(ValueError, match="too small for these groups"):
        check_offsets_fit(ModelSpec(canvas_size=90), coords)


def test_saved_weights_reload_and_predict_identically(smoke_runs, tmp_path):
    run = smoke_runs(2, True)
    path = save_weights(run.model, tmp_path)
    assert path.name == "model.weights.h5" and path.is_file()
    reloaded = load_model(run.spec, run.probe, path)
    inputs = run.data.inputs()
    # Eager calls: the same kernels for both (a traced predict may fuse ops differently per shape).
    before, after = run.model(inputs), reloaded(inputs)
    for key in ("object", "intensity"):
        np.testing.assert_array_equal(before[key].numpy(), after[key].numpy())
    assert reloaded.intensity_scale == run.model.intensity_scale


def test_loading_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_model(ModelSpec(gridsize=1), PROBE, tmp_path / "absent.weights.h5")

"""ptycho.architecture: the numbers both backends build from (no TensorFlow, no PyTorch)."""
import math
import sys

import numpy as np
import pytest

from ptycho.architecture import (
    amplitude_head_biases, border_mask, conv_layers, filter_ladder, initial_amplitude_from_data, initial_weights,
    prepare_probe,
)


@pytest.mark.parametrize("N, encoder, decoder, outer", [
    (64, (64, 128, 256), (128, 64), 64),
    (128, (32, 64, 128, 256), (256, 128, 64), 32),
    (256, (16, 32, 64, 128, 256), (512, 256, 128, 64), 16),
])
def test_filter_ladder_keeps_an_8px_bottleneck_and_ends_at_n_over_2(N, encoder, decoder, outer):
    ladder = filter_ladder(N, 2)
    assert ladder == {"encoder": encoder, "decoder": decoder, "outer": outer}
    assert N // 2 ** len(ladder["encoder"]) == 8
    assert 8 * 2 ** len(ladder["decoder"]) == N // 2


def test_filter_ladder_rejects_unsupported_n():
    with pytest.raises(ValueError, match="N must be one of"):
        filter_ladder(96, 2)


def test_border_mask_zero_inside_the_central_square():
    mask = border_mask(64)
    assert mask[16:48, 16:48].sum() == 0
    assert mask.sum() == 64 * 64 - 32 * 32


@pytest.mark.parametrize("probe, match", [
    (np.ones((64, 64), np.complex64)[:32], "probe must be"),
    (np.ones((64, 64), np.float32), "must be complex"),
    (np.full((64, 64), np.nan, np.complex64), "NaN or Inf"),
])
def test_bad_probe_is_a_clear_error(probe, match):
    with pytest.raises(ValueError, match=match):
        prepare_probe(probe, 64, probe_mask=False)


def test_probe_mask_is_a_disk_of_radius_n_over_4():
    masked = prepare_probe(np.ones((64, 64), np.complex64), 64, probe_mask=True)
    assert masked.dtype == np.complex64
    assert masked[32, 32] == 1 and masked[32, 32 + 17] == 0 and masked[0, 0] == 0
    assert np.count_nonzero(masked) == pytest.approx(math.pi * 16**2, rel=0.05)


def test_conv_layers_chain_their_widths_in_forward_order():
    layers = conv_layers(64, 2, 1)
    assert list(layers)[:2] == ["encoder/block0/conv0", "encoder/block0/conv1"]
    assert layers["encoder/block0/conv0"] == (4, 32)  # C = 4 input channels
    assert layers["phase_decoder/head/centre_conv"] == (32 - 4, 4)  # 4 channels feed the outer ring
    assert layers["phase_decoder/head/outer_block/conv0"] == (4, 32)
    assert layers["phase_decoder/head/outer_conv"] == (32, 4)
    assert list(layers)[-1] == "phase_decoder/head/outer_conv"


def test_initial_weights_are_he_normal_for_relu_layers_zero_for_output_convs_and_seeded():
    weights = initial_weights(64, 2, 1, seed=4, initial_amplitude=0.7)
    assert set(weights) == set(conv_layers(64, 2, 1))
    kernel = weights["encoder/block2/conv1"]["kernel"]
    assert kernel.shape == (3, 3, 128, 128) and kernel.dtype == np.float32
    assert kernel.std() == pytest.approx(math.sqrt(2 / (9 * 128)), rel=0.02) and abs(kernel.mean()) < 1e-3
    for decoder in ("amplitude_decoder", "phase_decoder"):  # the object starts at a0 exp(i 0) for any input
        for head in ("centre_conv", "outer_conv"):
            assert not weights[f"{decoder}/head/{head}"]["kernel"].any()
    with_bias = {path for path, w in weights.items() if w["bias"].any()}
    assert with_bias == {"amplitude_decoder/head/centre_conv", "amplitude_decoder/head/outer_conv"}
    again, other = initial_weights(64, 2, 1, seed=4), initial_weights(64, 2, 1, seed=5)
    np.testing.assert_array_equal(again["encoder/block2/conv1"]["kernel"], kernel)
    assert not np.array_equal(other["encoder/block2/conv1"]["kernel"], kernel)


@pytest.mark.parametrize("a0", [0.05, 0.3, 0.7, 0.95])
def test_amplitude_head_biases_start_the_object_at_a0_in_centre_and_ring(a0):
    biases = amplitude_head_biases(a0)
    centre, ring = biases["amplitude_decoder/head/centre_conv"], biases["amplitude_decoder/head/outer_conv"]
    assert 1 / (1 + math.exp(-centre)) == pytest.approx(a0, rel=1e-9)
    assert ring / (1 + math.exp(-ring)) == pytest.approx(a0, rel=1e-9)  # swish
    weights = initial_weights(64, 1, 1, seed=0, initial_amplitude=a0)
    assert np.all(weights["amplitude_decoder/head/centre_conv"]["bias"] == np.float32(centre))


@pytest.mark.parametrize("bad", [0.0, 0.01, 0.99, 1.5, float("nan"), "0.5"])
def test_an_impossible_start_amplitude_is_named(bad):
    with pytest.raises(ValueError, match="initial_amplitude"):
        amplitude_head_biases(bad)


def test_the_start_amplitude_from_data_is_the_parseval_constant():
    rng = np.random.default_rng(0)
    probe = (rng.random((64, 64)) + 1j * rng.random((64, 64))).astype(np.complex64)
    amplitudes = np.abs(np.fft.fft2(0.6 * probe)) / 64  # a constant object of amplitude 0.6
    assert initial_amplitude_from_data(amplitudes[None], probe) == pytest.approx(0.6, rel=1e-6)
    assert initial_amplitude_from_data(3 * amplitudes[None], probe) == 0.95  # clipped: exp(log_scale) carries it
    with pytest.raises(ValueError, match="energy"):
        initial_amplitude_from_data(np.zeros((2, 64, 64)), probe)


def test_the_architecture_module_imports_no_framework():
    import subprocess

    code = "import sys, ptycho.architecture; print(sorted({'tensorflow', 'torch', 'keras'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

"""Reconstruction-quality metrics: alignment, errors, SSIM, FRC, masks, bad input."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from ptycho.evaluation.quality import (
    align_phase,
    fourier_ring_correlation,
    frc_threshold_frequency,
    reconstruction_quality,
    ssim,
)

M = 48


def _object(seed=0, size=M):
    rng = np.random.default_rng(seed)
    amp = 1.0 + gaussian_filter(rng.random((size, size)), 2)
    phase = 3.0 * gaussian_filter(rng.normal(size=(size, size)), 3)
    return amp * np.exp(1j * phase)


def test_identical_images_are_perfect():
    truth = _object()
    q = reconstruction_quality(truth, truth)
    assert q["amp_mae"] == pytest.approx(0, abs=1e-12)
    assert q["amp_rmse"] == pytest.approx(0, abs=1e-12)
    assert q["phase_mae"] == pytest.approx(0, abs=1e-12)
    assert q["amp_ssim"] == pytest.approx(1.0)
    assert q["phase_ssim"] == pytest.approx(1.0)
    assert q["frc50"] == 0.5
    _, frc = fourier_ring_correlation(truth, truth)
    np.testing.assert_allclose(frc, 1.0)
    assert all(isinstance(v, float) for v in q.values())


def test_global_phase_offset_and_amplitude_scale_are_removed():
    truth = _object()
    recon = 0.37 * truth * np.exp(1j * 2.5)
    np.testing.assert_allclose(align_phase(recon, truth), 0.37 * truth, atol=1e-12)
    q = reconstruction_quality(recon, truth)
    assert q["phase_offset"] == pytest.approx(2.5)
    assert q["amp_scale"] == pytest.approx(1 / 0.37)
    assert q["amp_mae"] == pytest.approx(0, abs=1e-12)
    assert q["phase_mae"] == pytest.approx(0, abs=1e-12)
    assert q["phase_ssim"] == pytest.approx(1.0)


def test_phase_error_is_wrapped():
    truth = np.exp(1j * np.full((M, M), np.pi - 0.05))
    recon = truth.copy()
    recon[: M // 2] *= np.exp(1j * 0.1)  # crosses +pi: a wrapped difference of 0.1 rad
    q = reconstruction_quality(recon, truth)
    assert q["phase_mae"] < 0.1


def test_ssim_decreases_with_noise():
    rng = np.random.default_rng(1)
    image = np.abs(_object())
    scores = [ssim(image + s * rng.normal(size=image.shape), image) for s in (0.0, 0.02, 0.1, 0.5)]
    assert scores[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(scores, scores[1:]))


def test_frc_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(64, 64)), rng.normal(size=(64, 64))
    freqs, frc = fourier_ring_correlation(a, b)
    assert freqs[0] == 0 and freqs[-1] == pytest.approx(0.5)
    assert frc.shape == freqs.shape == (33,)
    assert abs(np.mean(frc[1:])) < 0.05
    assert np.all(np.abs(frc[4:]) < 0.5)
    assert frc_threshold_frequency(a, b) < 0.1


def test_frc50_falls_as_noise_hides_fine_detail():
    truth = _object()
    rng = np.random.default_rng(3)
    noise = rng.normal(size=(M, M)) + 1j * rng.normal(size=(M, M))
    frc50 = [reconstruction_quality(truth + s * noise, truth)["frc50"] for s in (0.01, 0.1, 1.0)]
    assert 0.5 >= frc50[0] > frc50[1] > frc50[2]
    assert frc50[2] < 0.2


def test_mask_restricts_every_metric_to_the_covered_region():
    truth = _object()
    recon = truth.copy()
    recon[:, M // 2:] = _object(seed=9)[:, M // 2:]  # garbage outside the covered half
    mask = np.zeros((M, M), bool)
    mask[:, : M // 2] = True
    q = reconstruction_quality(recon, truth, mask=mask)
    assert q["amp_mae"] == pytest.approx(0, abs=1e-12)
    assert q["phase_mae"] == pytest.approx(0, abs=1e-12)
    assert q["amp_ssim"] == pytest.approx(1.0) and q["phase_ssim"] == pytest.approx(1.0)
    assert q["frc50"] == 0.5
    assert reconstruction_quality(recon, truth)["amp_mae"] > 0.01


def test_amplitude_psnr_on_a_known_pair():
    """Truth amplitude 1 | 2 on a checkerboard, the reconstruction a constant 1.5: the least-squares scale
    is exactly 1 (the error is orthogonal to the reconstruction), every pixel is 0.5 off, so the PSNR is
    20 log10(2 / 0.5) = 12.04 dB; the global fit makes it scale free; pixels off the mask do not count."""
    checker = (np.indices((M, M)).sum(axis=0) % 2).astype(float)
    phase = np.exp(1j * 0.7)
    truth = (1.0 + checker) * phase
    recon = np.full((M, M), 1.5) * np.exp(1j * 2.0)
    q = reconstruction_quality(recon, truth)
    assert q["amp_scale"] == pytest.approx(1.0) and q["amp_rmse"] == pytest.approx(0.5)
    assert q["amp_psnr"] == pytest.approx(20 * np.log10(4.0)) == pytest.approx(12.0412, abs=1e-4)
    assert reconstruction_quality(7 * recon, truth)["amp_psnr"] == pytest.approx(q["amp_psnr"])
    mask = np.zeros((M, M), bool)
    mask[:, : M // 2] = True
    brighter = truth.copy()
    brighter[:, M // 2:] = 10.0  # a peak off the mask: not the PSNR's peak
    assert reconstruction_quality(recon, brighter, mask=mask)["amp_psnr"] == pytest.approx(q["amp_psnr"])
    assert reconstruction_quality(truth, truth)["amp_psnr"] > 200  # exact up to rounding: hundreds of dB or inf


@pytest.mark.parametrize(
    "recon, truth, mask, message",
    [
        (np.ones((4, 4)), np.ones((4, 5)), None, "shapes differ"),
        (np.ones((4, 4, 1)), np.ones((4, 4)), None, "2-D"),
        (np.full((4, 4), np.nan), np.ones((4, 4)), None, "NaN"),
        (np.ones((4, 4)), np.ones((4, 4)), np.ones((3, 3), bool), "mask shape"),
        (np.ones((4, 4)), np.ones((4, 4)), np.zeros((4, 4), bool), "no pixels"),
        (np.ones((4, 4)), np.ones((4, 4)), np.ones((4, 4)), "bool"),
    ],
)
def test_bad_input_raises_clear_value_error(recon, truth, mask, message):
    with pytest.raises(ValueError, match=message):
        reconstruction_quality(recon, truth, mask=mask)


def test_ssim_rejects_complex_images():
    with pytest.raises(ValueError, match="real"):
        ssim(np.ones((4, 4), complex), np.ones((4, 4)))

"""Properties of the numpy reference forward model (docs/design.md §5)."""
import numpy as np
import pytest

from ptycho import physics


@pytest.fixture
def wave():
    rng = np.random.default_rng(1)
    return rng.normal(size=(3, 2, 16, 16)) + 1j * rng.normal(size=(3, 2, 16, 16))


def test_parseval_energy_is_conserved(wave):
    amplitude = physics.far_field_amplitude(wave)
    np.testing.assert_allclose((amplitude**2).sum(axis=(-2, -1)), (np.abs(wave) ** 2).sum(axis=(-2, -1)), rtol=1e-12)


def test_constant_wave_focuses_at_centre_pixel():
    N = 8
    amplitude = physics.far_field_amplitude(np.ones((N, N), np.complex64))
    assert amplitude[N // 2, N // 2] == pytest.approx(N)  # sqrt(N**4 / N**2)
    assert np.count_nonzero(amplitude > 1e-9) == 1


def test_tilted_wave_lands_off_centre():
    N = 16
    cols = np.arange(N)[None, :]
    wave = np.exp(2j * np.pi * 3 * cols / N) * np.ones((N, 1))
    peak = np.unravel_index(np.argmax(physics.far_field_amplitude(wave)), (N, N))
    assert peak == (N // 2, N // 2 + 3)


def test_amplitude_is_invariant_to_shift_and_global_phase(wave):
    shifted = np.roll(wave, (3, -5), axis=(-2, -1)) * np.exp(0.7j)
    np.testing.assert_allclose(physics.far_field_amplitude(shifted), physics.far_field_amplitude(wave), atol=1e-10)


def test_forward_amplitude_composes_illuminate_and_diffract(wave):
    probe = wave[0, 0]
    patches = wave[1]
    expected = np.sqrt(np.fft.fftshift(np.abs(np.fft.fft2(probe * patches)) ** 2, axes=(-2, -1)) / 256)
    np.testing.assert_allclose(physics.forward_amplitude(probe, patches), expected, rtol=1e-12)


def test_illuminate_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same N"):
        physics.illuminate(np.ones((8, 8)), np.ones((2, 16, 16)))


def test_intensity_scale_gives_nphotons_per_frame(wave):
    s = physics.intensity_scale(wave, 1e6)
    assert np.mean(np.sum(np.abs(s * wave) ** 2, axis=(-2, -1))) == pytest.approx(1e6)
    amplitude = physics.far_field_amplitude(wave)
    assert physics.intensity_scale(amplitude, 1e6) == pytest.approx(s, rel=1e-12)


def test_closed_form_scale_matches_reference_default():
    assert physics.closed_form_intensity_scale(1e9, 64) == pytest.approx(988.2117688, rel=1e-9)
    # the closed form is exact for a frame whose energy is N**2 / 4
    frames = np.full((2, 64, 64), 0.5)
    assert physics.intensity_scale(frames, 1e9) == pytest.approx(physics.closed_form_intensity_scale(1e9, 64))


@pytest.mark.parametrize("nphotons", [0.0, -1.0, np.inf, np.nan], ids=["zero", "negative", "inf", "nan"])
def test_scale_rejects_bad_nphotons(nphotons):
    with pytest.raises(ValueError, match="nphotons"):
        physics.intensity_scale(np.ones((1, 4, 4)), nphotons)


def test_scale_rejects_zero_energy():
    with pytest.raises(ValueError, match="energy"):
        physics.intensity_scale(np.zeros((2, 4, 4)), 1e9)


def test_poisson_observe_rejects_negative_amplitude():
    with pytest.raises(ValueError, match="non-negative"):
        physics.poisson_observe(np.array([1.0, -0.1]), np.random.default_rng(0))


def test_poisson_observe_is_seeded():
    amplitude = np.full((4, 4), 5.0)
    first = physics.poisson_observe(amplitude, np.random.default_rng(3))
    assert np.array_equal(first, physics.poisson_observe(amplitude, np.random.default_rng(3)))

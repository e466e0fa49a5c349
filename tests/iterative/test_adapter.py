"""ptycho.iterative: cdtools on our data conventions, and a reconstruction that beats the floor.

cdtools is the extra ``iterative``, installed by the README's and CI's install line. Nothing
here skips without it: every test then fails with IterativeUnavailable, which names the install
command.
"""
import sys
from dataclasses import replace

import numpy as np
import pytest

from ptycho import iterative, physics, stitching
from ptycho.data.simulate import SimulationSpec, extract_patches, simulate_dataset


@pytest.fixture(scope="module")
def tiny():
    """The train split of a 64-position simulation (48 positions, N = 64)."""
    train, _ = simulate_dataset(SimulationSpec(n_images=64, seed=0))
    return train


def _truth_frame(data):
    """objectGuess cut to the adapter's object frame: (origin_rc, object window)."""
    origin, shape = iterative.object_frame(data.xcoords, data.ycoords, data.N)
    window = data.object_guess[origin[0]:origin[0] + shape[0], origin[1]:origin[1] + shape[1]]
    assert window.shape == shape  # the frame lies inside the simulated object
    return origin, window


def _relative_residual(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_the_library_forward_model_is_ours_exactly_at_whole_pixel_positions(tiny):
    """Intensity vs amplitude, FFT normalisation, fftshift and the position origin, at once: where
    no interpolation is involved, cdtools' forward model gives ptycho.physics' amplitudes."""
    origin, truth = _truth_frame(tiny)
    x, y = np.round(tiny.xcoords), np.round(tiny.ycoords)
    ours = physics.forward_amplitude(tiny.probe, extract_patches(tiny.object_guess, x, y, tiny.N)) ** 2

    def theirs(dx):
        return iterative.simulate_amplitudes(tiny.probe, truth, origin, x + dx, y).astype(np.float64) ** 2

    # Intensities, since cdtools adds 1e-7 to every simulated one (a floor for the amplitude's
    # square root); what remains is float32 rounding.
    assert np.max(np.abs(theirs(0) - ours)) < 2e-6 * np.max(ours)
    assert np.max(np.abs(theirs(1) - ours)) > 1e-2 * np.max(ours)


def test_the_library_forward_model_reproduces_our_data(tiny):
    """The simulated data themselves (sub-pixel positions, photon noise): same energy, a small
    residual, and half a pixel off in any direction is several times worse."""
    origin, truth = _truth_frame(tiny)
    simulated = iterative.simulate_amplitudes(tiny.probe, truth, origin, tiny.xcoords, tiny.ycoords)
    assert simulated.shape == tiny.diffraction.shape
    energy = np.sum(simulated.astype(np.float64) ** 2) / np.sum(tiny.diffraction.astype(np.float64) ** 2)
    assert energy == pytest.approx(1.0, abs=0.01)
    # What remains is the sub-pixel interpolation (our bilinear object read vs cdtools' Fourier
    # shift of the probe) and the photon noise.
    residual = _relative_residual(simulated, tiny.diffraction)
    assert residual < 0.02
    for dx, dy in ((0.5, 0.0), (0.0, 0.5), (-0.5, 0.0), (0.0, -0.5)):
        shifted = iterative.simulate_amplitudes(tiny.probe, truth, origin, tiny.xcoords + dx, tiny.ycoords + dy)
        assert _relative_residual(shifted, tiny.diffraction) > 3 * residual, (dx, dy)


@pytest.mark.slow
def test_reconstruction_beats_the_constant_floor_by_far(tiny):
    result = iterative.reconstruct(tiny, iterative.IterativeSpec(epochs=3))
    assert len(result.loss_history) == 3 and result.loss_history[-1] < result.loss_history[0]
    canvas = iterative.stitched(result, tiny)
    quality = stitching.stitched_quality(canvas, tiny.object_guess)
    constant = np.where(canvas.covered, iterative.constant_amplitude(tiny.diffraction, tiny.probe), 0)
    floor = stitching.stitched_quality(replace(canvas, canvas=constant.astype(np.complex64)), tiny.object_guess)
    assert quality["amp_mae"] < 0.25 * floor["amp_mae"]
    assert quality["phase_mae"] < 0.25 * floor["phase_mae"]


def test_adam_engine_runs_and_is_repeatable(tiny):
    spec = iterative.IterativeSpec(engine="adam", epochs=2, batch_size=8, seed=1)
    first, second = (iterative.reconstruct(tiny, spec) for _ in range(2))
    assert np.array_equal(first.obj, second.obj)
    assert first.loss_history[-1] < first.loss_history[0]


def test_stitched_puts_the_object_on_the_c1_canvas_convention(tiny):
    """The canvas, its centre, offsets and covered mask are those of a gridsize-1 stitch of the
    same positions; the true object placed there scores perfectly."""
    origin, truth = _truth_frame(tiny)
    result = iterative.IterativeResult(truth.astype(np.complex64), origin, (0.0,), 0.0, "test")
    canvas = iterative.stitched(result, tiny)
    offsets, centre = stitching.global_offsets(stitching.inference_groups(tiny, 1, 7, 0))
    np.testing.assert_array_equal(canvas.centre_xy, centre)
    np.testing.assert_allclose(canvas.offsets_xy[np.lexsort(canvas.offsets_xy.T)], offsets[np.lexsort(offsets.T)])
    assert canvas.crop == tiny.N // 2
    window, inside = stitching.ground_truth_window(tiny.object_guess, canvas)
    np.testing.assert_array_equal(canvas.canvas[canvas.covered & inside], window[canvas.covered & inside])
    quality = stitching.stitched_quality(canvas, tiny.object_guess)
    assert quality["amp_mae"] < 1e-6 and quality["phase_mae"] < 1e-6


def test_object_patches_read_the_reconstruction_at_the_positions(tiny):
    origin, truth = _truth_frame(tiny)
    result = iterative.IterativeResult(truth.astype(np.complex64), origin, (0.0,), 0.0, "test")
    np.testing.assert_allclose(iterative.object_patches(result, tiny), tiny.Y, atol=1e-5)


@pytest.mark.parametrize("field, value", [("engine", "epie"), ("epochs", 0), ("learning_rate", -1.0),
                                          ("batch_size", 0), ("seed", -1)])
def test_spec_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"IterativeSpec.{field}"):
        iterative.IterativeSpec(**{field: value})


def test_a_missing_library_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cdtools", None)  # import cdtools raises ImportError
    with pytest.raises(iterative.IterativeUnavailable, match=r'pip install -e "\.\[iterative\]"'):
        iterative.load_cdtools()

"""ptycho.iterative.start_from_canvas: another reconstruction's stitched canvas as the solver's initial object.

A known object (the simulation's ``objectGuess``) stitched on C1's canvas convention, its global factors
changed as a network's may be, must land on the solver's grid pixel for pixel: equal to the truth where the
canvas covers it once the phase reference and the amplitude level are set, the flat start elsewhere.
"""
import numpy as np
import pytest

from ptycho import iterative
from ptycho.data.simulate import SimulationSpec, simulate_dataset


@pytest.fixture(scope="module")
def tiny():
    """The train split of a 64-position simulation (48 positions, N = 64)."""
    train, _ = simulate_dataset(SimulationSpec(n_images=64, seed=0))
    return train


def _truth_on_grid(data):
    origin, shape = iterative.object_frame(data.xcoords, data.ycoords, data.N)
    window = data.object_guess[origin[0]:origin[0] + shape[0], origin[1]:origin[1] + shape[1]]
    assert window.shape == shape  # the grid lies inside the simulated object
    return origin, window


def test_the_stitched_truth_is_the_truth_on_the_solver_grid(tiny):
    origin, truth = _truth_on_grid(tiny)
    stitched = iterative.stitched(iterative.IterativeResult(truth, origin, (0.0,), 0.0, "-"), tiny)
    factor = np.complex64(1.7 * np.exp(0.9j))  # a network's object is known up to its global factors
    start = iterative.start_from_canvas(tiny, stitched.canvas * factor, stitched.covered, stitched.centre_xy)
    assert start.shape == truth.shape and start.dtype == np.complex64

    flat = iterative.constant_amplitude(tiny.diffraction, tiny.probe)
    top, left = np.round(stitched.centre_xy[::-1]).astype(int) - stitched.canvas.shape[0] // 2 - np.asarray(origin)
    placed = np.zeros(truth.shape, bool)
    placed[top:top + stitched.canvas.shape[0], left:left + stitched.canvas.shape[1]] = stitched.covered
    assert placed.sum() == stitched.covered.sum() > 0  # the canvas lies inside the grid here
    ratio = start[placed] / truth[placed]  # one complex number where the canvas covers the grid
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    phase_reference = np.angle(np.sum(truth[placed]))
    assert np.angle(ratio[0]) == pytest.approx(-phase_reference, abs=1e-5)  # the mean phase set to 0
    assert np.sqrt(np.mean(np.abs(start[placed]) ** 2)) == pytest.approx(flat, rel=1e-5)
    assert abs(ratio[0]) == pytest.approx(1.0, abs=0.05)  # the truth's level is the one its data imply
    np.testing.assert_array_equal(start[~placed], np.complex64(flat))


def test_a_canvas_partly_off_the_grid_places_what_lies_on_it(tiny):
    origin, truth = _truth_on_grid(tiny)
    height = truth.shape[0]
    centre = np.array([origin[1] + 4, origin[0] + height - 6], float)  # [x, y]: over the left and bottom edges
    rng = np.random.default_rng(0)
    canvas = (rng.uniform(0.5, 1.5, (24, 24)) * np.exp(1j * rng.uniform(-1, 1, (24, 24)))).astype(np.complex64)
    start = iterative.start_from_canvas(tiny, canvas, np.ones(canvas.shape, bool), centre)
    # canvas pixel (i, j) is grid pixel (height - 18 + i, j - 8): its rows 0..17 and columns 8..23 are on the grid
    rows, cols = slice(height - 18, height), slice(0, 16)
    ratio = start[rows, cols] / canvas[:18, 8:]
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-5)
    outside = np.ones(truth.shape, bool)
    outside[rows, cols] = False
    flat = iterative.constant_amplitude(tiny.diffraction, tiny.probe)
    np.testing.assert_array_equal(start[outside], np.complex64(flat))


def test_a_canvas_off_the_grid_is_refused(tiny):
    canvas = np.ones((8, 8), np.complex64)
    with pytest.raises(ValueError, match="no covered pixel"):
        iterative.start_from_canvas(tiny, canvas, np.ones((8, 8), bool), np.array([-500.0, -500.0]))
    with pytest.raises(ValueError, match="one \\(M, M\\) shape"):
        iterative.start_from_canvas(tiny, canvas, np.ones((4, 4), bool), np.array([0.0, 0.0]))


def test_the_truth_as_start_fits_the_data_better_than_the_flat_start(tiny):
    origin, truth = _truth_on_grid(tiny)
    spec = iterative.IterativeSpec(epochs=1)
    from_truth = iterative.reconstruct(tiny, spec, start=truth)
    flat = iterative.reconstruct(tiny, spec)
    assert from_truth.loss_history[0] < 0.5 * flat.loss_history[0]
    with pytest.raises(ValueError, match="initial object must be"):
        iterative.reconstruct(tiny, spec, start=truth[1:])

"""Smoke test: a few training steps at gridsize 1 and 2, XLA translation on and off.

Losses are read over the data's own Poisson NLL (:func:`ptycho.pipeline.poisson_nll_floor`):
the raw NLL is about -3.4e6 per pixel here, of which only the excess over that floor (about
7e4 at the first step) is learnable, so a tolerance relative to the raw value says nothing.
"""
import numpy as np
import pytest

from ptycho.pipeline import poisson_nll_floor

SMOKE_EPOCHS = 20  # as in conftest.py


def nll_excess(run) -> np.ndarray:
    """The loss curve minus the NLL floor of the batch it trains on (float64; >= 0 in exact arithmetic)."""
    return np.asarray(run.history["loss"], np.float64) - poisson_nll_floor(run.data.intensity)


@pytest.mark.parametrize("xla", [True, False], ids=["xla_on", "xla_off"])
@pytest.mark.parametrize("gridsize", [1, 2])
def test_loss_goes_down_over_a_short_run(smoke_runs, gridsize, xla):
    """Measured: the excess falls to 0.23 (gridsize 1) and 0.21 (gridsize 2) of its first value in
    20 steps; halving it leaves a 2x margin and fails a network that learns ten times slower."""
    run = smoke_runs(gridsize, xla)
    excess = nll_excess(run)
    assert run.model.use_xla is xla
    assert np.all(np.isfinite(excess))
    assert 3 <= len(excess) <= SMOKE_EPOCHS
    assert np.all(excess > 0), excess  # the loss is the Poisson NLL, bounded below by the floor
    assert excess[-1] < 0.5 * excess[0], excess


def test_xla_on_and_off_train_the_same_way(smoke_runs):
    """Same seed, same data: the two translation paths give the same first-step loss (before any
    update, so only the translation differs) to 1e-4 of its excess over the floor (7.7 of 7.7e4;
    measured gap 0, float32 resolution of the raw loss 0.25). A 0.1 px bias in one path moves it
    by 12.5, which rtol 1e-5 on the raw loss (34) let through."""
    on, off = nll_excess(smoke_runs(2, True)), nll_excess(smoke_runs(2, False))
    assert abs(on[0] - off[0]) <= 1e-4 * off[0], (on[0], off[0])

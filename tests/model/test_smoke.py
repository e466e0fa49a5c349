"""Smoke test: a few training steps at gridsize 1 and 2, XLA translation on and off."""
import numpy as np
import pytest

SMOKE_EPOCHS = 20  # as in conftest.py


@pytest.mark.parametrize("xla", [True, False], ids=["xla_on", "xla_off"])
@pytest.mark.parametrize("gridsize", [1, 2])
def test_loss_goes_down_over_a_short_run(smoke_runs, gridsize, xla):
    run = smoke_runs(gridsize, xla)
    losses = np.asarray(run.history["loss"])
    assert run.model.use_xla is xla
    assert np.all(np.isfinite(losses))
    assert 3 <= len(losses) <= SMOKE_EPOCHS
    assert losses[-1] < losses[0]
    assert losses.min() < losses[0] - 1e-4 * abs(losses[0])


def test_xla_on_and_off_train_the_same_way(smoke_runs):
    """Same seed, same data: the two translation paths give nearly the same first-step loss."""
    on, off = smoke_runs(2, True).history["loss"], smoke_runs(2, False).history["loss"]
    np.testing.assert_allclose(on[0], off[0], rtol=1e-5)

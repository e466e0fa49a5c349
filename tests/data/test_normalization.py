"""The dataset intensity scale and symmetric input/label scaling (docs/design.md §4)."""
import numpy as np
import pytest

from ptycho.data import normalization
from ptycho import physics


def test_dataset_scale_matches_simulation_scale(dataset_512):
    train, _ = dataset_512
    psi = physics.illuminate(train.probe, train.Y)
    from_data = normalization.dataset_intensity_scale(train.diffraction, 1e9)
    from_truth = physics.intensity_scale(psi, 1e9)
    assert from_data == pytest.approx(from_truth, rel=2e-3)


def test_scaled_inputs_carry_nphotons_per_frame(dataset_512):
    train, _ = dataset_512
    s = normalization.dataset_intensity_scale(train.diffraction, 1e9)
    X = normalization.scale_inputs(train.diffraction, s)
    labels = normalization.intensity_labels(X)
    assert X.dtype == np.float32 and labels.dtype == np.float32
    assert labels.sum(axis=(1, 2)).mean() == pytest.approx(1e9, rel=1e-5)


def test_scaling_is_symmetric():
    A = np.random.default_rng(0).random((2, 64, 64)).astype(np.float32)
    s = 37.5
    X = normalization.scale_inputs(A, s)
    np.testing.assert_allclose(normalization.intensity_labels(X), (s * A.astype(np.float64)) ** 2, rtol=1e-6)
    np.testing.assert_allclose(X / s, A, rtol=1e-6)


def test_closed_form_is_shared_not_duplicated():
    assert normalization.closed_form_intensity_scale is physics.closed_form_intensity_scale


@pytest.mark.parametrize(
    "diffraction", [-np.ones((1, 4, 4)), np.full((1, 4, 4), np.nan), np.ones((1, 4, 4), np.complex64)],
    ids=["negative", "nan", "complex"],
)
def test_dataset_scale_rejects_bad_amplitudes(diffraction):
    with pytest.raises(ValueError, match="diffraction"):
        normalization.dataset_intensity_scale(diffraction, 1e9)


def test_scale_inputs_rejects_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        normalization.scale_inputs(np.ones((1, 4, 4)), 0.0)

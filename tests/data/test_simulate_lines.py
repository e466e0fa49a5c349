"""The 'lines' simulated dataset: the community's amplitude-only object, same contract and cache."""
import numpy as np
import pytest

from ptycho import physics
from ptycho.data import phantoms, simulate
from ptycho.data.npz import load_npz
from ptycho.data.phantoms import make_lines_object
from ptycho.data.simulate import SimulationSpec, ensure_simulated_dataset, simulate_dataset

SMALL_LINES = SimulationSpec(n_images=48, nphotons=1e6, object_kind="lines")
# spec_hash of SimulationSpec(n_images=512) (the spec's default then) and of
# SimulationSpec(n_images=48, nphotons=1e6), computed before object_kind existed: the cached file
# names must not change
HASH_512_BEFORE_OBJECT_KIND = "d4e926592371"
SMALL_HASH_BEFORE_OBJECT_KIND = "305a4ab80f29"


class FixedEndpoints:
    """Stands in for the generator: ``integers`` returns the given (n, 4) segment end points."""

    def __init__(self, endpoints):
        self.endpoints = np.asarray(endpoints)

    def integers(self, low, high, size):
        assert size == self.endpoints.shape and self.endpoints.max() < high
        return self.endpoints


@pytest.fixture(scope="module")
def lines_dataset():
    """(train, test) of the default spec at 512 positions with the lines object."""
    return simulate_dataset(SimulationSpec(n_images=512, object_kind="lines"))


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    first, second = simulate_dataset(SMALL_LINES), simulate_dataset(SMALL_LINES)
    for a, b in zip(first, second):
        for name in ("diffraction", "probe", "xcoords", "ycoords", "object_guess", "Y", "scan_index"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
    other, _ = simulate_dataset(SimulationSpec(n_images=48, nphotons=1e6, object_kind="lines", seed=1))
    assert not np.allclose(first[0].object_guess, other.object_guess)
    assert not np.allclose(first[0].diffraction, other.diffraction)


def test_lines_object_differs_from_the_mixed_one_on_the_same_scan_and_probe():
    lines_train, _ = simulate_dataset(SMALL_LINES)
    mixed_train, _ = simulate_dataset(SimulationSpec(n_images=48, nphotons=1e6))
    assert not np.allclose(lines_train.object_guess, mixed_train.object_guess)
    np.testing.assert_array_equal(lines_train.probe, mixed_train.probe)
    np.testing.assert_array_equal(lines_train.xcoords, mixed_train.xcoords)
    np.testing.assert_array_equal(lines_train.scan_index, mixed_train.scan_index)


def test_amplitude_only_and_strictly_positive(lines_dataset):
    for data in lines_dataset:
        for array in (data.object_guess, data.Y):
            assert array.dtype == np.complex64
            assert np.all(array.imag == 0)  # phase exactly 0
            amplitude = array.real
            assert amplitude.min() >= phantoms.LINES_BACKGROUND - 1e-6 and amplitude.max() <= 1 + 1e-6
    assert np.abs(lines_dataset[0].object_guess).max() == pytest.approx(1.0)


def test_object_is_a_bright_minority_of_lines_on_a_darker_background(lines_dataset):
    amplitude = np.abs(lines_dataset[0].object_guess)
    assert 0.01 < (amplitude > 0.8).mean() < 0.2
    assert np.median(amplitude) < 0.75 and amplitude.min() < 0.5


def test_one_segment_is_a_blurred_ridge_on_an_exact_background():
    size = 200
    # a horizontal segment on the (400, 400) canvas, row 200 = crop row 100, across the crop
    amplitude = make_lines_object(size, FixedEndpoints([[200, 20, 200, 380]]), n_lines=1).real
    assert np.all(np.argmax(amplitude, axis=0) == size // 2)
    np.testing.assert_allclose(amplitude[size // 2], 1.0, rtol=1e-6)
    profile = amplitude[:, size // 2]
    assert np.all(np.diff(profile[: size // 2 + 1]) >= 0) and np.all(np.diff(profile[size // 2:]) <= 0)
    # blur tails end near 4 sigma = 40 px: beyond, the amplitude is the background exactly
    background = np.isclose(amplitude, phantoms.LINES_BACKGROUND, rtol=0, atol=1e-9)
    assert background.mean() > 0.5 and (amplitude > 0.5).mean() < 0.1
    assert background[: size // 2 - 45].all() and not background[size // 2 - 30: size // 2 + 31].any()


def test_make_lines_object_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_lines"):
        make_lines_object(64, np.random.default_rng(0), n_lines=0)


def test_diffraction_follows_the_forward_model(lines_dataset):
    train, _ = lines_dataset
    clean = physics.forward_amplitude(train.probe, train.Y[:16])
    observed = train.diffraction[:16].astype(np.float64)
    assert train.diffraction.dtype == np.float32 and np.all(train.diffraction >= 0)
    np.testing.assert_allclose((observed**2).sum(axis=(1, 2)), (clean**2).sum(axis=(1, 2)), rtol=1e-3)
    assert np.corrcoef(observed.ravel(), clean.ravel())[0, 1] > 0.999


def test_cache_round_trips_through_the_contract_and_is_reused(tmp_path, monkeypatch):
    paths = ensure_simulated_dataset(SMALL_LINES, tmp_path)
    stem = f"simulated_{simulate.spec_hash(SMALL_LINES)}"
    assert [p.name for p in paths] == [f"{stem}_train.npz", f"{stem}_test.npz"]
    expected = simulate_dataset(SMALL_LINES)
    for path, data in zip(paths, expected):
        loaded = load_npz(path)  # validates the NPZ contract
        for name in ("diffraction", "probe", "xcoords", "ycoords", "object_guess", "Y", "scan_index"):
            assert np.array_equal(getattr(loaded, name), getattr(data, name)), name
    with np.load(paths[0]) as npz:
        assert {"objectGuess", "Y", "diffraction", "probeGuess", "xcoords", "ycoords"} <= set(npz.files)

    def must_not_run(spec):
        raise AssertionError("simulated again although the cache exists")

    monkeypatch.setattr(simulate, "simulate_dataset", must_not_run)
    assert ensure_simulated_dataset(SMALL_LINES, tmp_path) == paths


def test_the_mixed_spec_hash_is_unchanged_and_lines_has_its_own():
    assert simulate.spec_hash(SimulationSpec(n_images=512)) == HASH_512_BEFORE_OBJECT_KIND
    assert simulate.spec_hash(SimulationSpec(n_images=512, object_kind="mixed")) == HASH_512_BEFORE_OBJECT_KIND
    assert simulate.spec_hash(SimulationSpec(n_images=48, nphotons=1e6)) == SMALL_HASH_BEFORE_OBJECT_KIND
    assert simulate.spec_hash(SimulationSpec(n_images=512, object_kind="lines")) != HASH_512_BEFORE_OBJECT_KIND


@pytest.mark.parametrize("value", ["spiral", "Lines", None])
def test_bad_object_kind_names_the_key_and_the_choices(value):
    with pytest.raises(ValueError, match=r"SimulationSpec\.object_kind: expected one of \('mixed', 'lines'\)"):
        SimulationSpec(object_kind=value)

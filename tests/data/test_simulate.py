"""The simulated default dataset: deterministic, realistic, in the NPZ contract, cached once."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from ptycho import physics
from ptycho.data import phantoms, simulate
from ptycho.data.npz import load_npz
from ptycho.data.simulate import SimulationSpec, ensure_simulated_dataset, simulate_dataset

SMALL = SimulationSpec(n_images=48, nphotons=1e6)


def _low_frequency_power_fraction(image, cutoff=0.1):
    """Share of the (mean-removed) power at spatial frequencies below ``cutoff`` cycles/px."""
    power = np.abs(np.fft.fft2(image - image.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1]), indexing="ij")
    return power[np.hypot(fx, fy) < cutoff].sum() / power.sum()


def test_same_seed_gives_identical_arrays():
    first, second = simulate_dataset(SMALL), simulate_dataset(SMALL)
    for a, b in zip(first, second):
        for name in ("diffraction", "probe", "xcoords", "ycoords", "object_guess", "Y", "scan_index"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name


def test_different_seed_gives_different_data():
    train_a, _ = simulate_dataset(SMALL)
    train_b, _ = simulate_dataset(SimulationSpec(n_images=48, nphotons=1e6, seed=1))
    assert not np.allclose(train_a.object_guess, train_b.object_guess)
    assert not np.allclose(train_a.diffraction, train_b.diffraction)


def test_split_sizes_and_contract(dataset_512):
    train, test = dataset_512
    assert (train.n_images, test.n_images, train.N) == (384, 128, 64)
    assert train.diffraction.dtype == np.float32 and train.Y.dtype == np.complex64
    assert train.has_ground_truth and test.has_ground_truth
    assert train.object_guess.shape == (SimulationSpec(n_images=512).object_side,) * 2


def test_split_is_spatial_and_covers_the_scan(dataset_512):
    train, test = dataset_512
    assert train.ycoords.max() <= test.ycoords.min()
    np.testing.assert_array_equal(np.sort(np.concatenate([train.scan_index, test.scan_index])), np.arange(512))
    assert np.all(np.diff(train.scan_index) > 0) and np.all(np.diff(test.scan_index) > 0)


def test_object_has_structure_not_noise(dataset_512):
    obj = dataset_512[0].object_guess
    amplitude, phase = np.abs(obj), np.angle(obj)
    assert amplitude.min() >= 0.5 - 1e-6 and amplitude.max() <= 1 + 1e-6
    assert np.abs(phase).max() <= np.pi / 2 + 1e-5
    assert amplitude.std() > 0.05 and phase.std() > 0.2
    # white noise would put ~3% of its power below 0.1 cycles/px
    assert _low_frequency_power_fraction(amplitude) > 0.9
    assert _low_frequency_power_fraction(phase) > 0.9
    # and the structure is not one blob: power is spread over scales above the largest one
    assert _low_frequency_power_fraction(amplitude, cutoff=2 / amplitude.shape[0]) < 0.9


def test_probe_has_finite_support():
    N = 64
    probe = phantoms.make_probe(N)
    assert probe.dtype == np.complex64 and probe.shape == (N, N)
    grid = np.arange(N) - N / 2
    radius = np.hypot(grid[None, :], grid[:, None])
    support = radius < phantoms.probe_support_radius(N)
    assert np.all(probe[~support] == 0)
    assert np.abs(probe[radius < N / 4]).min() > 0.99
    assert N / 4 <= phantoms.probe_support_radius(N) <= N / 3


def test_probe_phase_is_curved():
    N = 64
    probe = phantoms.make_probe(N)
    row = probe[N // 2, N // 2 - 16: N // 2 + 17]
    r = np.arange(-16, 17)
    phase = np.unwrap(np.angle(row))
    curvature, slope, _ = np.polyfit(r, phase, 2)
    fitted = np.polyval([curvature, slope, _], r)
    assert curvature > 0.01 and abs(slope) < 1e-6
    assert np.abs(phase - fitted).max() < 1e-3


@pytest.mark.parametrize("scan", ["fermat", "raster"])
def test_neighbouring_positions_overlap_and_stay_inside(scan):
    spec = SimulationSpec(scan=scan, n_images=64)
    x, y = simulate.scan_positions(spec)
    distances, _ = cKDTree(np.c_[x, y]).query(np.c_[x, y], k=2)
    nearest = distances[:, 1]
    assert nearest.max() < spec.N / 2  # probe support diameter is 5N/8
    assert np.median(nearest) == pytest.approx(spec.step_px, rel=0.15)
    M = spec.object_side
    assert x.min() - spec.N / 2 >= 0 and x.max() + spec.N / 2 <= M - 1
    assert y.min() - spec.N / 2 >= 0 and y.max() + spec.N / 2 <= M - 1


def test_patches_are_centred_on_the_scan_positions():
    obj = (np.arange(100 * 100).reshape(100, 100) * (1 + 1j)).astype(np.complex64)
    patches = simulate.extract_patches(obj, np.array([50.0, 60.5]), np.array([40.0, 45.0]), 64)
    np.testing.assert_array_equal(patches[0], obj[40 - 32: 40 + 32, 50 - 32: 50 + 32])
    np.testing.assert_allclose(patches[1, 32, 32], 0.5 * (obj[45, 60] + obj[45, 61]))
    with pytest.raises(ValueError, match="outside"):
        simulate.extract_patches(obj, np.array([20.0]), np.array([50.0]), 64)


def test_diffraction_follows_the_forward_model(dataset_512):
    train, _ = dataset_512
    clean = physics.forward_amplitude(train.probe, train.Y[:16])
    observed = train.diffraction[:16].astype(np.float64)
    # photon noise at 1e9 photons per frame is tiny relative to the frame energy
    np.testing.assert_allclose((observed**2).sum(axis=(1, 2)), (clean**2).sum(axis=(1, 2)), rtol=1e-3)
    assert np.corrcoef(observed.ravel(), clean.ravel())[0, 1] > 0.999


def test_ensure_writes_once_and_reuses(tmp_path, monkeypatch):
    paths = ensure_simulated_dataset(SMALL, tmp_path)
    assert [p.name for p in paths] == [f"simulated_{simulate.spec_hash(SMALL)}_{s}.npz" for s in ("train", "test")]
    assert len(simulate.spec_hash(SMALL)) == 12
    train = load_npz(paths[0])
    expected, _ = simulate_dataset(SMALL)
    assert np.array_equal(train.diffraction, expected.diffraction)

    def must_not_run(spec):
        raise AssertionError("simulated again although the cache exists")

    monkeypatch.setattr(simulate, "simulate_dataset", must_not_run)
    assert ensure_simulated_dataset(SMALL, tmp_path) == paths
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_spec_hash_tracks_every_field():
    base = simulate.spec_hash(SimulationSpec())
    assert simulate.spec_hash(SimulationSpec(nphotons=1_000_000_000)) == base
    assert simulate.spec_hash(SimulationSpec(seed=1)) != base
    assert simulate.spec_hash(SimulationSpec(scan_step_px=9.0)) != base


@pytest.mark.parametrize(
    "field, value",
    [
        ("N", 32), ("N", 64.0), ("n_images", 1), ("nphotons", 0.0), ("nphotons", float("nan")),
        ("seed", -1), ("test_fraction", 0.0), ("test_fraction", 1.0), ("scan", "spiral"),
        ("scan_step_px", -2.0), ("object_size", 100),
    ],
    ids=lambda v: str(v),
)
def test_spec_rejects_bad_fields(field, value):
    with pytest.raises(ValueError, match=f"SimulationSpec.{field}"):
        SimulationSpec(**{field: value})

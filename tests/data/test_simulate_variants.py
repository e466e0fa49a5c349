"""Simulated variants (issue 22 item 2): object amplitude range, probe kind, stored units, photon levels.

Every test here is fast (tiny specs, well under a second each).
"""
import hashlib

import numpy as np
import pytest

from ptycho.data import normalization, phantoms, simulate
from ptycho import physics
from ptycho.data.batches import prepare_job_data
from ptycho.data.npz import load_npz
from ptycho.data.simulate import SimulationSpec, simulate_dataset, spec_hash
from ptycho.spec import GroupingSpec, ModelSpec

TINY = dict(n_images=16, nphotons=1e6)
# (spec kwargs, spec_hash, digest of every array of both splits) computed with the simulator as
# committed before the variant fields existed (aa730b9): the defaults must reproduce them exactly
BEFORE_VARIANTS = [
    (dict(n_images=16, nphotons=1e6), "f58c42b1324f", "0574e863593614a3"),
    (dict(n_images=16, nphotons=1e4, object_kind="lines", seed=3), "74eaf6475503", "a39c16c20a4d1c73"),
    (dict(n_images=20, scan="raster", N=128, scan_step_px=15.0), "82e8fa395e7b", "b4ab149ac8ebc3c5"),
]
# spec_hash of SimulationSpec(n_images=512) before the variant fields existed
HASH_512_BEFORE_VARIANTS = "d4e926592371"
FIELDS = ("diffraction", "probe", "xcoords", "ycoords", "object_guess", "Y", "scan_index")


def _digest(spec):
    digest = hashlib.sha1()
    for split in simulate_dataset(spec):
        for name in FIELDS:
            array = np.ascontiguousarray(getattr(split, name))
            digest.update(array.dtype.str.encode())
            digest.update(str(array.shape).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _outer_ring(N, width=2):
    ring = np.zeros((N, N), bool)
    ring[:width], ring[-width:], ring[:, :width], ring[:, -width:] = True, True, True, True
    return ring


def _energy_fraction(probe, where):
    intensity = np.abs(probe.astype(np.complex128)) ** 2
    return float(intensity[where].sum() / intensity.sum())


def _both(**kwargs):
    """(train, test) of one spec in both units."""
    return [simulate_dataset(SimulationSpec(**kwargs, amplitude_units=units)) for units in ("normalised", "counts")]


# --- defaults unchanged ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, expected_hash, expected_digest", BEFORE_VARIANTS)
def test_defaults_reproduce_the_committed_arrays_and_hashes(kwargs, expected_hash, expected_digest):
    explicit = SimulationSpec(**kwargs, amplitude_range=None, probe_kind="default", amplitude_units="normalised")
    assert spec_hash(SimulationSpec(**kwargs)) == spec_hash(explicit) == expected_hash
    assert _digest(explicit) == expected_digest


def test_the_spec_keeps_its_hash_and_every_variant_gets_its_own():
    assert spec_hash(SimulationSpec(n_images=512)) == HASH_512_BEFORE_VARIANTS
    variants = [dict(amplitude_range=(0.1, 1.0)), dict(amplitude_range=(1.0, 10.0)), dict(probe_kind="disk"),
                dict(probe_kind="defocus"), dict(amplitude_units="counts")]
    hashes = {spec_hash(SimulationSpec(n_images=512, **v)) for v in variants}
    assert len(hashes) == len(variants) and HASH_512_BEFORE_VARIANTS not in hashes


def test_amplitude_range_given_as_a_list_is_the_same_spec_as_the_tuple():
    from_list = SimulationSpec(amplitude_range=[1, 10])  # as Hydra/asdict hands it over
    assert from_list.amplitude_range == (1.0, 10.0)
    assert spec_hash(from_list) == spec_hash(SimulationSpec(amplitude_range=(1.0, 10.0)))


# --- amplitude_range ------------------------------------------------------------------------------

@pytest.mark.parametrize("object_kind", ["mixed", "lines"])
@pytest.mark.parametrize("lo, hi", [(0.1, 1.0), (1.0, 10.0)])
def test_amplitude_range_maps_the_object_linearly_and_keeps_its_phase(object_kind, lo, hi):
    base, _ = simulate_dataset(SimulationSpec(**TINY, object_kind=object_kind))
    ranged, _ = simulate_dataset(SimulationSpec(**TINY, object_kind=object_kind, amplitude_range=(lo, hi)))
    a, b = phantoms.OBJECT_AMPLITUDE_RANGES[object_kind]
    amplitude, base_amplitude = np.abs(ranged.object_guess), np.abs(base.object_guess)
    assert amplitude.min() >= lo * (1 - 1e-6) and amplitude.max() == pytest.approx(hi, rel=1e-6)
    np.testing.assert_allclose(amplitude, lo + (hi - lo) * (base_amplitude - a) / (b - a), rtol=1e-5)
    np.testing.assert_allclose(np.angle(ranged.object_guess), np.angle(base.object_guess), atol=1e-5)
    if object_kind == "mixed":  # the mixed object reaches both ends of its own range
        assert amplitude.min() == pytest.approx(lo, rel=1e-5)
    # the patches, and so the diffraction, are those of the rescaled object
    np.testing.assert_array_equal(ranged.Y, simulate.extract_patches(ranged.object_guess, ranged.xcoords,
                                                                      ranged.ycoords, 64))
    model = physics.forward_amplitude(ranged.probe, ranged.Y)
    assert np.sum(ranged.diffraction.astype(np.float64) ** 2) / np.sum(model**2) == pytest.approx(1.0, rel=1e-3)


# --- probe kinds ----------------------------------------------------------------------------------

@pytest.mark.parametrize("N", [64, 128])
def test_disk_probe_is_a_flat_phase_disk_of_radius_N_over_4(N):
    probe = phantoms.make_probe_of_kind(N, "disk")
    radius = phantoms._radius_map(N)
    assert probe.dtype == np.complex64 and probe.shape == (N, N)
    assert np.all(probe.imag == 0) and np.all(probe.real >= 0)  # phase exactly 0
    assert np.all(np.abs(probe[radius <= N / 4 - 0.5]) == 1) and np.all(probe[radius >= N / 4 + 0.5] == 0)
    area = np.abs(probe).sum()
    assert area == pytest.approx(np.pi * (N / 4) ** 2, rel=0.02)


@pytest.mark.parametrize("N", [64, 128, 256])
def test_defocus_probe_spreads_with_rings_and_stays_inside_the_frame(N):
    probe = phantoms.make_probe_of_kind(N, "defocus")
    default = phantoms.make_probe_of_kind(N, "default")
    radius = phantoms._radius_map(N)
    assert probe.dtype == np.complex64 and np.abs(probe).max() == pytest.approx(1.0)
    outside = _energy_fraction(probe, radius > N / 4)
    assert outside > _energy_fraction(default, radius > N / 4) + 0.1
    assert _energy_fraction(probe, _outer_ring(N)) < 1e-3
    # Fresnel rings: the radial intensity profile within the ray-optics radius has several maxima
    profile = np.array([np.mean(np.abs(probe[(radius >= k) & (radius < k + 1)]) ** 2)
                        for k in range(int(phantoms.DEFOCUS_RADIUS_FRACTION * N))])
    maxima = np.sum((profile[1:-1] > profile[:-2]) & (profile[1:-1] > profile[2:]))
    assert maxima >= 2
    # a defocused beam carries a curved wavefront: the phase is not flat
    assert np.ptp(np.angle(probe[radius < N / 8])) > 1.0


def test_default_probe_kind_is_the_committed_probe_and_the_data_carries_the_chosen_probe():
    assert np.array_equal(phantoms.make_probe_of_kind(64, "default"), phantoms.make_probe(64))
    for kind in phantoms.PROBE_KINDS:
        train, test = simulate_dataset(SimulationSpec(**TINY, probe_kind=kind))
        expected = phantoms.make_probe_of_kind(64, kind)
        assert np.array_equal(train.probe, expected) and np.array_equal(test.probe, expected)
        # the diffraction is that probe's: noise-free amplitudes of probe * Y match the data's energy
        model = physics.forward_amplitude(train.probe, train.Y)
        ratio = np.sum(train.diffraction.astype(np.float64) ** 2) / np.sum(model**2)
        assert ratio == pytest.approx(1.0, rel=1e-3)


def test_make_probe_of_kind_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="make_probe_of_kind: kind must be one of"):
        phantoms.make_probe_of_kind(64, "gauss")


# --- amplitude units ------------------------------------------------------------------------------

@pytest.mark.parametrize("probe_kind", ["default", "defocus"])
def test_counts_are_the_normalised_amplitudes_times_the_recorded_scale(probe_kind):
    normalised, counts = _both(**TINY, probe_kind=probe_kind)
    scale = simulate.diffraction_scale(SimulationSpec(**TINY, probe_kind=probe_kind))
    unit_probe = phantoms.make_probe_of_kind(64, probe_kind).astype(np.complex128)
    for n_split, c_split in zip(normalised, counts):
        np.testing.assert_allclose(c_split.diffraction, n_split.diffraction.astype(np.float64) * scale, rtol=1e-6,
                                   atol=1e-6 * scale)
        squares = c_split.diffraction.astype(np.float64) ** 2  # photon counts: whole numbers
        np.testing.assert_allclose(squares, np.round(squares), atol=1e-3 * max(1.0, squares.max()) ** 0.5)
        np.testing.assert_allclose(c_split.probe, unit_probe * scale, rtol=1e-6, atol=1e-6 * scale)
        # the scale is recoverable from a counts file alone: its probe against the unit probe
        recovered = np.sqrt(np.sum(np.abs(c_split.probe.astype(np.complex128)) ** 2) / np.sum(np.abs(unit_probe) ** 2))
        assert recovered == pytest.approx(scale, rel=1e-6)
        for name in ("xcoords", "ycoords", "object_guess", "Y", "scan_index"):
            assert np.array_equal(getattr(n_split, name), getattr(c_split, name)), name


def test_both_units_keep_the_contract_relation_between_diffraction_and_probe():
    for train, _ in _both(**TINY):
        stored = np.mean(np.sum(train.diffraction.astype(np.float64) ** 2, axis=(-2, -1)))
        exit_wave = np.mean(np.sum(np.abs(physics.illuminate(train.probe, train.Y)) ** 2, axis=(-2, -1)))
        assert stored == pytest.approx(exit_wave, rel=2e-3)


def test_the_pipeline_sees_the_same_model_input_in_both_units():
    (n_train, n_test), (c_train, c_test) = _both(n_images=64, nphotons=1e6)
    grouping, model_spec = GroupingSpec(gridsize=1, n_groups=8), ModelSpec(gridsize=1, n_filters_scale=1)
    n_spec, n_grouped, n_test_grouped, _ = prepare_job_data(n_train, n_test, grouping, model_spec, 1e9)
    c_spec, c_grouped, c_test_grouped, _ = prepare_job_data(c_train, c_test, grouping, model_spec, 1e9)
    np.testing.assert_allclose(c_grouped.diffraction, n_grouped.diffraction, rtol=1e-5)
    np.testing.assert_allclose(c_test_grouped.diffraction, n_test_grouped.diffraction, rtol=1e-5)
    assert c_spec.initial_amplitude == pytest.approx(n_spec.initial_amplitude, rel=1e-5)
    scale = simulate.diffraction_scale(SimulationSpec(n_images=64, nphotons=1e6))
    # only the model's intensity scale (log_scale) moves, by s_sim; its encoder input X / s / rms is the same
    assert n_spec.intensity_scale / c_spec.intensity_scale == pytest.approx(scale, rel=1e-5)
    assert c_spec.encoder_input_rms / n_spec.encoder_input_rms == pytest.approx(scale, rel=1e-5)
    # a counts file at the job's own photon level needs no rescaling (over the whole scan: s_sim's frames)
    every_frame = np.concatenate([c_train.diffraction, c_test.diffraction])
    assert normalization.dataset_intensity_scale(every_frame, 1e6) == pytest.approx(1.0, rel=2e-3)


def test_counts_files_round_trip_through_the_cache(tmp_path):
    spec = SimulationSpec(**TINY, amplitude_units="counts", probe_kind="disk")
    train_path, test_path = simulate.ensure_simulated_dataset(spec, tmp_path)
    assert train_path.name == f"simulated_{spec_hash(spec)}_train.npz"
    train, _ = simulate_dataset(spec)
    loaded = load_npz(train_path)
    assert np.array_equal(loaded.diffraction, train.diffraction) and np.array_equal(loaded.probe, train.probe)


# --- photon levels --------------------------------------------------------------------------------

@pytest.mark.parametrize("nphotons", [1e4, 1e5, 1e6, 1e7, 1e8, 1e9])
def test_each_photon_level_gives_its_mean_counts_per_frame(nphotons):
    spec = SimulationSpec(n_images=32, nphotons=nphotons, amplitude_units="counts")
    counts = np.concatenate([split.diffraction for split in simulate_dataset(spec)]).astype(np.float64) ** 2
    per_frame = counts.sum(axis=(-2, -1))
    # Poisson: the mean over 32 frames of ~nphotons counts is within a few sqrt(nphotons * 32) of it
    assert per_frame.mean() == pytest.approx(nphotons, rel=5 / np.sqrt(32 * nphotons) + 1e-6)
    normalised = np.concatenate([split.diffraction for split in simulate_dataset(
        SimulationSpec(n_images=32, nphotons=nphotons))]).astype(np.float64)
    scale = simulate.diffraction_scale(SimulationSpec(n_images=32, nphotons=nphotons))
    assert np.mean(np.sum((scale * normalised) ** 2, axis=(-2, -1))) == pytest.approx(per_frame.mean(), rel=1e-5)


def test_fewer_photons_mean_noisier_patterns():
    def relative_noise(nphotons):
        train, _ = simulate_dataset(SimulationSpec(**{**TINY, "nphotons": nphotons}))
        clean = physics.forward_amplitude(train.probe, train.Y)
        return np.linalg.norm(train.diffraction - clean) / np.linalg.norm(clean)
    noise = [relative_noise(n) for n in (1e4, 1e6, 1e9)]
    assert noise[0] > 5 * noise[1] > 25 * noise[2]


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value", [
    ("amplitude_range", (1.0, 0.5)),
    ("amplitude_range", (0.0, 1.0)),
    ("amplitude_range", (-1.0, 1.0)),
    ("amplitude_range", (0.5, 0.5)),
    ("amplitude_range", (0.5, float("inf"))),
    ("amplitude_range", (0.5, float("nan"))),
    ("amplitude_range", (0.5, 1.0, 2.0)),
    ("amplitude_range", 1.0),
    ("amplitude_range", ("0.5", "1")),
    ("amplitude_range", (True, 2.0)),
    ("probe_kind", "gauss"),
    ("probe_kind", None),
    ("amplitude_units", "photons"),
    ("amplitude_units", "normalized"),
    ("amplitude_units", None),
])
def test_bad_values_are_rejected_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"SimulationSpec\.{field}: expected"):
        SimulationSpec(**{field: value})

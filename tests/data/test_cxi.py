"""CXI in, CXI out (ptycho/data/cxi.py, dataset=cxi): files written by cdtools (a third-party writer)
convert into the project's PtychoData with the simulator's positions and amplitudes; every way a
file can be unusable is a CxiFormatError naming the HDF5 path; a stitched object written as CXI
reads back with its pixel size and origin."""
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from ptycho.data import cxi, cxi_file, cxi_object
from ptycho import physics
from ptycho.data.contract import DataContractError
from ptycho.data.npz import load_npz
from ptycho.data.simulate import SimulationSpec, simulate_dataset

REPO = Path(__file__).resolve().parents[2]
N = 64
WAVELENGTH, DISTANCE, PIXEL = 1e-9, 0.5, 20e-6  # object pixel lambda z / (N p) = 0.39 um
PHOTONS = 1e4  # counts = amplitude**2 * PHOTONS
BASIS = np.array([[0.0, -PIXEL], [-PIXEL, 0.0], [0.0, 0.0]])  # cdtools' default orientation, (3, 2)


@pytest.fixture(scope="module")
def scan():
    """(train, test) of a tiny simulated scan (16 positions, N = 64)."""
    return simulate_dataset(SimulationSpec(N=N, n_images=16, seed=0))


def _object_basis(n_det=N, pixel=PIXEL):
    basis = BASIS * (pixel / PIXEL)
    return np.linalg.pinv(basis * n_det).T * WAVELENGTH * DISTANCE


def _cxi_translations(data, n_det=N, pixel=PIXEL):
    """The CXI (sample) translations (n, 3) m that put the probe at the data's positions."""
    ij = np.stack([data.ycoords, data.xcoords], 1)
    return -(_object_basis(n_det, pixel) @ ij.T).T  # cdtools: probe translation = -CXI translation


def _write_cdtools(path, data, mask=None, probe=True):
    """``data`` as photon counts through cdtools' own writer (Ptycho2DDataset.to_cxi); cdtools writes no
    probe, so the simulator's is added where CXI keeps the illumination."""
    cdtools = pytest.importorskip("cdtools")
    counts = data.diffraction.astype(np.float64) ** 2 * PHOTONS
    dataset = cdtools.datasets.Ptycho2DDataset(
        -_cxi_translations(data), counts, wavelength=WAVELENGTH,
        detector_geometry={"distance": DISTANCE, "basis": BASIS}, mask=mask)
    dataset.to_cxi(path)
    if probe:
        with h5py.File(path, "a") as f:
            f[cxi_file.PROBE_PATHS[0]] = data.probe
    return counts


def _write_plain(path, data, frame=N, edit=None, pixel=PIXEL):
    """A minimal CXI written with h5py (pixel sizes, no basis vectors): counts centred in ``frame``
    x ``frame`` detector pixels; ``edit(f)`` changes the file before it closes."""
    counts = np.zeros((data.n_images, frame, frame))
    start = frame // 2 - N // 2
    counts[:, start:start + N, start:start + N] = data.diffraction.astype(np.float64) ** 2 * PHOTONS
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 160
        f["entry_1/data_1/data"] = counts
        f["entry_1/sample_1/geometry_1/translation"] = _cxi_translations(data, frame, pixel)
        f[cxi_file.ENERGY_PATH] = cxi_file.HC_JOULE_METRE / WAVELENGTH
        f[cxi_file.DISTANCE_PATH] = DISTANCE
        f[cxi_file.X_PIXEL_PATH] = f[cxi_file.Y_PIXEL_PATH] = pixel
        f[cxi_file.MASK_PATH] = np.zeros((frame, frame), np.uint32)
        f[cxi_file.PROBE_PATHS[0]] = data.probe
        if edit is not None:
            edit(f)
    return counts


def _same_up_to_shift(a, b, atol=1e-3):
    return np.allclose(a - a.mean(), b - b.mean(), atol=atol, rtol=0)


# ------------------------------------------------------------------------------- the round trips

def test_a_cdtools_file_converts_to_the_simulators_positions_and_amplitudes(scan, tmp_path):
    train = scan[0]
    mask = np.ones((N, N), bool)
    mask[10, 20] = False  # a bad pixel whose partner (54, 44) is good
    mask[N // 2, N // 2 + 3] = mask[N // 2, N // 2 - 3] = False  # a pair: no good partner, filled with 0
    counts = _write_cdtools(tmp_path / "scan.cxi", train, mask=mask)

    data, report = cxi.convert_cxi(tmp_path / "scan.cxi")

    assert (data.n_images, data.N, report.n_frames, report.N, report.binning) == (train.n_images, N, train.n_images, N, 1)
    assert _same_up_to_shift(data.xcoords, train.xcoords) and _same_up_to_shift(data.ycoords, train.ycoords)
    assert np.allclose(data.diffraction[:, mask], np.sqrt(counts[:, mask]), rtol=1e-5)
    assert np.allclose(data.diffraction[:, 10, 20], np.sqrt(counts[:, N - 10, N - 20]), rtol=1e-5)
    assert np.all(data.diffraction[:, N // 2, N // 2 + 3] == 0)
    assert report.masked_fraction == pytest.approx(3 / N**2)
    assert report.filled_from_partner_fraction == pytest.approx(1 / N**2)
    assert report.filled_zero_fraction == pytest.approx(2 / N**2)
    assert report.wavelength_m == pytest.approx(WAVELENGTH, rel=1e-6)
    assert report.distance_m == pytest.approx(DISTANCE, rel=1e-6)
    assert report.object_pixel_m == pytest.approx(WAVELENGTH * DISTANCE / (N * PIXEL), rel=1e-6)
    filled = counts.copy()
    filled[:, 10, 20] = counts[:, N - 10, N - 20]
    filled[:, N // 2, [N // 2 - 3, N // 2 + 3]] = 0
    assert report.counts_per_frame_mean == pytest.approx(filled.sum(axis=(1, 2)).mean(), rel=1e-5)
    assert np.array_equal(data.probe, train.probe) and report.probe_energy_kept == pytest.approx(1.0)
    text = report.text()
    for words in ("12 frames", "object pixel 3.90625e-07 m", "from the centrosymmetric partner", "set to 0"):
        assert words in text


def test_positions_agree_with_cdtools_own_geometry(scan, tmp_path):
    """cdtools' reader and its translation -> pixel mapping (the oracle) give our positions."""
    cdtools = pytest.importorskip("cdtools")
    import torch
    from cdtools.tools import initializers, interactions

    _write_cdtools(tmp_path / "scan.cxi", scan[0])
    data, _ = cxi.convert_cxi(tmp_path / "scan.cxi")
    theirs = cdtools.datasets.Ptycho2DDataset.from_cxi(tmp_path / "scan.cxi")
    geometry = theirs.detector_geometry
    basis = initializers.exit_wave_geometry(torch.as_tensor(geometry["basis"]), theirs.patterns.shape[-2:],
                                            theirs.wavelength, geometry["distance"])
    pixels = interactions.translations_to_pixel(basis, theirs.translations.to(torch.float32)).numpy()
    assert _same_up_to_shift(data.ycoords, pixels[:, 0]) and _same_up_to_shift(data.xcoords, pixels[:, 1])


def test_a_test_file_shares_the_train_files_object_frame(scan, tmp_path):
    train, test = scan
    _write_cdtools(tmp_path / "train.cxi", train)
    _write_cdtools(tmp_path / "test.cxi", test)
    got_train, report = cxi.convert_cxi(tmp_path / "train.cxi")
    got_test, _ = cxi.convert_cxi(tmp_path / "test.cxi", origin_ij=report.origin_ij)
    shift = got_train.xcoords[0] - train.xcoords[0], got_train.ycoords[0] - train.ycoords[0]
    assert np.allclose(got_test.xcoords - test.xcoords, shift[0], atol=1e-3)
    assert np.allclose(got_test.ycoords - test.ycoords, shift[1], atol=1e-3)


def test_larger_frames_are_cropped_around_the_zero_frequency(scan, tmp_path):
    train = scan[0]
    _write_plain(tmp_path / "big.cxi", train, frame=100)
    data, report = cxi.convert_cxi(tmp_path / "big.cxi")
    assert (report.N, report.window_rows, report.window_cols) == (64, (18, 82), (18, 82))
    assert report.object_pixel_m == pytest.approx(WAVELENGTH * DISTANCE / (64 * PIXEL))
    assert np.allclose(data.diffraction, train.diffraction * np.sqrt(PHOTONS), rtol=1e-5)
    assert "the array centre" in report.center_from


def test_binning_sums_blocks_and_keeps_the_object_pixel(scan, tmp_path):
    train = scan[0]
    # the file's probe lives on the file's grid, 128 pixels of lambda z / (128 p / 2): ours, zero-padded
    padded = np.pad(train.probe, 32)
    counts = _write_plain(tmp_path / "fine.cxi", train, frame=128, pixel=PIXEL / 2,
                          edit=_replace(cxi_file.PROBE_PATHS[0], padded))
    data, report = cxi.convert_cxi(tmp_path / "fine.cxi", cxi.CxiConversion(N=64, binning=2))
    assert np.array_equal(data.probe, train.probe) and report.probe_energy_kept == pytest.approx(1.0)
    binned = counts.reshape(-1, 64, 2, 64, 2).sum(axis=(2, 4))
    assert np.allclose(data.diffraction, np.sqrt(binned), rtol=1e-5)
    assert report.binned_pixel_m == pytest.approx(PIXEL)
    assert report.object_pixel_m == pytest.approx(WAVELENGTH * DISTANCE / (128 * PIXEL / 2))
    assert report.zero_frequency_offset_px == pytest.approx(0.25) and "even binning" in report.notes[0]


def test_a_finer_probe_is_resampled_by_cropping_its_far_field(scan, tmp_path):
    """A 128-pixel probe of the file's geometry becomes the 64-pixel probe whose far field is the
    central 64 x 64 of its far field (the same window, coarser pixels)."""
    rng = np.random.default_rng(1)
    fine = (rng.normal(size=(128, 128)) + 1j * rng.normal(size=(128, 128))) * np.hanning(128)[:, None] * np.hanning(128)
    edit = lambda f: (f.__delitem__(cxi_file.PROBE_PATHS[0]), f.__setitem__(cxi_file.PROBE_PATHS[0], fine.astype(np.complex64)))
    _write_plain(tmp_path / "probe.cxi", scan[0], edit=edit)
    data, report = cxi.convert_cxi(tmp_path / "probe.cxi")
    expected = physics.far_field_intensity(fine)[32:96, 32:96]
    assert np.allclose(physics.far_field_intensity(data.probe), expected, rtol=1e-3, atol=1e-6 * expected.max())
    assert 0 < report.probe_energy_kept < 1 and "side 128 -> 64" in report.probe_from


def test_the_beam_position_comes_from_corner_position(scan, tmp_path):
    def edit(f):  # the beam (x = y = 0) on detector pixel (40, 36): corner + 40 * b_row + 36 * b_col = 0
        f[cxi_file.CORNER_PATH] = np.array([36 * PIXEL, 40 * PIXEL, DISTANCE])  # b_row = (0, -p, 0), b_col = (-p, 0, 0)
    _write_plain(tmp_path / "corner.cxi", scan[0], frame=100, edit=edit)
    _, report = cxi.convert_cxi(tmp_path / "corner.cxi")
    assert report.center_rc == (40, 36) and cxi_file.CORNER_PATH in report.center_from
    assert report.window_rows == (8, 72) and report.window_cols == (4, 68)


def test_without_a_probe_the_explicit_fallback_estimates_one(scan, tmp_path):
    counts = _write_cdtools(tmp_path / "noprobe.cxi", scan[0], probe=False)
    data, report = cxi.convert_cxi(tmp_path / "noprobe.cxi", cxi.CxiConversion(probe_fallback="mean_pattern"))
    assert "estimated from the mean pattern" in report.probe_from
    assert np.sum(np.abs(data.probe.astype(np.complex128)) ** 2) == pytest.approx(counts.sum(axis=(1, 2)).mean(), rel=1e-4)


def test_a_probe_given_by_the_caller_is_used_as_it_is(scan, tmp_path):
    _write_cdtools(tmp_path / "noprobe.cxi", scan[0], probe=False)
    probe = (scan[0].probe * 2).astype(np.complex64)
    data, report = cxi.convert_cxi(tmp_path / "noprobe.cxi", probe=probe)
    assert np.array_equal(data.probe, probe) and report.probe_from == "given by the caller"


def test_negative_counts_are_clipped_only_when_asked(scan, tmp_path):
    def edit(f):
        f["entry_1/data_1/data"][0, 0, 0] = -3.0
    _write_plain(tmp_path / "neg.cxi", scan[0], edit=edit)
    data, report = cxi.convert_cxi(tmp_path / "neg.cxi", cxi.CxiConversion(clip_negative=True))
    assert report.negative_clipped == 1 and data.diffraction[0, 0, 0] == 0


# ------------------------------------------------------------------------------- unusable files

def _drop(*paths):
    def edit(f):
        for path in paths:
            del f[path]
    return edit


def _replace(path, value):
    def edit(f):
        new = value(f) if callable(value) else value
        del f[path]
        f[path] = new
    return edit


def _set_pixels(value, where=(0, 0, 0)):
    def edit(f):
        f["entry_1/data_1/data"][where] = value
    return edit


CASES = {
    # id: (edit of a valid file, HDF5 path the message must name, words it must contain, conversion settings)
    "missing_frames": (_drop("entry_1/data_1/data"), "entry_1/data_1/data", "none of them", {}),
    "frames_2d": (_replace("entry_1/data_1/data", np.ones((N, N))), "entry_1/data_1/data", "3-D", {}),
    "complex_frames": (_replace("entry_1/data_1/data", lambda f: f["entry_1/data_1/data"][()] + 0j),
                       "entry_1/data_1/data", "real counts", {}),
    "missing_translations": (_drop("entry_1/sample_1/geometry_1/translation"),
                             "entry_1/sample_1/geometry_1/translation", "none of them", {}),
    "fewer_translations_than_frames": (
        _replace("entry_1/sample_1/geometry_1/translation", lambda f: f["entry_1/sample_1/geometry_1/translation"][:-1]),
        "entry_1/sample_1/geometry_1/translation", "one translation per frame", {}),
    "translations_wrong_shape": (_replace("entry_1/sample_1/geometry_1/translation", np.zeros((12,))),
                                 "entry_1/sample_1/geometry_1/translation", "(n, 3)", {}),
    "nan_translation": (_replace("entry_1/sample_1/geometry_1/translation",
                                 lambda f: np.where(np.eye(12, 3) > 0, np.nan, f["entry_1/sample_1/geometry_1/translation"][()])),
                        "entry_1/sample_1/geometry_1/translation", "NaN", {}),
    "mask_hides_everything": (_replace(cxi_file.MASK_PATH, np.ones((N, N), np.uint32)), cxi_file.MASK_PATH,
                              "every pixel of the 64x64 window masked", {}),
    "mask_hides_too_much": (_replace(cxi_file.MASK_PATH, np.tril(np.ones((N, N), np.uint32))), cxi_file.MASK_PATH,
                            "max_masked_fraction", {}),
    "mask_wrong_shape": (_replace(cxi_file.MASK_PATH, np.zeros((N, N + 1), np.uint32)), cxi_file.MASK_PATH, "(64, 64)", {}),
    "negative_counts": (_set_pixels(-1.0), "entry_1/data_1/data", "non-negative", {}),
    "nan_counts": (_set_pixels(np.nan, (3, 5, 7)), "entry_1/data_1/data", "first in frame 3", {}),
    "inf_counts": (_set_pixels(np.inf), "entry_1/data_1/data", "NaN or Inf", {}),
    "all_zero_counts": (_replace("entry_1/data_1/data", np.zeros((12, N, N))), "entry_1/data_1/data",
                        "not all zero", {}),
    "no_energy_nor_wavelength": (_drop(cxi_file.ENERGY_PATH), cxi_file.ENERGY_PATH, "neither", {}),
    "energy_in_ev": (_replace(cxi_file.ENERGY_PATH, 1240.0), cxi_file.ENERGY_PATH, "looks like eV", {}),
    "wavelength_disagrees_with_energy": (lambda f: f.__setitem__(cxi_file.WAVELENGTH_PATH, 2 * WAVELENGTH),
                                         cxi_file.ENERGY_PATH, "agreeing with", {}),
    "missing_distance": (_drop(cxi_file.DISTANCE_PATH), cxi_file.DISTANCE_PATH, "far-field geometry needs it", {}),
    "zero_distance": (_replace(cxi_file.DISTANCE_PATH, 0.0), cxi_file.DISTANCE_PATH, "> 0", {}),
    "missing_pixel_size": (_drop(cxi_file.X_PIXEL_PATH, cxi_file.Y_PIXEL_PATH), cxi_file.X_PIXEL_PATH, "pixel size", {}),
    "rectangular_pixels": (_replace(cxi_file.Y_PIXEL_PATH, 2 * PIXEL), cxi_file.X_PIXEL_PATH, "square detector pixels", {}),
    "tilted_detector": (lambda f: f.__setitem__(cxi_file.BASIS_PATH, PIXEL * np.array([[0, -1], [-0.8, 0], [0.6, 0]])),
                        cxi_file.BASIS_PATH, "normal to the beam", {}),
    "no_probe": (_drop(cxi_file.PROBE_PATHS[0]), cxi_file.PROBE_PATHS[0], "probe_fallback=mean_pattern", {}),
    "real_probe": (_replace(cxi_file.PROBE_PATHS[0], np.ones((N, N))), cxi_file.PROBE_PATHS[0], "complex", {}),
    "zero_probe": (_replace(cxi_file.PROBE_PATHS[0], np.zeros((N, N), np.complex64)), cxi_file.PROBE_PATHS[0], "not all zero", {}),
    "probe_smaller_than_the_window": (_replace(cxi_file.PROBE_PATHS[0], np.ones((32, 32), np.complex64)),
                                      cxi_file.PROBE_PATHS[0], "side >= N * binning", {}),
    "window_larger_than_the_frame": (None, "entry_1/data_1/data", "inside the 64x64 frame", {"N": 128}),
    "read_over_the_memory_budget": (None, "entry_1/data_1/data", "memory budget", {"max_bytes": 1000}),
    # a beam wider than the detector: 1 nm over 5 m onto 64 pixels of 1 um; the probe, 35 object pixels of
    # 78 um, is 2.7 mm wide (F = a^2 / (lambda z) ~ 1500)
    "near_field": (lambda f: [_replace(key, value)(f) for key, value in
                              ((cxi_file.X_PIXEL_PATH, 1e-6), (cxi_file.Y_PIXEL_PATH, 1e-6), (cxi_file.DISTANCE_PATH, 5.0))],
                   cxi_file.DISTANCE_PATH, "near-field", {}),
}


@pytest.mark.parametrize("case", CASES)
def test_an_unusable_file_is_refused_naming_the_hdf5_path(scan, tmp_path, case):
    edit, key, words, options = CASES[case]
    options = dict(options)
    max_bytes = options.pop("max_bytes", None)
    path = tmp_path / f"{case}.cxi"
    _write_plain(path, scan[0], edit=edit)
    expected = cxi.NearFieldError if case == "near_field" else cxi_file.CxiFormatError
    with pytest.raises(expected) as caught:
        cxi.convert_cxi(path, cxi.CxiConversion(**options), max_bytes=max_bytes)
    error = caught.value
    assert isinstance(error, DataContractError) and isinstance(error, ValueError)
    assert error.key == key and str(path) in str(error) and f"'{key}'" in str(error)
    assert words in str(error), str(error)


def test_a_file_that_is_not_hdf5_or_missing_is_refused(tmp_path):
    (tmp_path / "text.cxi").write_text("not hdf5")
    for path, words in ((tmp_path / "text.cxi", "unreadable"), (tmp_path / "absent.cxi", "no such file")):
        with pytest.raises(cxi_file.CxiFormatError, match=words) as caught:
            cxi.convert_cxi(path)
        assert caught.value.key is None and str(path) in str(caught.value)


@pytest.mark.parametrize("field, value", [("N", 100), ("binning", 0), ("mask_fill", "median"),
                                          ("max_masked_fraction", 1.0), ("probe_fallback", "gaussian")])
def test_bad_conversion_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"CxiConversion.{field}"):
        cxi.CxiConversion(**{field: value})


# ------------------------------------------------------------------------------- export

def test_a_stitched_object_written_as_cxi_reads_back_with_its_geometry(scan, tmp_path):
    _write_cdtools(tmp_path / "scan.cxi", scan[0])
    data, report = cxi.convert_cxi(tmp_path / "scan.cxi")
    rng = np.random.default_rng(2)
    canvas = (rng.normal(size=(40, 40)) + 1j * rng.normal(size=(40, 40))).astype(np.complex64)
    covered = rng.random((40, 40)) > 0.3
    centre_xy = np.array([round(data.xcoords.mean()), round(data.ycoords.mean())])
    path = cxi_object.export_stitched(tmp_path / "object.cxi", canvas, covered, centre_xy, report, probe=data.probe)

    back = cxi_object.read_object_cxi(path)
    assert np.array_equal(back.canvas, canvas) and np.array_equal(back.covered, covered)
    assert back.pixel_size_m == pytest.approx((report.object_pixel_m, report.object_pixel_m))
    assert np.array_equal(back.probe, data.probe) and back.report["n_frames"] == data.n_images
    # the translation at canvas pixel (r, c) = origin + r * basis[0] + c * basis[1]; frame k's probe
    # centre sits at object pixel (ycoords[k], xcoords[k]), i.e. canvas pixel (y - cy + 20, x - cx + 20)
    with h5py.File(tmp_path / "scan.cxi") as f:
        translations = f["entry_1/sample_1/geometry_1/translation"][()]
    rows, cols = data.ycoords - centre_xy[1] + 20, data.xcoords - centre_xy[0] + 20
    at = back.origin_translation_m + rows[:, None] * back.basis_vectors_m[0] + cols[:, None] * back.basis_vectors_m[1]
    assert np.allclose(at[:, :2], translations[:, :2], atol=1e-3 * report.object_pixel_m)
    with h5py.File(path) as f:  # what another CXI reader looks for
        assert f["cxi_version"][()] == cxi_object.CXI_VERSION
        assert f["entry_1/image_1/data_space"][()] == b"real" and f["entry_1/data_1/data"].shape == (40, 40)
        assert f["entry_1/image_1/mask"][()].dtype == np.uint32


def test_write_object_cxi_refuses_a_real_canvas(tmp_path):
    with pytest.raises(ValueError, match="complex"):
        cxi_object.write_object_cxi(tmp_path / "o.cxi", np.ones((4, 4)), (1e-6, 1e-6))
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------- the runner

def _compose(overrides):
    from hydra import compose, initialize_config_dir

    from runners.schema import register_configs, to_spec

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "runners" / "conf"), version_base="1.3"):
        return to_spec(compose("phase", overrides=list(overrides)))


def test_dataset_cxi_converts_both_files_into_the_contract(scan, tmp_path):
    from runners.inputs import cxi as cxi_input

    _write_cdtools(tmp_path / "train.cxi", scan[0])
    _write_cdtools(tmp_path / "test.cxi", scan[1])
    spec = _compose(["c1=scaled", "dataset=cxi", "dataset.train_data_file=train.cxi",
                     "dataset.test_data_file=test.cxi", "dataset.cache_dir=cache"])
    inputs = cxi_input.prepare(spec, tmp_path)
    train, test = (load_npz(path) for path in inputs.paths)
    assert (train.n_images, test.n_images) == (scan[0].n_images, scan[1].n_images)
    assert inputs.reports[1].origin_ij == inputs.reports[0].origin_ij
    assert inputs.report_path.is_file() and "[test] CXI conversion of" in inputs.text()
    assert inputs.photons_per_frame == pytest.approx(inputs.reports[0].counts_per_frame_mean)


def test_the_size_check_counts_the_cxi_frames(scan, tmp_path):
    from runners.inputs.datasets import check_dataset_size

    _write_cdtools(tmp_path / "train.cxi", scan[0])
    spec = _compose(["c1=scaled", "dataset=cxi", "dataset.train_data_file=train.cxi",
                     "dataset.test_data_file=train.cxi", "c1.n_images=13", "c1.n_groups=8"])
    with pytest.raises(ValueError, match="c1.n_images: must be <= 12"):
        check_dataset_size(spec, tmp_path)
    assert cxi_file.frame_count(tmp_path / "train.cxi") == 12


def test_dataset_cxi_needs_both_files(tmp_path):
    assert _compose(["c1=scaled", "dataset=cxi"]).dataset.train_data_file == "datasets/scan_train.cxi"
    with pytest.raises(ValueError, match="dataset.test_data_file: must be set too"):
        _compose(["c1=scaled", "dataset=cxi", "dataset.test_data_file=null"])


@pytest.mark.slow
def test_a_phase_run_on_cxi_files_leaves_the_report_and_the_object(scan, tmp_path):
    """``python -m runners.phase c1=scaled xla=off dataset=cxi ...`` at smoke size: GREEN, the report
    in the CLI log and the run folder, the stitched object as CXI."""
    _write_cdtools(tmp_path / "train.cxi", scan[0])
    _write_cdtools(tmp_path / "test.cxi", scan[1])
    guard = tmp_path / "test_guard_green.py"
    guard.write_text("def test_guard_passes():\n    assert True\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_XLA_FLAGS", None)
    env.pop("USE_XLA_TRANSLATE", None)
    args = ["c1=scaled", "xla=off", "dataset=cxi", "dataset.train_data_file=train.cxi",
            "dataset.test_data_file=test.cxi", "c1.n_images=12", "c1.n_groups=4", "c1.batch_size=2",
            "c1.neighbor_count=4", "c1.model.n_filters_scale=1", f"guard.selector={guard} -q",
            f"hub.root={tmp_path / 'hub'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "dataset.cache_dir=cache", f"hydra.run.dir={tmp_path / 'outputs'}"]
    done = subprocess.run([sys.executable, "-m", "runners.phase", *args], cwd=tmp_path, env=env, timeout=600,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout[-4000:]
    slot = tmp_path / "hub" / "tf_baseline" / "phase_c1_scaled"
    log = next((slot / "cli").glob("*.log")).read_text()
    assert "CXI conversion of" in log and "object pixel" in log
    inventory = (tmp_path / "hub" / "analysis" / "artifact_inventory.txt").read_text()
    assert "format=cxi" in inventory and "train_cxi=train.cxi" in inventory, inventory
    run_dir = slot / "run_scaled"
    assert (run_dir / "cxi_conversion.json").is_file()
    back = cxi_object.read_object_cxi(run_dir / "object.cxi")
    assert back.canvas.ndim == 2 and back.origin_translation_m is not None

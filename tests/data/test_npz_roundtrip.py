"""Saving and loading the NPZ contract: exact round trips, casts, legacy keys, atomic writes."""
import os

import numpy as np
import pytest

from ptycho.data.contract import PtychoData
from ptycho.data.npz import file_sha1, load_npz, save_npz

OPTIONAL_FIELDS = ("object_guess", "Y", "scan_index", "xcoords_start", "ycoords_start")
ALL_FIELDS = ("diffraction", "probe", "xcoords", "ycoords") + OPTIONAL_FIELDS


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


def _assert_same(a: PtychoData, b: PtychoData):
    for name in ALL_FIELDS:
        left, right = getattr(a, name), getattr(b, name)
        if left is None:
            assert right is None, name
        else:
            assert left.dtype == right.dtype and np.array_equal(left, right), name


def test_round_trip_is_exact(tmp_path, valid_arrays):
    original = load_npz(_write(tmp_path / "in.npz", valid_arrays))
    saved = save_npz(tmp_path / "out.npz", original)
    _assert_same(original, load_npz(saved))


def test_round_trip_of_simulated_split(tmp_path, dataset_512):
    train, _ = dataset_512
    _assert_same(train, load_npz(save_npz(tmp_path / "train.npz", train)))


def test_required_keys_only(tmp_path, valid_arrays):
    required = {k: valid_arrays[k] for k in ("diffraction", "probeGuess", "xcoords", "ycoords")}
    data = load_npz(_write(tmp_path / "min.npz", required))
    assert all(getattr(data, name) is None for name in OPTIONAL_FIELDS)
    assert not data.has_ground_truth
    _assert_same(data, load_npz(save_npz(tmp_path / "min_out.npz", data)))


def test_legacy_diff3d_and_extra_keys(tmp_path, valid_arrays):
    valid_arrays["diff3d"] = valid_arrays.pop("diffraction")
    valid_arrays["unrelated_note"] = np.arange(4)
    data = load_npz(_write(tmp_path / "legacy.npz", valid_arrays))
    assert np.array_equal(data.diffraction, valid_arrays["diff3d"])
    np.testing.assert_array_equal(data.xcoords_start, valid_arrays["xcoords_start"])


def test_wider_dtypes_are_cast(tmp_path, valid_arrays):
    valid_arrays["diffraction"] = valid_arrays["diffraction"].astype(np.float64)
    valid_arrays["probeGuess"] = valid_arrays["probeGuess"].astype(np.complex128)
    valid_arrays["xcoords"] = np.array([40, 50, 61], dtype=np.int32)
    valid_arrays["Y"] = valid_arrays["Y"][..., None].astype(np.complex128)
    data = load_npz(_write(tmp_path / "wide.npz", valid_arrays))
    assert data.diffraction.dtype == np.float32 and data.probe.dtype == np.complex64
    assert data.xcoords.dtype == np.float64 and data.Y.shape == (3, 64, 64)


def test_save_is_atomic_and_leaves_no_temporary(tmp_path, valid_arrays):
    data = load_npz(_write(tmp_path / "in.npz", valid_arrays))
    target = tmp_path / "sub" / "out.npz"
    save_npz(target, data)
    first = file_sha1(target)
    save_npz(target, data)  # replacing an existing file
    assert file_sha1(target) == first
    assert sorted(os.listdir(target.parent)) == ["out.npz"]


def test_failed_save_keeps_old_file(tmp_path, valid_arrays, monkeypatch):
    data = load_npz(_write(tmp_path / "in.npz", valid_arrays))
    target = save_npz(tmp_path / "out.npz", data)
    before = target.read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.raises(OSError, match="disk full"):
        save_npz(target, data)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["in.npz", "out.npz"]


def test_file_sha1_tracks_content(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"abc")
    b.write_bytes(b"abd")
    assert file_sha1(a) == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert file_sha1(a) != file_sha1(b)


def test_subset_selects_per_image_arrays(dataset_512):
    train, _ = dataset_512
    part = train.subset([5, 1, 7])
    assert part.n_images == 3 and part.N == 64
    np.testing.assert_array_equal(part.xcoords, train.xcoords[[5, 1, 7]])
    np.testing.assert_array_equal(part.Y, train.Y[[5, 1, 7]])
    np.testing.assert_array_equal(part.scan_index, train.scan_index[[5, 1, 7]])
    assert part.object_guess is train.object_guess and part.probe is train.probe


def test_subset_rejects_bad_indices(dataset_512):
    train, _ = dataset_512
    with pytest.raises(ValueError, match="out of range"):
        train.subset([train.n_images])
    with pytest.raises(ValueError, match="integer"):
        train.subset([0.5])

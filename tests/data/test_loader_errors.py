"""Every way an NPZ file can break the data contract gets a DataContractError naming file and key."""
import io
import zipfile

import numpy as np
import pytest

from ptycho.data.contract import DataContractError, PtychoData, validate
from ptycho.data.npz import load_npz

N = 64


def _nan_at_first(key):
    def edit(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key].flat[0] = np.nan
    return edit


def _set(key, value):
    def edit(arrays):
        arrays[key] = value(arrays) if callable(value) else value
    return edit


def _drop(key):
    return lambda arrays: arrays.pop(key)


CASES = {
    # id: (edit of the valid arrays, key the message must name, words it must contain)
    "missing_probe": (_drop("probeGuess"), "probeGuess", "required keys"),
    "missing_xcoords": (_drop("xcoords"), "xcoords", "required keys"),
    "missing_diffraction": (_drop("diffraction"), "diffraction", "diff3d"),
    "diffraction_wrong_ndim": (_set("diffraction", lambda a: a["diffraction"][0]), "diffraction", "3-D"),
    "diffraction_complex_dtype": (
        _set("diffraction", lambda a: a["diffraction"].astype(np.complex64)), "diffraction", "real floating"),
    "diffraction_integer_dtype": (
        _set("diffraction", lambda a: a["diffraction"].astype(np.int32)), "diffraction", "int32"),
    "diffraction_non_square": (_set("diffraction", np.zeros((3, N, 128), np.float32)), "diffraction", "square"),
    "unsupported_N": (_set("diffraction", np.zeros((3, 32, 32), np.float32)), "diffraction", "(64, 128, 256)"),
    "zero_images": (_set("diffraction", np.zeros((0, N, N), np.float32)), "diffraction", "zero images"),
    "diffraction_nan": (_nan_at_first("diffraction"), "diffraction", "NaN or Inf"),
    "diffraction_inf": (_set("diffraction", lambda a: a["diffraction"] * np.inf), "diffraction", "NaN or Inf"),
    "negative_amplitude": (_set("diffraction", lambda a: a["diffraction"] - 0.5), "diffraction", "non-negative"),
    "real_probe": (_set("probeGuess", lambda a: np.abs(a["probeGuess"])), "probeGuess", "real-valued"),
    "probe_wrong_ndim": (_set("probeGuess", lambda a: a["probeGuess"][None]), "probeGuess", "shape"),
    "probe_shape_differs": (_set("probeGuess", np.ones((128, 128), np.complex64)), "probeGuess", "(64, 64)"),
    "probe_nan": (_nan_at_first("probeGuess"), "probeGuess", "NaN or Inf"),
    "xcoords_length": (_set("xcoords", np.zeros(4)), "xcoords", "length 3"),
    "ycoords_length": (_set("ycoords", np.zeros(2)), "ycoords", "length 3"),
    "xcoords_wrong_ndim": (_set("xcoords", np.zeros((3, 1))), "xcoords", "1-D"),
    "ycoords_complex": (_set("ycoords", np.zeros(3, np.complex128)), "ycoords", "complex128"),
    "ycoords_inf": (_set("ycoords", np.array([0.0, np.inf, 1.0])), "ycoords", "NaN or Inf"),
    "Y_length": (_set("Y", np.ones((2, N, N), np.complex64)), "Y", "shape"),
    "Y_real_valued": (_set("Y", np.ones((3, N, N), np.float32)), "Y", "real-valued"),
    "object_wrong_ndim": (_set("objectGuess", np.ones((1, 128, 128), np.complex64)), "objectGuess", "shape"),
    "object_real_valued": (_set("objectGuess", np.ones((128, 128))), "objectGuess", "real-valued"),
    "scan_index_length": (_set("scan_index", np.arange(5)), "scan_index", "shape"),
    "scan_index_float": (_set("scan_index", np.arange(3.0)), "scan_index", "integers"),
    "xcoords_start_length": (_set("xcoords_start", np.zeros(2)), "xcoords_start", "length 3"),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_contract_violation_names_file_and_key(tmp_path, valid_arrays, case):
    edit, key, words = CASES[case]
    edit(valid_arrays)
    path = tmp_path / f"{case}.npz"
    np.savez(path, **valid_arrays)
    with pytest.raises(DataContractError) as info:
        load_npz(path)
    message = str(info.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert words in message
    assert info.value.key == key


def test_legacy_key_errors_name_diff3d(tmp_path, valid_arrays):
    valid_arrays["diff3d"] = -valid_arrays.pop("diffraction")
    path = tmp_path / "legacy.npz"
    np.savez(path, **valid_arrays)
    with pytest.raises(DataContractError, match="'diff3d'.*non-negative"):
        load_npz(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(DataContractError, match="0 bytes") as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_file_that_is_not_an_npz(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("diffraction, probeGuess\n1, 2\n")
    with pytest.raises(DataContractError, match="zip") as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_single_npy_file_is_not_an_npz(tmp_path, valid_arrays):
    path = tmp_path / "diffraction.npy"
    np.save(path, valid_arrays["diffraction"])
    with pytest.raises(DataContractError, match="NPZ") as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_truncated_npz(tmp_path, valid_arrays):
    path = tmp_path / "truncated.npz"
    np.savez(path, **valid_arrays)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataContractError, match="complete NPZ") as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_corrupt_member_names_key(tmp_path, valid_arrays):
    buffer = io.BytesIO()
    np.save(buffer, valid_arrays["probeGuess"])
    path = tmp_path / "corrupt.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in valid_arrays.items():
            if key != "probeGuess":
                member = io.BytesIO()
                np.save(member, value)
                archive.writestr(f"{key}.npy", member.getvalue())
        archive.writestr("probeGuess.npy", buffer.getvalue()[:100])
    with pytest.raises(DataContractError, match="corrupt member") as info:
        load_npz(path)
    assert str(path) in str(info.value) and "'probeGuess'" in str(info.value)


def test_pickled_object_array_is_refused(tmp_path, valid_arrays):
    valid_arrays["xcoords"] = np.array([{"x": 1}, None, 3], dtype=object)
    path = tmp_path / "pickled.npz"
    np.savez(path, **valid_arrays)
    with pytest.raises(DataContractError, match="pickled") as info:
        load_npz(path)
    assert str(path) in str(info.value) and "'xcoords'" in str(info.value)


def test_validate_in_memory_names_source_and_key(valid_arrays):
    data = PtychoData(
        diffraction=valid_arrays["diffraction"], probe=valid_arrays["probeGuess"],
        xcoords=valid_arrays["xcoords"], ycoords=valid_arrays["ycoords"],
    )
    data.diffraction[1, 2, 3] = np.nan
    with pytest.raises(DataContractError, match=r"my-split: key 'diffraction'.*NaN"):
        validate(data, "my-split")


def test_constructor_rejects_real_probe(valid_arrays):
    with pytest.raises(DataContractError, match="'probeGuess'.*real-valued"):
        PtychoData(
            diffraction=valid_arrays["diffraction"], probe=np.ones((N, N), np.float32),
            xcoords=valid_arrays["xcoords"], ycoords=valid_arrays["ycoords"],
        )

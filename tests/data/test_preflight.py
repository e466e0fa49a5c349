"""Hostile and degenerate datasets are refused before any large array is allocated (issue 9).

Every case asserts a DataContractError (or MemoryBudgetError) that names the file and the key.
File cases run through both readers: ``load_npz`` (the whole dataset) and
``preflight.inspect_file`` (headers and scan positions only); value cases need the arrays and
run through ``load_npz`` alone. Geometry cases run ``preflight.check_job`` on written files.
"""
import io
import math
import os
import tracemalloc
import warnings
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

from ptycho import preflight
from ptycho.data.batches import prepare_job_data
from ptycho.data.contract import MAX_COORD_PX, DataContractError
from ptycho.data.npz import load_npz, read_npz_headers
from ptycho.preflight import MemoryBudget, MemoryBudgetError, check_job, inspect_file
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec

N = 64
GB = 1e9


def _arrays(side=4, step=8.0, N=N, seed=0):
    """NPZ-keyed arrays of a valid dataset: side**2 positions on a square grid of ``step`` px."""
    rng = np.random.default_rng(seed)
    n = side * side
    grid = np.arange(side) * step + 100.0
    return {
        "diffraction": rng.random((n, N, N)).astype(np.float32),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
        "xcoords": np.tile(grid, side),
        "ycoords": np.repeat(grid, side),
        "objectGuess": np.ones((256, 256), np.complex64),
    }


def _npy(shape, dtype, payload=None, version=(1, 0)):
    """Bytes of an .npy member whose header declares ``shape`` and ``dtype``; by default the
    declared number of zero bytes follows, else ``payload``."""
    buffer = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    write = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    write(buffer, header)
    written = bytearray(buffer.getvalue())
    written[6] = version[0]  # format 3.0 is 2.0's layout with a UTF-8 header
    if payload is None:
        payload = bytes(math.prod(shape) * np.dtype(dtype).itemsize)
    return bytes(written) + payload


def _members(arrays):
    """{member name: .npy bytes} as numpy.savez writes them."""
    out = {}
    for key, value in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, value)
        out[f"{key}.npy"] = buffer.getvalue()
    return out


def _zip(path, members, compression=zipfile.ZIP_STORED):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are one of the cases
        with zipfile.ZipFile(path, "w", compression) as archive:
            for name, data in members:
                archive.writestr(name, data)


_LOCAL_FIELDS = {"flags": (6, 2), "method": (8, 2), "compress_size": (18, 4), "file_size": (22, 4)}
_CENTRAL_FIELDS = {"flags": (8, 2), "method": (10, 2), "compress_size": (20, 4), "file_size": (24, 4)}


def _patch_member(path, name, **fields):
    """Overwrite fields of member ``name`` in its local header and its central-directory entry."""
    blob = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(name).header_offset
    central = blob.find(b"PK\x01\x02")
    while blob[central + 46: central + 46 + len(name)] != name.encode():
        central = blob.find(b"PK\x01\x02", central + 4)
    for field, value in fields.items():
        for base, table in ((local, _LOCAL_FIELDS), (central, _CENTRAL_FIELDS)):
            offset, width = table[field]
            blob[base + offset: base + offset + width] = value.to_bytes(width, "little")
    path.write_bytes(bytes(blob))


# --- builders: each writes one hostile file at `path` from valid `arrays` --------------------

def _saved(edit):
    def build(path, arrays):
        edit(arrays)
        np.savez(path, **arrays)
    return build


def _set(key, value):
    return _saved(lambda a: a.__setitem__(key, value(a) if callable(value) else value))


def _declared(key, shape, dtype, compression=zipfile.ZIP_STORED):
    """A member whose header declares ``shape`` but holds only the valid array's bytes."""
    def build(path, arrays):
        members = _members(arrays)
        members[f"{key}.npy"] = _npy(shape, dtype, payload=arrays[key].tobytes())
        _zip(path, members.items(), compression)
    return build


def _zip_declares(key, n_declared, compression):
    """An xcoords-like member whose npy header and zip entry both declare n_declared float64."""
    def build(path, arrays):
        members = _members(arrays)
        member = _npy((n_declared,), "<f8", payload=arrays[key].tobytes())
        members[f"{key}.npy"] = member
        _zip(path, members.items(), compression)
        header_len = len(member) - arrays[key].nbytes
        declared = header_len + 8 * n_declared
        _patch_member(path, f"{key}.npy", file_size=declared,
                      **({"compress_size": declared} if compression == zipfile.ZIP_STORED else {}))
    return build


def _raw_member(name, data, drop=None):
    def build(path, arrays):
        members = _members(arrays)
        members.pop(f"{drop}.npy", None)
        members[name] = data
        _zip(path, members.items())
    return build


def _duplicate(key):
    def build(path, arrays):
        members = list(_members(arrays).items())
        _zip(path, members + [(f"{key}.npy", _members({key: arrays[key] * 2})[f"{key}.npy"])])
    return build


def _patched(key, **fields):
    def build(path, arrays):
        _zip(path, _members(arrays).items())
        _patch_member(path, f"{key}.npy", **fields)
    return build


def _header_text(key, text, length=None):
    """A member with a valid magic string and the given header text (and header length field)."""
    def build(path, arrays):
        members = _members(arrays)
        body = text.encode("latin1")
        size = len(body) if length is None else length
        members[f"{key}.npy"] = b"\x93NUMPY\x01\x00" + size.to_bytes(2, "little") + body
        _zip(path, members.items())
    return build


def _versioned(key, version):
    def build(path, arrays):
        members = _members(arrays)
        members[f"{key}.npy"] = _npy(arrays[key].shape, arrays[key].dtype, arrays[key].tobytes(), version=version)
        _zip(path, members.items())
    return build


def _no_members(path, arrays):
    _zip(path, [])


# id: (builder, key the error must name, words it must contain)
FILE_CASES = {
    # headers that declare absurd sizes (nothing is allocated)
    "xcoords_header_declares_terabytes": (_declared("xcoords", (2**40,), "<f8"), "xcoords", "declar"),
    "diffraction_header_declares_terabytes": (
        _declared("diffraction", (2**24, 256, 256), "<f4"), "diffraction", "declar"),
    "probe_header_declares_terabytes": (_declared("probeGuess", (2**20, 2**20), "<c8"), "probeGuess", "declar"),
    "object_header_declares_terabytes": (
        _declared("objectGuess", (2**20, 2**20), "<c8"), "objectGuess", "declar"),
    "deflated_header_declares_more_than_member": (
        _declared("diffraction", (10**6, N, N), "<f4", zipfile.ZIP_DEFLATED), "diffraction", "declar"),
    "deflated_zip_entry_declares_beyond_deflate_ratio": (
        _zip_declares("xcoords", 400_000_000, zipfile.ZIP_DEFLATED), "xcoords", "declar"),
    "stored_zip_entry_reaches_past_end_of_file": (
        _zip_declares("ycoords", 400_000_000, zipfile.ZIP_STORED), "ycoords", "declar"),
    # corrupt or unusual members
    "negative_dimension_in_header": (_declared("diffraction", (-16, N, N), "<f4"), "diffraction", "negative"),
    "member_is_not_npy": (_raw_member("diffraction.npy", b"hello, not an array"), "diffraction", ".npy"),
    "member_without_suffix_is_raw_bytes": (
        _raw_member("probeGuess", b"raw probe bytes", drop="probeGuess"), "probeGuess", ".npy"),
    "header_text_is_garbage": (_header_text("xcoords", "{not a header}\n"), "xcoords", "header"),
    "header_length_beyond_limit": (_header_text("ycoords", "{}\n", length=60000), "ycoords", "header"),
    "npy_format_version_3": (_versioned("xcoords", (3, 0)), "xcoords", "version"),
    "member_stored_twice": (_duplicate("probeGuess"), "probeGuess", "twice"),
    "member_flagged_encrypted": (_patched("diffraction", flags=1), "diffraction", "encrypted"),
    "member_bzip2_compressed": (_patched("ycoords", method=12), "ycoords", "stored or deflated"),
    "member_unknown_compression": (_patched("probeGuess", method=99), "probeGuess", "stored or deflated"),
    "pickled_coordinates": (
        _set("xcoords", lambda a: np.array([{"x": 1}] * 16, dtype=object)), "xcoords", "pickled"),
    "empty_zip_archive": (_no_members, "diffraction", "required keys"),
    # layouts read from the headers
    "zero_size_frames": (_set("diffraction", np.zeros((16, 0, 0), np.float32)), "diffraction", "(64, 128, 256)"),
    "absurd_frame_size": (_set("diffraction", np.zeros((16, 1, 1), np.float32)), "diffraction", "(64, 128, 256)"),
    "no_images_no_positions": (
        _saved(lambda a: a.update(diffraction=np.zeros((0, N, N), np.float32), xcoords=np.zeros(0),
                                  ycoords=np.zeros(0))), "diffraction", "zero images"),
    "no_positions_for_images": (_set("xcoords", np.zeros(0)), "xcoords", "length 16"),
    "structured_dtype_diffraction": (
        _set("diffraction", lambda a: a["diffraction"].view([("a", "<f4")])), "diffraction", "real floating"),
    "bool_coordinates": (_set("xcoords", np.ones(16, bool)), "xcoords", "real pixel coordinates"),
    "datetime_coordinates": (_set("ycoords", np.arange(16).astype("datetime64[s]")), "ycoords", "datetime64"),
    "string_probe": (_set("probeGuess", np.full((N, N), "x")), "probeGuess", "complex"),
    "zero_size_probe": (_set("probeGuess", np.zeros((0, 0), np.complex64)), "probeGuess", "shape"),
    "probe_for_other_N": (_set("probeGuess", np.ones((128, 128), np.complex64)), "probeGuess", "(64, 64)"),
    # scan positions (small reads, after their headers)
    "coordinates_1e300": (_set("xcoords", lambda a: a["xcoords"] + np.r_[1e300, np.zeros(15)]), "xcoords", "within"),
    "coordinates_1e9": (_set("ycoords", lambda a: a["ycoords"] + np.r_[np.zeros(15), 1e9]), "ycoords", "within"),
    "coordinates_just_past_limit": (
        _set("xcoords", lambda a: a["xcoords"] - np.r_[np.zeros(5), MAX_COORD_PX + 200, np.zeros(10)]),
        "xcoords", "within"),
    "coordinates_all_nan": (_set("xcoords", np.full(16, np.nan)), "xcoords", "NaN or Inf"),
    "coordinates_one_inf": (_set("ycoords", lambda a: a["ycoords"] + np.r_[np.inf, np.zeros(15)]), "ycoords",
                            "NaN or Inf"),
}

# The arrays' values: only the full load sees them.
VALUE_CASES = {
    "zero_probe": (_set("probeGuess", np.zeros((N, N), np.complex64)), "probeGuess", "not all zero"),
    "zero_diffraction": (_set("diffraction", np.zeros((16, N, N), np.float32)), "diffraction", "not all zero"),
    "negative_zero_diffraction": (
        _set("diffraction", np.full((16, N, N), -0.0, np.float32)), "diffraction", "not all zero"),
    "all_nan_diffraction": (_set("diffraction", np.full((16, N, N), np.nan, np.float32)), "diffraction", "NaN"),
    "all_inf_diffraction": (_set("diffraction", np.full((16, N, N), np.inf, np.float32)), "diffraction", "NaN"),
    "zero_object": (_set("objectGuess", np.zeros((256, 256), np.complex64)), "objectGuess", "not all zero"),
}

READERS = {"load_npz": load_npz, "inspect_file": inspect_file}


def _raises_naming(read, path, key, words):
    with pytest.raises(DataContractError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message and f"'{key}'" in message and words in message, message
    assert info.value.key == key
    return message


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(FILE_CASES))
def test_hostile_file_names_file_and_key(tmp_path, case, reader):
    build, key, words = FILE_CASES[case]
    path = tmp_path / f"{case}.npz"
    build(path, _arrays())
    tracemalloc.start()
    try:
        _raises_naming(READERS[reader], path, key, words)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6  # never allocated what a header declares


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_physically_empty_data_names_file_and_key(tmp_path, case):
    build, key, words = VALUE_CASES[case]
    path = tmp_path / f"{case}.npz"
    build(path, _arrays())
    _raises_naming(load_npz, path, key, words)


def _write_text(path):
    path.write_text("diffraction, probeGuess\n1, 2\n")


def _truncated(keep):
    """A valid NPZ cut to ``keep(size)`` bytes."""
    def build(path):
        np.savez(path, **_arrays())
        path.write_bytes(path.read_bytes()[: keep(path.stat().st_size)])
    return build


def _plain_npy(path):
    with open(path, "wb") as handle:
        np.save(handle, _arrays()["diffraction"])


WHOLE_FILE_CASES = {
    # id: (builder of `path`, words); no key can be named: the archive itself is unreadable
    "zero_length_file": (lambda path: path.write_bytes(b""), "0 bytes"),
    "text_file": (_write_text, "zip"),
    "truncated_to_half": (_truncated(lambda size: size // 2), "complete NPZ"),
    "truncated_to_30_bytes": (_truncated(lambda size: 30), "complete NPZ"),
    "central_directory_cut_off": (_truncated(lambda size: size - 40), "complete NPZ"),
    "zip_magic_then_garbage": (lambda path: path.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4), "complete NPZ"),
    "plain_npy_file": (_plain_npy, "NPZ"),
    "directory": (lambda path: path.mkdir(), "a directory"),
    "fifo": (lambda path: os.mkfifo(path), "FIFO"),
    "missing_file": (lambda path: None, "no such file"),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(WHOLE_FILE_CASES))
def test_unreadable_file_names_the_file(tmp_path, case, reader):
    build, words = WHOLE_FILE_CASES[case]
    path = tmp_path / f"{case}.npz"
    build(path)
    with pytest.raises(DataContractError) as info:
        READERS[reader](path)
    assert str(path) in str(info.value) and words in str(info.value), str(info.value)


def test_device_file_of_zero_length_names_it():
    with pytest.raises(DataContractError, match="/dev/null.*character device"):
        inspect_file("/dev/null")


def test_headers_are_read_without_loading_the_arrays(tmp_path):
    arrays = _arrays()
    arrays["diffraction"] = np.ones((4000, N, N), np.float32)  # 65 MB
    arrays["xcoords"], arrays["ycoords"] = np.arange(4000.0), np.arange(4000.0) % 7
    path = tmp_path / "big.npz"
    np.savez(path, **arrays)
    tracemalloc.start()
    try:
        headers = read_npz_headers(path)
        found = inspect_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2e6
    assert headers["diffraction"].shape == (4000, N, N) and headers["diffraction"].nbytes == 4000 * N * N * 4
    assert (found.n_images, found.N) == (4000, N) and found.xcoords.shape == (4000,)


def test_valid_unusual_encodings_still_load(tmp_path):
    """Big-endian, Fortran-ordered, float16 and compressed members are valid NPZ files."""
    arrays = _arrays()
    arrays["diffraction"] = np.asfortranarray(arrays["diffraction"].astype(">f2"))
    arrays["xcoords"] = arrays["xcoords"].astype(">i4")
    path = tmp_path / "unusual.npz"
    np.savez_compressed(path, **arrays)
    data = load_npz(path)
    assert data.diffraction.dtype == np.float32 and data.xcoords.dtype == np.float64
    assert inspect_file(path).n_images == 16


# --- the job's geometry and memory -------------------------------------------------------------

def _files(tmp_path, train_edit=None, test_edit=None, **kwargs):
    """(train, test) DatasetFiles of valid arrays after the optional edits."""
    found = []
    for name, edit in (("train", train_edit), ("test", test_edit)):
        arrays = _arrays(**kwargs)
        if edit:
            edit(arrays)
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        found.append(inspect_file(path))
    return found


def _specs(gridsize=2, neighbor_count=7, n_groups=8, n_images=None, batch_size=4, n_filters_scale=1, N=N):
    return {
        "grouping": GroupingSpec(gridsize=gridsize, neighbor_count=neighbor_count, n_groups=n_groups,
                                 n_images=n_images),
        "model_spec": ModelSpec(N=N, gridsize=gridsize, n_filters_scale=n_filters_scale),
        "train_spec": TrainSpec(max_epochs=1, batch_size=batch_size),
    }


def _check(files, budget_gb=4.0, do_stitching=True, **spec_kwargs):
    budget = MemoryBudget(int(budget_gb * GB), f"budget = {budget_gb}")
    return check_job(*files, **_specs(**spec_kwargs), do_stitching=do_stitching, budget=budget)


def _moved(key, index, value):
    def edit(arrays):
        arrays[key] = arrays[key].copy()
        arrays[key][index] = value
    return edit


def _same_position(count):
    def edit(arrays):
        for key in ("xcoords", "ycoords"):
            arrays[key] = arrays[key].copy()
            arrays[key][:count] = arrays[key][0]
    return edit


def test_a_valid_small_job_fits_and_its_canvas_is_the_jobs(tmp_path):
    train, test = _files(tmp_path)
    estimate = _check((train, test))
    spec, *_ = prepare_job_data(load_npz(train.path), load_npz(test.path), _specs()["grouping"], _specs()["model_spec"])
    assert estimate.model_canvas_px == spec.canvas_size
    assert 0 < estimate.peak_bytes < 1 * GB


def test_an_outlier_far_from_the_scan_is_refused_naming_it(tmp_path):
    train, test = _files(tmp_path, train_edit=_moved("xcoords", 5, 2e6))
    with pytest.raises(MemoryBudgetError) as info:
        _check((train, test))
    message = str(info.value)
    assert str(train.path) in message and "'xcoords'" in message and info.value.key == "xcoords"
    assert "#5 (x=2e+06, y=108)" in message and "GB" in message and "budget = 4.0" in message


def test_an_outlier_in_the_test_file_names_the_test_file(tmp_path):
    train, test = _files(tmp_path, test_edit=_moved("ycoords", 11, -3e6))
    with pytest.raises(MemoryBudgetError) as info:
        _check((train, test))
    message = str(info.value)
    assert str(test.path) in message and "'ycoords'" in message and "#11 (x=" in message
    assert "stitched canvas" in message


def test_finite_but_absurd_coordinates_end_in_the_budget_error_not_an_index_error(tmp_path):
    train, test = _files(tmp_path, train_edit=_moved("ycoords", 0, MAX_COORD_PX - 1.0))
    with pytest.raises(MemoryBudgetError, match=r"'ycoords'.*#0 \(x=100, y=1\.67772e\+07\)"):
        _check((train, test))


def test_an_outlier_within_a_group_makes_the_model_canvas_too_big(tmp_path):
    train, test = _files(tmp_path, test_edit=_moved("xcoords", 0, 1e5))
    with pytest.raises(MemoryBudgetError, match=r"test\.npz: key 'xcoords'.*model canvas.*#0 \(x=100000, y=100\)"):
        _check((train, test), do_stitching=False)


def test_a_scan_too_wide_without_outliers_says_it_spans(tmp_path):
    train, test = _files(tmp_path, step=2e5)
    with pytest.raises(MemoryBudgetError, match="spans") as info:
        _check((train, test), gridsize=1, neighbor_count=1)
    assert str(test.path) in str(info.value)


@pytest.mark.parametrize("which", ["train", "test"])
def test_all_positions_at_one_point_is_refused(tmp_path, which):
    edit = _same_position(16)
    train, test = _files(tmp_path, **{f"{which}_edit": edit})
    with pytest.raises(DataContractError, match="distinct") as info:
        _check((train, test), gridsize=1, neighbor_count=1)
    assert str(tmp_path / f"{which}.npz") in str(info.value) and info.value.key == "xcoords"


def test_duplicates_that_fill_a_neighbourhood_are_refused(tmp_path):
    train, test = _files(tmp_path, train_edit=_same_position(7))
    with pytest.raises(DataContractError, match=r"neighbor_count.*7 images at \(x=100, y=100\)") as info:
        _check((train, test))
    assert str(train.path) in str(info.value)


def test_fewer_duplicates_than_a_neighbourhood_are_accepted(tmp_path):
    train, test = _files(tmp_path, train_edit=_same_position(3))
    assert _check((train, test)).peak_bytes > 0


def test_test_frames_of_another_size_name_the_test_file(tmp_path):
    train = _files(tmp_path)[0]
    arrays = _arrays(N=128)
    np.savez(tmp_path / "test128.npz", **arrays)
    with pytest.raises(DataContractError, match="test128.npz: key 'diffraction'.*N = 64"):
        _check((train, inspect_file(tmp_path / "test128.npz")))


def test_an_absurd_network_width_is_refused_naming_it(tmp_path):
    with pytest.raises(MemoryBudgetError, match="n_filters_scale") as info:
        _check(_files(tmp_path), n_filters_scale=2048)
    assert info.value.key == "n_filters_scale"


def test_a_member_bigger_than_the_budget_names_file_and_key(tmp_path):
    train, test = _files(tmp_path)
    with pytest.raises(DataContractError, match=r"train\.npz: key 'diffraction'.*budget = 0\.0001") as info:
        _check((train, test), budget_gb=1e-4)
    assert info.value.key == "diffraction"


def test_the_default_budget_is_a_fraction_of_the_available_memory(monkeypatch):
    monkeypatch.setattr(preflight.psutil, "virtual_memory", lambda: SimpleNamespace(available=8 * GB))
    budget = MemoryBudget.of(None, "c1.memory_budget_gb")
    assert budget.bytes == int(preflight.DEFAULT_BUDGET_FRACTION * 8 * GB)
    assert "c1.memory_budget_gb" in budget.origin and "available" in budget.origin
    assert MemoryBudget.of(2.5, "c1.memory_budget_gb").bytes == int(2.5 * GB)


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf])
def test_an_impossible_budget_names_its_key(value):
    with pytest.raises(ValueError, match="c1.memory_budget_gb"):
        MemoryBudget.of(value, "c1.memory_budget_gb")


def test_the_inference_batch_is_the_largest_that_fits_the_budget(tmp_path):
    # inference does not reuse training's batch: it takes up to INFERENCE_BATCH_MAX groups, halved
    # until their forward activations fit beside the loaded and grouped data
    files = _files(tmp_path)
    specs = _specs()
    estimate = _check(files)
    per_group = preflight._activation_pixels(N, 4, 1) * preflight.FORWARD_BYTES
    data = estimate.loaded.bytes + estimate.grouped.bytes

    def batch(room):
        return preflight.inference_batch_size(estimate, MemoryBudget(data + room, "test"), specs["model_spec"])

    assert batch(10 * GB) == preflight.INFERENCE_BATCH_MAX
    assert batch(preflight.INFERENCE_BATCH_MAX * per_group) == preflight.INFERENCE_BATCH_MAX
    assert batch(preflight.INFERENCE_BATCH_MAX * per_group - 1) == preflight.INFERENCE_BATCH_MAX // 2
    assert batch(5 * per_group) == 4
    assert batch(0) == 1  # never below one group: the budget check itself is check_job's

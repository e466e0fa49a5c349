"""Debug bundle: JSON keys and values, sha1 reproducibility, PNGs, atomic replacement."""
import hashlib
import json

import numpy as np
import pytest
from matplotlib.image import imread

from ptycho.evaluation import bundle as bundle_module
from ptycho.evaluation.bundle import read_bundle_arrays, read_bundle_stats, stats_sha1, write_debug_bundle

N_PATCHES, N, M = 10, 16, 40
PNGS = {"patch_amplitude_grid.png", "patch_phase_grid.png", "canvas_amplitude.png",
        "canvas_phase.png", "loss_curve.png"}
JSONS = {"stats.json", "offsets.json", "canvas.json"}
FILES = JSONS | PNGS | {"arrays.npz"}


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    shape = (N_PATCHES, N, N)
    patches = (0.5 + rng.random(shape)) * np.exp(1j * rng.uniform(-3, 3, shape))
    offsets = rng.normal(0, 5, (N_PATCHES, 2))
    canvas = (0.5 + rng.random((M, M))) * np.exp(1j * rng.uniform(-3, 3, (M, M)))
    return patches.astype(np.complex64), offsets, canvas.astype(np.complex64)


@pytest.fixture(scope="module")
def mask():
    covered = np.zeros((M, M), bool)
    covered[5:30, 8:35] = True
    return covered


@pytest.fixture(scope="module")
def written(tmp_path_factory, arrays, mask):
    """One bundle with every optional input, shared by the read-only tests."""
    return _write(tmp_path_factory.mktemp("shared") / "b", arrays, intensity_scale=np.float32(12.5),
                  canvas_mask=mask, history={"loss": [3.0, 2.0], "val_loss": [3.5, 2.5]},
                  extra_stats={"quality": {"amp_mae": np.float32(0.5)}})


def _write(path, arrays, **kwargs):
    patches, offsets, canvas = arrays
    kwargs.setdefault("intensity_scale", 988.2)
    return write_debug_bundle(path, patches, offsets, canvas, **kwargs)


def _load(path, name):
    return json.loads((path / name).read_text())


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_bundle_files_and_exact_json_keys(written):
    out = written
    assert {p.name for p in out.iterdir()} == FILES
    stats = _load(out, "stats.json")
    assert set(stats) == {"patch_amplitude", "patch_phase", "canvas_amplitude", "canvas_phase",
                          "intensity_scale", "quality"}
    assert set(stats["patch_amplitude"]) == {"mean", "std", "min", "max", "var_zero_mean"}
    for key in ("patch_phase", "canvas_amplitude", "canvas_phase"):
        assert set(stats[key]) == {"mean", "std", "min", "max"}
    assert stats["quality"] == {"amp_mae": 0.5}
    offsets = _load(out, "offsets.json")
    assert set(offsets) == {"count", "first", "dx_mean", "dx_std", "dy_mean", "dy_std",
                            "centered_std"}
    assert set(offsets["first"][0]) == {"dx", "dy"}
    assert set(_load(out, "canvas.json")) == {"patch_size", "canvas_size", "num_patch_slots",
                                              "max_abs_dx", "max_abs_dy"}
    assert read_bundle_stats(out) == stats


def test_json_values_recomputed_from_arrays(written, arrays, mask):
    patches, offsets, canvas = arrays
    out = written
    stats = _load(out, "stats.json")
    amp = np.abs(patches).astype(np.float64)
    assert stats["patch_amplitude"]["mean"] == pytest.approx(amp.mean())
    assert stats["patch_amplitude"]["std"] == pytest.approx(amp.std())
    assert stats["patch_amplitude"]["max"] == pytest.approx(amp.max())
    var_zero_mean = np.mean((amp - amp.mean()) ** 2)
    assert stats["patch_amplitude"]["var_zero_mean"] == pytest.approx(var_zero_mean)
    assert stats["patch_phase"]["min"] == pytest.approx(np.angle(patches).min())
    covered = canvas[mask]
    assert stats["canvas_amplitude"]["mean"] == pytest.approx(np.abs(covered).mean())
    assert stats["canvas_amplitude"]["mean"] != pytest.approx(np.abs(canvas).mean(), abs=1e-9)
    assert stats["canvas_phase"]["std"] == pytest.approx(np.angle(covered).std())
    assert stats["intensity_scale"] == 12.5
    off = _load(out, "offsets.json")
    assert off["count"] == N_PATCHES and len(off["first"]) == 8
    assert off["first"][1] == {"dx": offsets[1, 0], "dy": offsets[1, 1]}
    assert off["dx_mean"] == pytest.approx(offsets[:, 0].mean())
    assert off["dy_std"] == pytest.approx(offsets[:, 1].std())
    centered = offsets - offsets.mean(axis=0)
    assert off["centered_std"] == pytest.approx(np.sqrt(np.mean(np.sum(centered**2, axis=1))))
    assert _load(out, "canvas.json") == {
        "patch_size": N, "canvas_size": M, "num_patch_slots": N_PATCHES,
        "max_abs_dx": np.abs(offsets[:, 0]).max(), "max_abs_dy": np.abs(offsets[:, 1]).max(),
    }


@pytest.mark.parametrize("chunk", [1, 3, N_PATCHES])
def test_patch_statistics_streamed_in_chunks_match_numpy(tmp_path, arrays, monkeypatch, chunk):
    # the patch statistics are accumulated STATS_CHUNK patches at a time (no float64 copy of all
    # patches); any chunking gives numpy's two-pass figures on the whole float64 array
    monkeypatch.setattr(bundle_module, "_write_figures", lambda *args: None)
    monkeypatch.setattr(bundle_module, "STATS_CHUNK", chunk)
    patches = arrays[0] * np.linspace(0.2, 3.0, N_PATCHES, dtype=np.float32)[:, None, None]  # chunks differ
    stats = _load(write_debug_bundle(tmp_path / "b", patches, *arrays[1:], intensity_scale=1.0), "stats.json")
    exact = patches.astype(np.complex128)
    for section, values in (("patch_amplitude", np.abs(exact)), ("patch_phase", np.angle(exact))):
        for name, expected in (("mean", values.mean()), ("std", values.std()), ("min", values.min()),
                               ("max", values.max())):
            assert stats[section][name] == pytest.approx(expected, rel=1e-12, abs=1e-14), (section, name)
    assert stats["patch_amplitude"]["var_zero_mean"] == pytest.approx(np.abs(exact).var(), rel=1e-12)


def test_stats_sha1_matches_hashlib_and_is_reproducible(tmp_path, arrays, monkeypatch):
    # stats.json never depends on the figures; skipping them keeps the test fast.
    monkeypatch.setattr(bundle_module, "_write_figures", lambda *args: None)
    first = _write(tmp_path / "one", arrays, history={"loss": [1.0]})
    second = _write(tmp_path / "two", arrays)
    expected = hashlib.sha1((first / "stats.json").read_bytes()).hexdigest()
    assert stats_sha1(first) == expected
    assert stats_sha1(second) == expected  # history does not enter stats.json
    patches, offsets, canvas = arrays
    write_debug_bundle(tmp_path / "three", patches * 2, offsets, canvas, intensity_scale=988.2)
    assert stats_sha1(tmp_path / "three") != expected


def test_the_drawn_arrays_are_kept_for_numeric_comparison(written, arrays, tmp_path):
    patches, _, canvas = arrays
    kept = read_bundle_arrays(written)
    np.testing.assert_array_equal(kept["patches"], patches[:16])
    np.testing.assert_array_equal(kept["canvas"], canvas)
    assert read_bundle_arrays(tmp_path) is None  # a bundle from another tool has none


def test_pngs_are_readable_images(written):
    for name in PNGS:
        image = imread(written / name)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300, name
        assert image[..., :3].std() > 0.01, f"{name} is blank"


def test_empty_history_still_gives_a_loss_figure(tmp_path, arrays):
    out = _write(tmp_path / "b", arrays, history={})
    assert imread(out / "loss_curve.png").shape[0] > 200


def test_existing_bundle_is_replaced(tmp_path, arrays):
    target = tmp_path / "b"
    target.mkdir()
    (target / "stale.txt").write_text("old run")
    _write(target, arrays)
    assert {p.name for p in target.iterdir()} == FILES
    assert _siblings(target) == ["b"]


def test_failure_mid_write_leaves_previous_bundle_and_no_temp(tmp_path, arrays, monkeypatch):
    target = tmp_path / "b"
    _write(target, arrays)
    before = stats_sha1(target)

    def broken(*args, **kwargs):
        raise RuntimeError("plotting crashed")

    monkeypatch.setattr(bundle_module.plots, "save_loss_curve", broken)
    patches, offsets, canvas = arrays
    with pytest.raises(RuntimeError, match="plotting crashed"):
        write_debug_bundle(target, patches * 3, offsets, canvas, intensity_scale=1.0)
    assert stats_sha1(target) == before
    assert _siblings(target) == ["b"]
    with pytest.raises(RuntimeError):
        _write(tmp_path / "fresh", arrays)
    assert _siblings(target) == ["b"]


@pytest.mark.parametrize("which", ["patches", "canvas", "offsets"])
def test_non_finite_input_rejected_naming_the_array(tmp_path, arrays, which):
    patches, offsets, canvas = (a.copy() for a in arrays)
    {"patches": patches, "canvas": canvas, "offsets": offsets}[which].flat[3] = np.nan
    with pytest.raises(ValueError, match=f"{which}.*NaN"):
        write_debug_bundle(tmp_path / "b", patches, offsets, canvas, intensity_scale=1.0)
    assert not (tmp_path / "b").exists() and _siblings(tmp_path / "b") == []


@pytest.mark.parametrize(
    "change, message",
    [
        ({"offsets": np.zeros((3, 2))}, "offsets_xy must be"),
        ({"patches": np.ones((4, N, N, 4))}, "patches must be"),
        ({"canvas": np.ones((M, M + 1))}, "canvas must be square"),
        ({"intensity_scale": 0.0}, "intensity_scale"),
        ({"intensity_scale": float("inf")}, "intensity_scale"),
        ({"canvas_mask": np.zeros((M, M), bool)}, "canvas_mask"),
        ({"extra_stats": {"patch_amplitude": {}}}, "clashes"),
        ({"history": {"loss": "abc"}}, "history"),
    ],
)
def test_inconsistent_input_raises_clear_error(tmp_path, arrays, change, message):
    patches, offsets, canvas = arrays
    args = {"patches": patches, "offsets": offsets, "canvas": canvas, "intensity_scale": 1.0}
    args.update(change)
    with pytest.raises(ValueError, match=message):
        write_debug_bundle(tmp_path / "b", args.pop("patches"), args.pop("offsets"),
                           args.pop("canvas"), **args)
    assert not (tmp_path / "b").exists()


def test_non_finite_extra_stats_become_null(tmp_path, arrays):
    out = _write(tmp_path / "b", arrays,
                 extra_stats={"history_final": {"loss": float("nan"), "epochs": np.int64(3)}})
    assert _load(out, "stats.json")["history_final"] == {"loss": None, "epochs": 3}


def test_reading_a_missing_bundle_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="stats.json"):
        stats_sha1(tmp_path / "nothing")

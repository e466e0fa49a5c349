"""Phase C2 comparison of two debug bundles (ptycho.evaluation.compare)."""
import json
import shutil

import numpy as np
import pytest
from matplotlib import image as mpimg

from ptycho.evaluation.bundle import write_debug_bundle
from ptycho.evaluation.compare import (
    BundleComparisonError,
    compare_bundles,
    compare_stats,
    comparison_figure,
    load_bundle_stats,
)


def make_arrays(seed, n=4, N=64, M=80):
    rng = np.random.default_rng(seed)
    patches = (0.5 + rng.random((n, N, N))) * np.exp(1j * rng.uniform(-1, 1, (n, N, N)))
    canvas = (0.5 + rng.random((M, M))) * np.exp(1j * rng.uniform(-1, 1, (M, M)))
    offsets = rng.normal(scale=3.0, size=(n, 2))
    return patches, offsets, canvas


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    patches, offsets, canvas = make_arrays(0)
    extra = {"quality": {"amp_ssim": 0.8, "phase_offset": 0.3}}
    tf_dir = write_debug_bundle(root / "tf", patches, offsets, canvas, intensity_scale=988.2,
                                extra_stats=extra)
    torch_dir = write_debug_bundle(root / "torch", patches * 1.02, offsets, canvas * 1.02,
                                   intensity_scale=988.2, extra_stats=extra)
    return tf_dir, torch_dir


def test_matching_bundles_get_a_green_verdict(bundles):
    result = compare_bundles(*bundles, labels=("tensorflow", "pytorch"))
    assert result.verdict == "GREEN" and not result.failures
    ratios = {s.name: s.ratio for s in result.statistics}
    assert ratios["patch_amplitude.mean"] == pytest.approx(1.02)
    assert ratios["patch_amplitude.var_zero_mean"] == pytest.approx(1.02**2)
    assert ratios["quality.amp_ssim"] == 1.0
    assert "quality.phase_offset" not in ratios  # a gauge freedom, ignored by default
    assert result.metrics()["canvas_amplitude.std.diff"] == pytest.approx(
        0.02 * load_bundle_stats(bundles[0])["canvas_amplitude"]["std"])
    json.dumps(result.to_dict())


def test_a_statistic_beyond_tolerance_turns_the_verdict_red(bundles):
    stats_a, stats_b = (load_bundle_stats(b) for b in bundles)
    stats_b["canvas_amplitude"]["mean"] *= 1.25
    result = compare_stats(stats_a, stats_b)
    assert result.verdict == "RED"
    assert [s.name for s in result.failures] == ["canvas_amplitude.mean"]
    assert compare_bundles(*bundles, tolerance=0.01).verdict == "RED"


def test_phase_statistics_also_pass_within_an_absolute_angle():
    """Two small angles 2.5% apart (0.0195 vs 0.0200 rad) agree to 0.5 mrad: with
    phase_atol_rad=1e-3 they pass; an amplitude 2.5% apart does not; a wider phase gap fails."""
    def stats(phase_max, amplitude_mean):
        patch = {"mean": amplitude_mean, "std": 1.0, "min": 1.0, "max": 1.0, "var_zero_mean": 1.0}
        return {"patch_amplitude": patch, "canvas_amplitude": {"mean": 1.0, "std": 1.0, "min": 1.0, "max": 1.0},
                "patch_phase": {"max": phase_max}}

    stats_a, close, far = stats(0.0195, 0.0195), stats(0.0200, 0.0195), stats(0.0215, 0.0200)
    assert compare_stats(stats_a, close, tolerance=0.01).verdict == "RED"
    with_angle = compare_stats(stats_a, close, tolerance=0.01, phase_atol_rad=1e-3)
    assert with_angle.verdict == "GREEN" and with_angle.to_dict()["phase_atol_rad"] == 1e-3
    failed = compare_stats(stats_a, far, tolerance=0.01, phase_atol_rad=1e-3).failures
    assert [s.name for s in failed] == ["patch_amplitude.mean", "patch_phase.max"]
    with pytest.raises(BundleComparisonError, match="phase_atol_rad"):
        compare_stats(stats_a, close, phase_atol_rad=-1)


def test_zero_and_null_statistics(bundles):
    stats = load_bundle_stats(bundles[0])
    a = {**stats, "extra": {"zero": 0.0, "broken": 1.0}}
    b = {**stats, "extra": {"zero": 0.0, "broken": None}, "only_b": {"x": 2}}
    result = compare_stats(a, b)
    rows = {s.name: s for s in result.statistics}
    assert rows["extra.zero"].passed and rows["extra.zero"].ratio == 1.0
    assert not rows["extra.broken"].passed and result.verdict == "RED"
    assert result.only_in_b == ("only_b.x",)


def test_missing_inputs_are_named(bundles, tmp_path):
    with pytest.raises(BundleComparisonError, match="stats.json"):
        compare_bundles(bundles[0], tmp_path)
    stats = load_bundle_stats(bundles[0])
    del stats["patch_amplitude"]["var_zero_mean"]
    with pytest.raises(BundleComparisonError, match=r"community.*patch_amplitude\.var_zero_mean"):
        compare_stats(load_bundle_stats(bundles[0]), stats, labels=("tf", "community"))


def test_figure_from_bundle_pngs_and_from_arrays(bundles, tmp_path):
    community = tmp_path / "community"
    community.mkdir()
    shutil.copy(bundles[1] / "stats.json", community / "stats.json")  # stats only, no PNGs
    from_pngs = comparison_figure(bundles[0], community, tmp_path / "c2.png")
    assert mpimg.imread(from_pngs).shape[0] > 400
    arrays = [dict(zip(("patches", "offsets", "canvas"), make_arrays(s))) for s in (0, 1)]
    from_arrays = comparison_figure(bundles[0], bundles[1], tmp_path / "c2_arrays.png",
                                    arrays_a=arrays[0], arrays_b=arrays[1])
    assert from_arrays.is_file()
    canvases = [{"canvas": arrays[i]["canvas"]} for i in (0, 1)]
    result = compare_bundles(*bundles)
    with_chart = comparison_figure(bundles[0], bundles[1], tmp_path / "c2_canvas.png",
                                   arrays_a=canvases[0], arrays_b=canvases[1], comparison=result)
    # Canvas amplitude and phase rows plus the ratio chart: 3 rows against 4.
    assert 4 * mpimg.imread(with_chart).shape[0] == 3 * mpimg.imread(from_arrays).shape[0]
    with pytest.raises(BundleComparisonError, match="share none"):
        comparison_figure(bundles[0], bundles[1], tmp_path / "x.png", arrays_a=canvases[0],
                          arrays_b={"patches": arrays[1]["patches"]})
    with pytest.raises(BundleComparisonError, match="both"):
        comparison_figure(bundles[0], bundles[1], tmp_path / "x.png", arrays_a=arrays[0])

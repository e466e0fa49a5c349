"""Bundle figures a scientist can read: own colour ranges, truth vs reconstruction, per-step loss."""
import numpy as np
import pytest
from matplotlib.image import imread

from ptycho.evaluation import bundle as bundle_module
from ptycho.evaluation import plots
from ptycho.evaluation.bundle import TRUTH_FIGURE, read_bundle_stats, stats_sha1, write_debug_bundle
from ptycho.evaluation.quality import reconstruction_quality

N, M = 32, 64
PHASE_RANGE_RAD = 0.05  # a learnt phase often spans a few hundredths of a radian


def small_phase_object(size, offset=0.0):
    """(size, size) complex: amplitude 0.7..1, phase a ramp over PHASE_RANGE_RAD plus ``offset``."""
    y, x = np.mgrid[:size, :size] / size
    return (0.7 + 0.3 * y) * np.exp(1j * (offset + PHASE_RANGE_RAD * x))


def image_area_variance(png, centre_xy_frac, half_px=40):
    """Pixel variance (summed over R, G, B) in a square around a point well inside the image."""
    image = imread(png)[..., :3]
    row = int(round((1 - centre_xy_frac[1]) * image.shape[0]))
    col = int(round(centre_xy_frac[0] * image.shape[1]))
    area = image[row - half_px:row + half_px, col - half_px:col + half_px]
    return float(area.reshape(-1, 3).var(axis=0).sum())


# Axes boxes (figure fractions) of plots._figure: left 0.14, bottom 0.13, top 0.88; right 0.8
# for the canvas, 1 - 1.3 in / 4.8 in for a one-patch grid. The image fills the box's middle.
CANVAS_CENTRE = ((0.14 + 0.8) / 2, (0.13 + 0.88) / 2)
GRID_CENTRE = ((0.14 + 1 - 1.3 / 4.8) / 2, (0.13 + 0.88) / 2)
CENTRES = {"canvas_phase.png": CANVAS_CENTRE, "canvas_amplitude.png": CANVAS_CENTRE,
           "patch_phase_grid.png": GRID_CENTRE}


def write(path, canvas, patches=None, **kwargs):
    patches = canvas[None, :N, :N] if patches is None else patches
    offsets = np.zeros((patches.shape[0], 2))
    return write_debug_bundle(path, patches, offsets, canvas, intensity_scale=1.0, **kwargs)


@pytest.mark.parametrize("offset", [0.0, np.pi - 0.02])  # the second one straddles the +-pi wrap
def test_small_range_phase_is_not_one_flat_colour(tmp_path, offset):
    out = write(tmp_path / "b", small_phase_object(M, offset))
    for name, centre in CENTRES.items():
        assert image_area_variance(out / name, centre) > 2e-3, name


def test_a_fixed_pi_scale_would_have_been_flat(tmp_path, monkeypatch):
    """The check above can fail: on the old +-pi scale the same phase is one colour."""
    monkeypatch.setattr(plots, "robust_limits", lambda values: (-np.pi, np.pi))
    out = write(tmp_path / "b", small_phase_object(M))
    for name in ("canvas_phase.png", "patch_phase_grid.png"):
        assert image_area_variance(out / name, CENTRES[name]) < 1e-4, name


def test_robust_limits_are_percentiles_and_never_collapse():
    values = np.linspace(0.0, 1.0, 10001)
    values[:5] = -50.0  # outliers below the 1st percentile do not stretch the scale
    low, high = plots.robust_limits(values)
    assert low == pytest.approx(0.01, abs=1e-3) and high == pytest.approx(0.99, abs=1e-3)
    low, high = plots.robust_limits(np.full(7, 0.3))
    assert low < 0.3 < high
    assert plots.robust_limits(np.array([np.nan])) == (0.0, 1.0)


def test_centred_phase_keeps_values_modulo_two_pi_and_joins_the_wrap():
    phase = np.array([np.pi - 0.01, -np.pi + 0.01, np.pi - 0.03])
    centred = plots.centred_phase(phase, np.ones(3, bool))
    np.testing.assert_allclose(np.exp(1j * centred), np.exp(1j * phase), atol=1e-12)
    assert np.ptp(centred) == pytest.approx(0.04)


def test_truth_figure_only_with_ground_truth_and_stats_unchanged(tmp_path):
    truth = small_phase_object(M)
    recon = 1.6 * truth * np.exp(1j * (0.8 + 0.02 * np.sin(np.arange(M) / 3)))
    covered = np.zeros((M, M), bool)
    covered[8:56, 4:60] = True
    with_truth = write(tmp_path / "with", recon, canvas_mask=covered, ground_truth=truth)
    without = write(tmp_path / "without", recon, canvas_mask=covered)
    assert (with_truth / TRUTH_FIGURE).is_file() and not (without / TRUTH_FIGURE).exists()
    image = imread(with_truth / TRUTH_FIGURE)
    assert image.shape[0] > 600 and image.shape[1] > 1000 and image[..., :3].std() > 0.05
    assert stats_sha1(with_truth) == stats_sha1(without)  # stats.json: same keys, same bytes
    assert set(read_bundle_stats(with_truth)) == {"patch_amplitude", "patch_phase", "canvas_amplitude",
                                                  "canvas_phase", "intensity_scale"}


def test_truth_rows_use_the_quality_fit_and_its_mae():
    rng = np.random.default_rng(1)
    truth = small_phase_object(M)
    recon = 2.5 * truth * np.exp(1j * 1.3) + 0.01 * rng.normal(size=(M, M))
    covered = np.zeros((M, M), bool)
    covered[10:50, 10:50] = True
    inside = np.ones((M, M), bool)
    inside[:, :20] = False
    rows, mask = bundle_module.truth_comparison_rows(recon, covered, truth, inside)
    np.testing.assert_array_equal(mask, covered & inside)
    metrics = reconstruction_quality(recon, truth, mask=mask)
    amp_truth, amp_recon, amp_error, amp_mae = rows["amplitude"]
    phase_truth, phase_recon, phase_error, phase_mae = rows["phase"]
    assert amp_mae == metrics["amp_mae"] and phase_mae == metrics["phase_mae"]
    assert np.mean(np.abs(amp_error[mask])) == pytest.approx(amp_mae)
    assert np.mean(np.abs(phase_error[mask])) == pytest.approx(phase_mae)
    # The global scale 2.5 and phase 1.3 are fitted away: only the noise is left.
    assert amp_mae < 0.01 and phase_mae < 0.02
    np.testing.assert_allclose(amp_recon[mask], amp_truth[mask], atol=0.05)
    np.testing.assert_allclose(phase_recon[mask], phase_truth[mask], atol=0.1)


@pytest.mark.parametrize("change, message", [
    ({"ground_truth": np.ones((M, M + 2), complex)}, "ground_truth must have the canvas shape"),
    ({"ground_truth": np.ones((M, M), complex), "ground_truth_mask": np.zeros((M, M), bool)},
     "does not overlap"),
    ({"ground_truth": np.ones((M, M), complex), "ground_truth_mask": np.ones((M, M))}, "ground_truth_mask"),
    ({"step_loss": [[1.0, 2.0]]}, "step_loss"),
])
def test_bad_truth_or_step_loss_raises_before_writing(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        write(tmp_path / "b", small_phase_object(M), **change)
    assert not (tmp_path / "b").exists()


def test_one_epoch_loss_curve_shows_the_steps(tmp_path):
    """One epoch gives one point per curve; the per-step curve is what shows the training."""
    history = {"loss": [-3.0012e6], "poisson_nll": [-3.0012e6]}
    steps = list(-3.0e6 - 1e3 * np.arange(5))
    with_steps = plots.save_loss_curve(tmp_path / "steps.png", history, steps)
    epoch_only = plots.save_loss_curve(tmp_path / "epochs.png", history)
    drawn, bare = imread(with_steps)[..., :3], imread(epoch_only)[..., :3]
    assert drawn.shape == bare.shape and np.abs(drawn - bare).sum() > 100
    only_steps = plots.save_loss_curve(tmp_path / "only.png", None, [0.5, 0.4, 0.3])
    assert imread(only_steps)[..., :3].std() > 0.01


def test_bundle_draws_the_step_loss(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(bundle_module.plots, "save_loss_curve",
                        lambda path, history, step_loss: drawn.update(history=history, steps=step_loss))
    write(tmp_path / "b", small_phase_object(M), history={"loss": [2.0]}, step_loss=[3.0, 1.0])
    np.testing.assert_array_equal(drawn["steps"], [3.0, 1.0])
    assert list(drawn["history"]) == ["loss"]

"""Phase C3 in the runner (``python -m runners.phase c3=iterative``): config, a GREEN run, a blocked one.

The runs are CLI subprocesses at a tiny size (16 test positions of a 64-position simulation,
3 L-BFGS epochs); hub, MLflow store, data cache and Hydra outputs stay in pytest's tmp folder.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from ptycho.evaluation import plots
from runners.schema import C3Init, IterativeEngine, PhaseKind, PositionSet, register_configs, to_spec

from ..png_checks import assert_figure, colour_fraction

pytestmark = pytest.mark.slow  # Phase C3 runner runs

REPO = Path(__file__).resolve().parents[2]
SLOT = "iterative_reference/phase_c3_iterative"
TITLE = "Phase C3 — iterative reference"
TINY = ["c3=iterative", "c3.epochs=3", "threads=2"]
SMALL_SIMULATION = "dataset.simulation.n_images=64"


def _compose(overrides):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "runners" / "conf"), version_base="1.3"):
        return compose("phase", overrides=list(overrides))


def _run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m runners.phase`` at the tiny size; the small simulation unless a dataset is chosen."""
    files = any(override.startswith("dataset=") for override in overrides)
    isolated = [f"hub.root={tmp_path / 'hub'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                f"dataset.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'outputs'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "runners.phase", *TINY, *([] if files else [SMALL_SIMULATION]),
                           *isolated, *overrides], cwd=tmp_path,
                          env=env, timeout=300, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _mlflow_run(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("FIX-PYTORCH-FORWARD-PARITY-001")
    (run,) = client.search_runs([experiment.experiment_id], "tags.phase = 'c3'")
    return client, run


def test_c3_composes_into_a_typed_phase():
    spec = to_spec(_compose(["c3=iterative"]))
    assert spec.phase is PhaseKind.c3 and spec.phase_settings is spec.c3
    assert (spec.c3.engine, spec.c3.positions, spec.c3.learning_rate) == (IterativeEngine.lbfgs, PositionSet.test, None)


@pytest.mark.parametrize("override, key", [("c3.epochs=0", "c3.epochs"), ("c3.learning_rate=-1", "c3.learning_rate"),
                                           ("c3.batch_size=0", "c3.batch_size"), ("c3.variant=a/b", "c3.variant")])
def test_an_impossible_value_names_its_key(override, key):
    with pytest.raises(ValueError, match=key):
        to_spec(_compose(["c3=iterative", override]))


def test_init_pinn_needs_a_network_and_flat_takes_none():
    assert to_spec(_compose(["c3=iterative"])).c3.init is C3Init.flat
    with pytest.raises(ValueError, match="c3.network: must be an MLflow run id, a hub slot or a folder"):
        to_spec(_compose(["c3=iterative", "c3.init=pinn"]))
    with pytest.raises(ValueError, match="c3.network: .* and empty with c3.init=flat"):
        to_spec(_compose(["c3=iterative", "c3.network=tf_baseline/phase_c1_scaled"]))
    spec = to_spec(_compose(["c3=iterative", "c3.init=pinn", "c3.network=tf_baseline/phase_c1_scaled"]))
    assert (spec.c3.init, spec.c3.network) == (C3Init.pinn, "tf_baseline/phase_c1_scaled")


def test_an_unknown_engine_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as caught:
        _compose(["c3=iterative", "c3.engine=epie"])
    assert "c3.engine" in str(caught.value.__cause__) and "lbfgs, adam" in str(caught.value.__cause__)


def test_a_green_run_leaves_c1s_evidence(tmp_path):
    done = _run(tmp_path)
    assert done.returncode == 0, done.stdout
    assert f"GREEN: {TITLE}" in done.stdout.strip().splitlines()[-1]
    assert "  quality         amp_mae " in done.stdout and "x the constant-object floor" in done.stdout
    slot = tmp_path / "hub" / SLOT
    bundle = slot / "analysis" / "forward_parity_debug_iterative"
    for name in ("stats.json", "offsets.json", "canvas.json"):
        assert (bundle / name).stat().st_size > 0, name
    stats = json.loads((bundle / "stats.json").read_text())
    _assert_figures_match_the_arrays(bundle, stats)
    quality = stats["quality"]
    assert quality["amp_mae_to_floor"] < 0.25 and quality["phase_mae_to_floor"] < 0.25
    assert stats["iterative"]["engine"] == "lbfgs" and stats["iterative"]["n_positions"] == 16
    assert json.loads((slot / "run_iterative" / "timings.json").read_text())["reconstruction_s"] > 0

    inventory = (tmp_path / "hub" / "analysis" / "artifact_inventory.txt").read_text()
    assert TITLE in inventory and "Status: GREEN" in inventory and "cdtools-py=" in inventory
    assert "positions=test" in inventory and "n_positions=16" in inventory
    assert f"`{SLOT}`" in (tmp_path / "hub" / "summary.md").read_text()
    cli_log = slot / "cli" / "reconstruct_iterative_phase_c3_iterative.log"
    assert cli_log.read_text().count("step: reconstruction") == 1
    assert not list((slot / "red").glob("*"))

    client, run = _mlflow_run(tmp_path)
    assert run.info.status == "FINISHED" and run.info.run_name == SLOT
    assert (run.data.tags["backend"], run.data.tags["status"], run.data.tags["engine"]) == ("cdtools", "GREEN", "lbfgs")
    assert run.data.tags["dataset.test_sha1"] in inventory  # the tag that sets it beside C1 runs of the same data
    assert run.data.metrics["quality.amp_mae"] == pytest.approx(quality["amp_mae"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1, 2]
    assert "bundle/stats.json" in {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}


def _assert_figures_match_the_arrays(bundle: Path, stats: dict) -> None:
    """The bundle's PNGs as images, sized as ptycho.evaluation.plots lays them out for the arrays in arrays.npz
    (the first 16 patches and the canvas), which agree with canvas.json and stats.json."""
    with np.load(bundle / "arrays.npz") as arrays:
        patches, canvas = arrays["patches"], arrays["canvas"]
    layout = json.loads((bundle / "canvas.json").read_text())
    assert patches.shape == (min(plots.GRID_MAX_PATCHES, layout["num_patch_slots"]),) + (layout["patch_size"],) * 2
    assert canvas.shape == (layout["canvas_size"],) * 2
    # stats.json's maximum is over the covered pixels; the canvas is zero outside them
    assert stats["canvas_amplitude"]["max"] == pytest.approx(float(np.abs(canvas).max()), rel=1e-6)
    cols = min(4, len(patches))
    rows = -(-len(patches) // cols)
    grid_in = (1.6 * max(cols, 2) + 1.6, 1.6 * max(rows, 2) + 0.9)
    sizes_in = {"patch_amplitude_grid.png": grid_in, "patch_phase_grid.png": grid_in,
                "canvas_amplitude.png": (5.2, 4.4), "canvas_phase.png": (5.2, 4.4),
                "truth_vs_reconstruction.png": (13.0, 8.0)}  # a row each for amplitude and phase
    for name, size_in in sizes_in.items():
        image = assert_figure(bundle / name, size_in, plots.DPI)
        # measured 0.14 to 0.52 of the pixels in colour; the colour bars alone fill about 0.03
        assert colour_fraction(image) > 0.1, (name, colour_fraction(image))
    assert_figure(bundle / "loss_curve.png", (6.4, 4.2), plots.DPI)


def test_bad_input_blocks_once(tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_text("not an npz")
    done = _run(tmp_path, "dataset=fly001", f"dataset.train_data_file={broken}", f"dataset.test_data_file={broken}")
    assert done.returncode == 1, done.stdout
    slot = tmp_path / "hub" / SLOT
    (blocker,) = (slot / "red").glob("blocked_*.md")
    assert done.stdout.strip().splitlines()[-1] == f"blocker: {blocker.relative_to(tmp_path)}"
    text = blocker.read_text()
    assert "Failed step: data" in text and "broken.npz" in text and "## Stack trace" in text
    inventory = (tmp_path / "hub" / "analysis" / "artifact_inventory.txt").read_text()
    assert "Status: BLOCKED (step: data" in inventory and str(blocker.relative_to(tmp_path)) in inventory
    assert not (slot / "analysis" / "forward_parity_debug_iterative").exists()
    _, run = _mlflow_run(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["status"] == "BLOCKED"
    assert run.info.run_name == f"{SLOT} [BLOCKED]" and run.data.tags["blocker"] == str(blocker.relative_to(tmp_path))


def test_positions_all_joins_both_files_and_needs_one_probe():
    from ptycho.data.contract import PtychoData
    from ptycho.data.simulate import SimulationSpec, simulate_dataset
    from runners.inputs.datasets import reference_data

    train, test = simulate_dataset(SimulationSpec(n_images=64, seed=0))
    joined = reference_data({"train": train, "test": test}, PositionSet.all)
    assert joined.n_images == 64 and joined.object_guess is train.object_guess
    assert set(joined.xcoords) == set(train.xcoords) | set(test.xcoords)
    assert reference_data({"test": test}, PositionSet.test) is test
    other = PtychoData(diffraction=test.diffraction, probe=test.probe * 2, xcoords=test.xcoords, ycoords=test.ycoords)
    with pytest.raises(ValueError, match="c3.positions=all"):
        reference_data({"train": train, "test": other}, PositionSet.all)

"""Phase C2 in the runner: TF-vs-PyTorch comparison of two bundles (no model training)."""
import json
from pathlib import Path

import numpy as np
import pytest

from ptycho.bundle import write_debug_bundle

from .conftest import _run_cli


def _bundle(folder: Path, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(0)
    patches = (1 + 0.1 * rng.random((4, 8, 8))) * np.exp(1j * 0.1 * rng.random((4, 8, 8)))
    canvas = (1 + 0.1 * rng.random((16, 16))) * np.exp(1j * 0.1 * rng.random((16, 16)))
    offsets = rng.random((4, 2)) * 4
    return write_debug_bundle(folder, patches * scale, offsets, canvas * scale, intensity_scale=1.0)


def _common(tmp_path: Path) -> list[str]:
    return [f"hub.root={tmp_path / 'hub'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.log_artifacts=true"]


def _inventory(tmp_path: Path) -> str:
    return (tmp_path / "hub" / "analysis" / "artifact_inventory.txt").read_text()


def test_matching_bundles_give_a_green_verdict(tmp_path):
    tf, torch = _bundle(tmp_path / "tf"), _bundle(tmp_path / "torch")
    done = _run_cli(["c2=tf_vs_torch", f"c2.tf_bundle={tf}", f"c2.torch_bundle={torch / 'stats.json'}",
                     *_common(tmp_path)], cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stdout
    analysis = tmp_path / "hub" / "tf_vs_torch" / "phase_c2" / "analysis"
    result = json.loads((analysis / "comparison.json").read_text())
    assert result["verdict"] == "GREEN" and not result["failures"]
    assert (analysis / "comparison.png").stat().st_size > 0
    inventory = _inventory(tmp_path)
    assert "Phase C2 — TF vs PyTorch comparison" in inventory and "Status: GREEN" in inventory

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("FIX-PYTORCH-FORWARD-PARITY-001").experiment_id],
                               "tags.phase = 'c2'")
    assert run.info.status == "FINISHED" and run.data.tags["verdict"] == "GREEN"
    assert run.data.metrics["patch_amplitude.mean.ratio"] == pytest.approx(1.0)


def test_a_statistic_beyond_tolerance_gives_red_and_exit_1(tmp_path):
    tf, torch = _bundle(tmp_path / "tf"), _bundle(tmp_path / "torch")
    stats = json.loads((torch / "stats.json").read_text())
    stats["patch_amplitude"]["mean"] *= 1.5
    (torch / "stats.json").write_text(json.dumps(stats))
    done = _run_cli(["c2=tf_vs_torch", f"c2.tf_bundle={tf}", f"c2.torch_bundle={torch}", *_common(tmp_path)],
                    cwd=tmp_path, timeout=180)
    assert done.returncode == 1, done.stdout
    assert "verdict RED" in done.stdout and "patch_amplitude.mean" in done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith("blocker: ")
    inventory = _inventory(tmp_path)
    assert "Status: BLOCKED" in inventory and "patch_amplitude.mean" in inventory
    assert list((tmp_path / "hub" / "tf_vs_torch" / "phase_c2" / "red").glob("blocked_*.md"))


def test_a_missing_bundle_is_named(tmp_path):
    tf = _bundle(tmp_path / "tf")
    done = _run_cli(["c2=tf_vs_torch", f"c2.tf_bundle={tf}", f"c2.torch_bundle={tmp_path / 'nowhere'}",
                     *_common(tmp_path)], cwd=tmp_path, timeout=180)
    assert done.returncode == 1
    assert "c2.torch_bundle" in done.stdout and "nowhere" in done.stdout


def test_c2_finds_the_green_runs_of_a_parity_key_in_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    hub_root = tmp_path / "hub"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # artifacts in tmp (the default location would be ./mlruns of the test process)
    experiment = client.create_experiment("FIX-PYTORCH-FORWARD-PARITY-001",
                                          artifact_location=(tmp_path / "artifacts").as_uri())
    for backend, tag in (("tensorflow", "tf"), ("pytorch", "torch")):
        slot = f"{tag}_baseline/phase_c1_scaled"
        _bundle(hub_root / slot / "analysis" / f"forward_parity_debug_{tag}")
        run = client.create_run(experiment, run_name=slot, tags={
            "backend": backend, "phase": "c1", "status": "GREEN", "guard_status": "GREEN",
            "parity_key": "k123", "slot": slot})
        client.log_param(run.info.run_id, "hub.root", str(hub_root))
        client.log_param(run.info.run_id, "backend.tag", tag)
        client.set_terminated(run.info.run_id, "FINISHED")
    done = _run_cli(["c2=tf_vs_torch", *_common(tmp_path)], cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stdout
    result = json.loads((hub_root / "tf_vs_torch" / "phase_c2" / "analysis" / "comparison.json").read_text())
    assert result["verdict"] == "GREEN" and result["parity_key"] == "k123"
    assert result["tf_run_id"] and result["torch_run_id"]
    [c2_run] = client.search_runs([experiment], "tags.phase = 'c2'")
    assert c2_run.data.tags["parity_key"] == "k123"
    assert c2_run.data.tags["tf_run_id"] == result["tf_run_id"]

    missing = _run_cli(["c2=tf_vs_torch", "c2.parity_key=other", *_common(tmp_path)], cwd=tmp_path, timeout=180)
    assert missing.returncode == 1 and "parity_key other" in missing.stdout

"""Reconstruct with a trained network (``python -m runners.phase reconstruct=trained reconstruct.network=...``).

One folder for the module (hub, MLflow store, dataset cache): C1 trains once per backend at the scaled
size (96 simulated positions, a one-test guard), then the network is found by its run folder, its hub
slot and its MLflow run id and applied to the same test split (the C1 run's own stitched object,
number for number) and to data simulated with another seed; fake cards (another N, another gridsize)
and a missing weights file are refused with the mismatch named, not a stack trace.
"""
import json
import shutil

import numpy as np
import pytest

from runners.schema import PhaseKind, to_spec

SMALL = ["dataset.simulation.n_images=96", "threads=2", "xla=off"]
OTHER_SEED = "dataset.simulation.seed=1"
TF_SLOT, TORCH_SLOT = "tf_baseline/phase_c1_scaled", "torch_baseline/phase_c1_scaled"
TF_RECONSTRUCTION, TORCH_RECONSTRUCTION = "tf_reconstruct/phase_reconstruct_trained", \
    "torch_reconstruct/phase_reconstruct_trained"


def test_reconstruct_trained_composes_into_a_typed_phase(compose_phase):
    spec = to_spec(compose_phase(["reconstruct=trained", "reconstruct.network=tf_baseline/phase_c1_scaled"]))
    assert spec.phase is PhaseKind.reconstruct and spec.phase_settings.network == "tf_baseline/phase_c1_scaled"


def test_a_missing_network_names_its_key(compose_phase):
    with pytest.raises(ValueError, match="reconstruct.network"):
        to_spec(compose_phase(["reconstruct=trained"]))


class Folder:
    """The module's launch folder: every run's hub, MLflow store, dataset cache and Hydra outputs."""

    def __init__(self, path, run_cli, guard):
        self.path, self.run_cli, self.guard, self.count = path, run_cli, guard, 0

    def run(self, *args):
        self.count += 1
        isolated = [f"hub.root={self.path / 'hub'}", f"tracking.uri=sqlite:///{self.path / 'mlflow.db'}",
                    f"dataset.cache_dir={self.path / 'cache'}",
                    f"hydra.run.dir={self.path / 'outputs' / str(self.count)}"]
        return self.run_cli([*args, *SMALL, *isolated], cwd=self.path, timeout=300)

    def reconstruct(self, network, *args):
        return self.run("reconstruct=trained", f"reconstruct.network={network}", *args)

    def run_id(self, slot):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{self.path / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("FIX-PYTORCH-FORWARD-PARITY-001")
        runs = client.search_runs([experiment.experiment_id], f"tags.slot = '{slot}'",
                                  order_by=["attributes.start_time DESC"])
        return client, runs[0]

    def canvas(self, slot, run="run_scaled"):
        with np.load(self.path / "hub" / slot / run / "reconstruction.npz") as saved:
            return {key: saved[key] for key in saved.files}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, run_cli, write_guard):
    path = tmp_path_factory.mktemp("reconstruct")
    return Folder(path, run_cli, write_guard(path, True))


@pytest.fixture(scope="module")
def tf_trained(folder):
    done = folder.run("c1=scaled", f"guard.selector={folder.guard}")
    assert done.returncode == 0, done.stdout[-3000:]
    return folder


@pytest.fixture(scope="module")
def torch_trained(folder):
    done = folder.run("c1=scaled", "backend=pytorch", f"guard.selector={folder.guard}")
    assert done.returncode == 0, done.stdout[-3000:]
    return folder


def _green(done, title):
    assert done.returncode == 0, done.stdout[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(f"GREEN: Reconstruction — {title} trained network; stats.json sha1 "), last


@pytest.mark.slow
def test_c1_leaves_a_network_card_beside_its_weights_and_logs_the_network(tf_trained):
    run_dir = tf_trained.path / "hub" / TF_SLOT / "run_scaled"
    card = json.loads((run_dir / "network.json").read_text())
    assert (card["backend"], card["weights"], card["N"], card["gridsize"]) == ("tensorflow", "model.weights.h5", 64, 2)
    assert card["model_spec"]["intensity_scale"] > 0 and card["training_data"]["nphotons"] > 0
    assert np.load(run_dir / "probe.npy").shape == (64, 64)
    client, run = tf_trained.run_id(TF_SLOT)
    assert card["provenance"]["mlflow_run_id"] == run.info.run_id and card["provenance"]["code_state"]
    logged = {item.path for item in client.list_artifacts(run.info.run_id, "network")}
    assert {"network/network.json", "network/model.weights.h5", "network/probe.npy", "network/model_spec.json",
            "network/history.json"} <= logged


@pytest.mark.slow
def test_by_path_on_its_own_test_split_gives_the_c1_runs_stitched_object(tf_trained):
    done = tf_trained.reconstruct(f"hub/{TF_SLOT}/run_scaled")
    _green(done, "TF")
    assert "  quality         amp_mae " in done.stdout and "x the constant-object floor" in done.stdout
    mine, c1 = tf_trained.canvas(TF_RECONSTRUCTION, "run_trained"), tf_trained.canvas(TF_SLOT)
    np.testing.assert_array_equal(mine["canvas"], c1["canvas"])
    np.testing.assert_array_equal(mine["centre_xy"], c1["centre_xy"])
    np.testing.assert_array_equal(mine["origin_xy"], c1["centre_xy"] - c1["canvas"].shape[0] // 2)
    assert np.isnan(mine["pixel_size_m"])  # positions in object pixels: the size in metres is unknown


@pytest.mark.slow
def test_by_hub_slot_on_another_scan_is_green_with_quality(tf_trained):
    done = tf_trained.reconstruct(TF_SLOT, OTHER_SEED)
    _green(done, "TF")
    client, run = tf_trained.run_id(TF_RECONSTRUCTION)
    _, c1 = tf_trained.run_id(TF_SLOT)
    assert run.data.tags["network.run_id"] == c1.info.run_id and run.data.tags["phase"] == "reconstruct"
    assert run.data.metrics["quality.amp_mae"] > 0 and np.isfinite(run.data.metrics["quality.phase_mae"])
    section = (tf_trained.path / "hub" / "analysis" / "artifact_inventory.txt").read_text()
    assert f"Slot: {TF_RECONSTRUCTION}" in section and "network=tf_baseline/phase_c1_scaled" in section
    stats = json.loads((tf_trained.path / "hub" / TF_RECONSTRUCTION / "analysis" / "forward_parity_debug_tf"
                        / "stats.json").read_text())
    assert stats["network"]["backend"] == "tensorflow" and stats["quality"]["amp_mae"] > 0


@pytest.mark.slow
def test_by_mlflow_run_id_on_another_scan_on_pytorch(torch_trained):
    _, c1 = torch_trained.run_id(TORCH_SLOT)
    done = torch_trained.reconstruct(c1.info.run_id, OTHER_SEED)
    _green(done, "PyTorch")
    assert "(pytorch, N=64, gridsize=2)" in done.stdout and "  quality         amp_mae " in done.stdout
    _, run = torch_trained.run_id(TORCH_RECONSTRUCTION)
    assert run.data.tags["backend"] == "pytorch" and run.data.tags["network.run_id"] == c1.info.run_id


@pytest.mark.slow
def test_pytorch_on_its_own_test_split_gives_the_c1_runs_stitched_object(torch_trained):
    _green(torch_trained.reconstruct(TORCH_SLOT), "PyTorch")
    mine, c1 = torch_trained.canvas(TORCH_RECONSTRUCTION, "run_trained"), torch_trained.canvas(TORCH_SLOT)
    np.testing.assert_array_equal(mine["canvas"], c1["canvas"])


@pytest.mark.slow
@pytest.mark.parametrize("network, says", [
    ("0123456789abcdef0123456789abcdef", "no MLflow run 0123456789abcdef0123456789abcdef"),
    ("tf_baseline/phase_c1_absent", "names no network"),
    ("no/such/folder", "names no network"),
])
def test_an_unknown_network_is_a_config_error_naming_the_key(folder, network, says):
    done = folder.reconstruct(network)
    assert done.returncode == 1 and "reconstruct.network" in done.stdout and says in done.stdout, done.stdout[-2000:]
    assert "Traceback" not in done.stdout


@pytest.mark.slow
def test_an_explicit_backend_other_than_the_networks_is_a_config_error(tf_trained):
    done = tf_trained.reconstruct(TF_SLOT, "backend=pytorch")
    assert done.returncode == 1 and "the network was trained on tensorflow, but backend=pytorch" in done.stdout


def _fake(folder, name, **changes):
    """A copy of the PyTorch network in ``folder/name`` with its model_spec (and the card's N, gridsize) changed."""
    source = folder.path / "hub" / TORCH_SLOT / "run_scaled"
    target = folder.path / name
    shutil.copytree(source, target)
    card = json.loads((target / "network.json").read_text())
    card.update({key: value for key, value in changes.items() if key in card})
    card["model_spec"].update(changes)
    (target / "network.json").write_text(json.dumps(card))
    return target


@pytest.mark.slow
def test_a_missing_weights_file_is_named(torch_trained):
    target = _fake(torch_trained, "no_weights")
    (target / "model.pt").unlink()
    done = torch_trained.reconstruct("no_weights")
    assert done.returncode == 1 and "model.pt: the network's weights file is missing" in done.stdout
    assert "Traceback" not in done.stdout


@pytest.mark.slow
def test_a_network_of_another_n_blocks_naming_both(torch_trained):
    target = _fake(torch_trained, "n128", N=128, canvas_size=172)
    np.save(target / "probe.npy", np.ones((128, 128), np.complex64))
    done = torch_trained.reconstruct("n128")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "patterns of N=64 px, but the network was trained on N=128" in done.stdout
    assert "blocker: " in done.stdout.strip().splitlines()[-1] and "Traceback" not in done.stdout


@pytest.mark.slow
def test_a_network_of_another_gridsize_blocks_naming_its_weights(torch_trained):
    _fake(torch_trained, "gs1", gridsize=1)
    done = torch_trained.reconstruct("gs1")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "the weights do not load into the network its card describes (N=64, gridsize=1" in done.stdout
    assert "Traceback" not in done.stdout


def _section(folder, slot):
    """The slot's section of the hub's inventory (the last one written)."""
    inventory = (folder.path / "hub" / "analysis" / "artifact_inventory.txt").read_text()
    return inventory[inventory.rindex(f"Slot: {slot}"):]


@pytest.mark.slow
@pytest.mark.parametrize("data, says", [
    ("dataset.simulation.amplitude_range=[1.5,3]", "photon scale: the data's mean frame energy is "),  # about 9x
    ("dataset.simulation.probe_kind=disk", "probe: the data's probe differs from the network's by "),
])
def test_data_far_from_the_training_data_warn_in_the_closing_block_and_the_section(torch_trained, data, says):
    done = torch_trained.reconstruct(TORCH_SLOT, data)
    _green(done, "PyTorch")
    assert f"  WARNING         {says}" in done.stdout, done.stdout[-3000:]
    assert f"Quality warning: {says}" in _section(torch_trained, TORCH_RECONSTRUCTION)
    _, run = torch_trained.run_id(TORCH_RECONSTRUCTION)
    assert says in run.data.tags["network_warning"]


# Phase C3 started from a trained network's object (c3.init=pinn): here for the networks trained above
C3_SLOT = "iterative_reference/phase_c3_iterative"
C3_TINY = ["c3=iterative", "c3.epochs=2", "c3.init=pinn"]


@pytest.mark.slow
@pytest.mark.parametrize("trained, backend", [("torch_trained", "pytorch"), ("tf_trained", "tensorflow")])
def test_c3_from_the_networks_object_is_green_and_records_its_network(request, trained, backend):
    trained = request.getfixturevalue(trained)
    slot = TORCH_SLOT if backend == "pytorch" else TF_SLOT
    done = trained.run(*C3_TINY, f"c3.network={slot}", OTHER_SEED)
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("GREEN: Phase C3 — iterative reference")
    assert f"  initial guess   network hub/{slot}/run_scaled ({backend}, N=64, gridsize=2)" in done.stdout
    assert "  network alone   amp_mae " in done.stdout and "  total           " in done.stdout
    _, c1 = trained.run_id(slot)
    _, run = trained.run_id(C3_SLOT)
    assert (run.data.tags["init"], run.data.tags["network.run_id"], run.data.tags["network.slot"]) == \
        ("pinn", c1.info.run_id, slot)
    assert run.data.metrics["timing.pinn_s"] > 0 and run.data.metrics["timing.reconstruction_s"] > 0
    assert run.data.metrics["timing.total_s"] == pytest.approx(run.data.metrics["timing.pinn_s"]
                                                               + run.data.metrics["timing.reconstruction_s"])
    assert run.data.metrics["pinn.quality.amp_mae"] > 0 and run.data.metrics["quality.amp_mae"] > 0
    section = _section(trained, C3_SLOT)
    assert "init=pinn" in section and f"network={slot}" in section and f"network_run_id={c1.info.run_id}" in section
    run_dir = trained.path / "hub" / C3_SLOT / "run_iterative"
    timings = json.loads((run_dir / "timings.json").read_text())
    assert timings["pinn_s"] > 0 and set(timings["pinn_steps_s"]) >= {"load", "inference", "stitching"}
    assert (run_dir / "pinn" / "reconstruction.npz").is_file() and (run_dir / "pinn" / "network.json").is_file()
    stats = json.loads((trained.path / "hub" / C3_SLOT / "analysis" / "forward_parity_debug_iterative"
                        / "stats.json").read_text())
    assert stats["iterative"]["init"] == "pinn" and stats["iterative"]["network_quality"]["amp_mae"] > 0


@pytest.mark.slow
def test_c3_from_a_network_that_cannot_serve_the_data_blocks_naming_the_mismatch(torch_trained):
    target = _fake(torch_trained, "n128_c3", N=128, canvas_size=172)
    np.save(target / "probe.npy", np.ones((128, 128), np.complex64))
    done = torch_trained.run(*C3_TINY, "c3.network=n128_c3")
    assert done.returncode == 1, done.stdout[-2000:]
    assert "patterns of N=64 px, but the network was trained on N=128" in done.stdout
    assert "blocker: " in done.stdout.strip().splitlines()[-1] and "Traceback" not in done.stdout


@pytest.mark.slow
def test_c3_with_an_unknown_network_is_a_config_error_naming_c3_network(folder):
    done = folder.run(*C3_TINY, "c3.network=no/such/folder")
    assert done.returncode == 1 and "c3.network: 'no/such/folder' names no network" in done.stdout, done.stdout[-2000:]

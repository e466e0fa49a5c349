"""Phase C2 in the runner: TF-vs-PyTorch comparison of two bundles (no model training)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from ptycho.evaluation.bundle import write_debug_bundle
from runners.evidence import hub

from ..png_checks import assert_comparison_figure
from .conftest import _run_cli

pytestmark = pytest.mark.slow  # C1 and C2 runner runs


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
    assert result["figure_from"] == "arrays.npz"  # numbers subtracted, not pictures
    assert_comparison_figure(analysis)
    inventory = _inventory(tmp_path)
    assert "Phase C2 — TF vs PyTorch comparison" in inventory and "Status: GREEN" in inventory

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("FIX-PYTORCH-FORWARD-PARITY-001").experiment_id],
                               "tags.phase = 'c2'")
    assert run.info.status == "FINISHED" and run.data.tags["verdict"] == "GREEN"
    assert run.data.metrics["patch_amplitude.mean.ratio"] == pytest.approx(1.0)
    # the run list answers "do they agree?"; the section names what it holds (issue 10)
    assert run.data.metrics["parity.worst_rel_diff"] == pytest.approx(0.0)
    assert run.data.metrics["parity.n_outside_tolerance"] == 0 and run.data.metrics["parity.n_compared"] > 9
    assert "blocker" not in run.data.tags and all(value != "" for value in run.data.tags.values())
    section = hub.read_section(inventory, "tf_vs_torch/phase_c2")
    fields = dict(line.split(": ", 1) for line in section.splitlines()[1:])
    sha1 = hashlib.sha1((analysis / "comparison.json").read_bytes()).hexdigest()
    assert fields["comparison.json sha1"] == sha1 and "stats.json sha1" not in fields and "Dataset" not in fields
    assert fields["Inputs"] == "tf_bundle=tf torch_bundle=torch/stats.json"
    assert "parity_key=- " in fields["Parameters"]  # explicit bundles: no key was looked up
    assert fields["CLI log"] == "hub/tf_vs_torch/phase_c2/cli/compare_tf_vs_torch_phase_c2_tf_vs_torch.log"


def test_a_statistic_beyond_tolerance_gives_red_and_exit_1(tmp_path):
    """The PyTorch side is a bare stats.json written elsewhere (the community's pipeline)."""
    tf, torch = _bundle(tmp_path / "tf"), _bundle(tmp_path / "torch")
    stats = json.loads((torch / "stats.json").read_text())
    stats["patch_amplitude"]["mean"] *= 1.5
    community = tmp_path / "community" / "stats.json"
    community.parent.mkdir()
    community.write_text(json.dumps(stats))
    done = _run_cli(["c2=tf_vs_torch", f"c2.tf_bundle={tf}", f"c2.torch_bundle={community}", *_common(tmp_path)],
                    cwd=tmp_path, timeout=180)
    assert done.returncode == 1, done.stdout
    analysis = tmp_path / "hub" / "tf_vs_torch" / "phase_c2" / "analysis"
    assert json.loads((analysis / "comparison.json").read_text())["figure_from"] == "rendered PNGs"
    assert_comparison_figure(analysis)
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


EXPERIMENT = "FIX-PYTORCH-FORWARD-PARITY-001"
BACKEND_TAGS = {"tensorflow": "tf", "pytorch": "torch"}


class FakeStore:
    """A throwaway sqlite MLflow store with C1-like runs (tags and params as the runner writes them)."""

    def __init__(self, tmp_path: Path):
        from mlflow.tracking import MlflowClient

        self.hub_root = tmp_path / "hub"
        self.client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        self.experiment = self.client.create_experiment(EXPERIMENT, artifact_location=(tmp_path / "art").as_uri())
        self.clock_ms = 1_700_000_000_000

    def sweep_parent(self, tags=None) -> str:
        self.clock_ms += 1000
        run = self.client.create_run(self.experiment, start_time=self.clock_ms, run_name="sweep: ...",
                                     tags=tags if tags is not None else {"sweep": "parent"})
        return run.info.run_id

    def c1_run(self, backend, key, swept="", parent=None, bundle_scale=None) -> str:
        """A FINISHED green C1 run; ``swept`` e.g. 'gridsize=1' (a sweep adds backend= to the slot)."""
        tag = BACKEND_TAGS[backend]
        suffix = ",".join(filter(None, [f"backend={backend}" if parent else "", swept]))
        slot = f"{tag}_baseline/phase_c1_scaled" + (f"__{suffix}" if suffix else "")
        if bundle_scale is not None:
            _bundle(self.hub_root / slot / "analysis" / f"forward_parity_debug_{tag}", bundle_scale)
        tags = {"backend": backend, "phase": "c1", "status": "GREEN", "guard_status": "GREEN",
                "parity_key": key, "slot": slot}
        if parent:
            tags["mlflow.parentRunId"] = parent
        self.clock_ms += 1000
        run = self.client.create_run(self.experiment, start_time=self.clock_ms, run_name=slot, tags=tags)
        self.client.log_param(run.info.run_id, "hub.root", str(self.hub_root))
        self.client.log_param(run.info.run_id, "backend.tag", tag)
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def pair(self, key, swept="", parent=None, torch_scale=None, tf_scale=None) -> tuple[str, str]:
        return (self.c1_run("tensorflow", key, swept, parent, tf_scale),
                self.c1_run("pytorch", key, swept, parent, torch_scale))

    def select(self, parity_key=None):
        from runners.phases.c2_inputs import select_pairs

        pairs, parent = select_pairs(self.client, self.experiment, parity_key, "the fake store")
        return [pair.parity_key for pair in pairs], parent


def test_the_newest_pair_from_a_sweep_brings_every_complete_pair_of_that_sweep(tmp_path):
    store = FakeStore(tmp_path)
    store.pair("k_alone")                                  # older, outside any sweep
    old_sweep = store.sweep_parent()
    store.pair("k_old_sweep", "gridsize=3", old_sweep)
    sweep = store.sweep_parent()
    store.pair("k_gs2", "gridsize=2", sweep)
    store.pair("k_gs1", "gridsize=1", sweep)
    store.c1_run("tensorflow", "k_tf_only", "gridsize=4", sweep)  # incomplete: no PyTorch run
    assert store.select() == (["k_gs1", "k_gs2"], sweep)  # sorted by TF slot


def test_a_newer_sweep_takes_only_the_keys_whose_newest_runs_are_its_own(tmp_path):
    store = FakeStore(tmp_path)
    first = store.sweep_parent()
    store.pair("k_gs1", "gridsize=1", first)
    store.pair("k_gs2", "gridsize=2", first)
    second = store.sweep_parent()
    store.pair("k_gs1", "gridsize=1", second)
    assert store.select() == (["k_gs1"], second)


def test_a_newest_pair_outside_a_sweep_is_compared_alone(tmp_path):
    store = FakeStore(tmp_path)
    sweep = store.sweep_parent()
    store.pair("k_gs1", "gridsize=1", sweep)
    store.pair("k_gs2", "gridsize=2", sweep)
    store.pair("k_alone")
    assert store.select() == (["k_alone"], None)


def test_an_explicit_parity_key_selects_only_its_pair_even_inside_a_sweep(tmp_path):
    store = FakeStore(tmp_path)
    sweep = store.sweep_parent()
    store.pair("k_gs1", "gridsize=1", sweep)
    store.pair("k_gs2", "gridsize=2", sweep)
    assert store.select("k_gs1") == (["k_gs1"], None)


def test_runs_of_two_sweeps_or_of_a_parent_that_is_no_sweep_are_not_grouped(tmp_path):
    store = FakeStore(tmp_path)
    first, second = store.sweep_parent(), store.sweep_parent()
    store.pair("k_gs2", "gridsize=2", first)
    store.c1_run("tensorflow", "k_gs1", "gridsize=1", first)
    store.c1_run("pytorch", "k_gs1", "gridsize=1", second)  # newest pair: TF and PyTorch in different sweeps
    assert store.select() == (["k_gs1"], None)
    other = store.sweep_parent(tags={"purpose": "not a sweep"})
    store.pair("k_a", "gridsize=1", other)
    store.pair("k_b", "gridsize=2", other)
    assert store.select() == (["k_b"], None)


def test_no_complete_pair_names_the_missing_backend(tmp_path):
    from runners.phases.c2_inputs import C2InputError

    store = FakeStore(tmp_path)
    store.c1_run("tensorflow", "k1")
    with pytest.raises(C2InputError, match="no FINISHED green pytorch C1 run"):
        store.select()


def test_an_unknown_parity_key_lists_the_keys_that_have_both_backends(tmp_path):
    from runners.phases.c2_inputs import C2InputError

    store = FakeStore(tmp_path)
    store.pair("k_both", "gridsize=1", None)
    store.c1_run("tensorflow", "k_tf_only")
    with pytest.raises(C2InputError, match=r"parity_key k_typo .*keys with both backends: \['k_both'\]"):
        store.select("k_typo")


def _plan(tmp_path, compose_phase, *overrides):
    from runners.phases.c2 import plan_comparisons
    from runners.job import JobContext
    from runners.schema import to_spec

    spec = to_spec(compose_phase(["c2=tf_vs_torch", *_common(tmp_path), *overrides]))
    job = JobContext(launch_dir=tmp_path, output_dir=tmp_path / "out", overrides=(), job_num=0,
                     sweep_dir=None, sweep=None, parent=None)
    return [(c.slot.name, c.selection) for c in plan_comparisons(spec, job)]


def test_slots_of_sweep_pairs_carry_the_sweep_suffix_without_backend(tmp_path, compose_phase):
    store = FakeStore(tmp_path)
    sweep = store.sweep_parent()
    store.pair("k_gs1", "gridsize=1", sweep)
    store.pair("k_gs2", "gridsize=2", sweep)
    assert _plan(tmp_path, compose_phase) == [(f"tf_vs_torch/phase_c2__gridsize={g}", f"sweep {sweep}")
                                              for g in (1, 2)]
    assert _plan(tmp_path, compose_phase, "c2.parity_key=k_gs2") == [("tf_vs_torch/phase_c2__key=k_gs2", "k_gs2")]
    backend_only = store.sweep_parent()
    store.pair("0123456789abcdef", "", backend_only)  # -m backend=tensorflow,pytorch: nothing else swept
    assert _plan(tmp_path, compose_phase) == [("tf_vs_torch/phase_c2__key=0123456789ab", f"sweep {backend_only}")]
    store.pair("k_alone")
    assert _plan(tmp_path, compose_phase) == [("tf_vs_torch/phase_c2", "")]


def test_a_sweep_with_one_red_pair_writes_both_comparisons_and_exits_1(tmp_path):
    store = FakeStore(tmp_path)
    sweep = store.sweep_parent()
    green_ids = store.pair("k_gs1", "gridsize=1", sweep, tf_scale=1.0, torch_scale=1.0)
    red_ids = store.pair("k_gs2", "gridsize=2", sweep, tf_scale=1.0, torch_scale=1.5)
    done = _run_cli(["c2=tf_vs_torch", *_common(tmp_path)], cwd=tmp_path, timeout=180)
    assert done.returncode == 1, done.stdout
    green_slot, red_slot = (store.hub_root / "tf_vs_torch" / f"phase_c2__gridsize={g}" for g in (1, 2))
    green = json.loads((green_slot / "analysis" / "comparison.json").read_text())
    red = json.loads((red_slot / "analysis" / "comparison.json").read_text())
    assert (green["verdict"], green["tf_run_id"], green["torch_run_id"]) == ("GREEN", *green_ids)
    assert (red["verdict"], red["tf_run_id"], red["torch_run_id"]) == ("RED", *red_ids)
    [blocker] = red_slot.glob("red/blocked_*.md")
    assert done.stdout.strip().splitlines()[-1] == f"blocker: {blocker.relative_to(tmp_path)}"
    assert "1 of 2 comparisons blocked" in done.stdout and "patch_amplitude.mean" in blocker.read_text()
    assert not list(green_slot.glob("red/*")) and not (store.hub_root / "tf_vs_torch" / "phase_c2").exists()
    from runners.evidence import hub

    inventory = _inventory(tmp_path)
    assert "Status: GREEN" in hub.read_section(inventory, "tf_vs_torch/phase_c2__gridsize=1")
    assert "Status: BLOCKED" in hub.read_section(inventory, "tf_vs_torch/phase_c2__gridsize=2")
    assert inventory.count(">>> BEGIN SECTION tf_vs_torch/") == 2
    [parent] = store.client.search_runs([store.experiment], "tags.c2 = 'parent'")
    children = store.client.search_runs([store.experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "FAILED" and parent.data.tags["status"] == "BLOCKED"
    assert sorted((c.data.tags["slot"], c.data.tags["verdict"], c.info.status) for c in children) == [
        ("tf_vs_torch/phase_c2__gridsize=1", "GREEN", "FINISHED"),
        ("tf_vs_torch/phase_c2__gridsize=2", "RED", "FAILED")]

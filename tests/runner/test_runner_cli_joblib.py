"""Issue 4 on the CLI (subprocesses on the real core, small sizes): a joblib sweep over both backends
and two gridsizes, then ``c2=tf_vs_torch`` in the same folder and MLflow store (one comparison per
gridsize). Split from test_runner_cli.py so that ``--dist loadfile`` can run it on another worker;
conftest.cli_run keeps every run in a tmp folder.
"""
import json
import re

import pytest

from ..png_checks import assert_comparison_figure
from .conftest import CLI_EXPERIMENT, CLI_SLOT, CLI_SMALL, Run

pytestmark = pytest.mark.slow
SMALL, EXPERIMENT, SLOT = CLI_SMALL, CLI_EXPERIMENT, CLI_SLOT


TORCH_SLOT = "torch_baseline/phase_c1_scaled"


def _sweep_slot(backend, gridsize):
    base = SLOT if backend == "tensorflow" else TORCH_SLOT
    return f"{base}__backend={backend},gridsize={gridsize}"


def _banner_pid(slot_dir):
    """The pid in the banner of the slot's CLI log (``# <UTC time> pid <pid>``)."""
    [log] = (slot_dir / "cli").glob("*.log")
    return re.search(r"^# \S+ pid (\d+)$", log.read_text(), re.M).group(1)


def _key_structure(value):
    """Nested keys of a JSON value (leaves as None), to compare two bundles' layouts."""
    if isinstance(value, dict):
        return {key: _key_structure(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_key_structure(item) for item in value]
    return None


@pytest.fixture(scope="module")
def joblib_sweep(cli_run, tmp_path_factory, write_guard):
    guard = write_guard(tmp_path_factory.mktemp("guard"), True)  # for both backends' guard
    return cli_run(
        "joblib", "-m", "c1=scaled", "xla=off", "backend=tensorflow,pytorch", "gridsize=1,2",
        "hydra/launcher=parallel", f"guard.selector={guard}", "c1.model.n_filters_scale=1", *SMALL,
    )


@pytest.fixture(scope="module")
def sweep_then_c2(joblib_sweep, isolated_overrides, run_cli):
    """``c2=tf_vs_torch`` in the folder and MLflow store of the joblib sweep."""
    workdir = joblib_sweep.workdir
    return Run(workdir, run_cli(["c2=tf_vs_torch", *isolated_overrides(workdir)], cwd=workdir, timeout=300))


def test_a_joblib_sweep_of_four_jobs_gives_four_sections_and_one_parent_with_four_children(joblib_sweep):
    run = joblib_sweep
    assert run.done.returncode == 0, run.done.stdout[-3000:]
    inventory = (run.hub / "analysis" / "artifact_inventory.txt").read_text()
    slots = re.findall(r"^>>> BEGIN SECTION (\S+)$", inventory, re.M)
    assert sorted(slots) == sorted(_sweep_slot(b, g) for b in ("tensorflow", "pytorch") for g in (1, 2))
    assert inventory.count("Status: GREEN") == 4
    runs = run.client.search_runs(
        [run.client.get_experiment_by_name(EXPERIMENT).experiment_id], "tags.sweep = 'parent'")
    (parent,) = runs
    children = run.client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4 and {c.data.tags["slot"] for c in children} == set(slots)
    assert len({_banner_pid(run.hub / slot) for slot in slots}) >= 2  # joblib worker processes
    assert parent.info.status == "FINISHED"


def test_the_sweep_runs_the_pytorch_phase_with_the_same_evidence_as_tensorflow(joblib_sweep):
    run = joblib_sweep
    keys = set()
    for gridsize in (1, 2):
        tf_slot, torch_slot = _sweep_slot("tensorflow", gridsize), _sweep_slot("pytorch", gridsize)
        assert run.section(torch_slot).splitlines()[0].startswith("Phase C1 — PyTorch scaled baseline")
        tf_bundle = run.hub / tf_slot / "analysis" / "forward_parity_debug_tf"
        torch_bundle = run.hub / torch_slot / "analysis" / "forward_parity_debug_torch"
        files = {p.name for p in torch_bundle.iterdir()}
        assert files == {p.name for p in tf_bundle.iterdir()}
        assert {"stats.json", "offsets.json", "canvas.json"} <= files
        assert len([name for name in files if name.endswith(".png")]) >= 5
        for name in ("stats.json", "offsets.json", "canvas.json"):
            tf_json, torch_json = (json.loads((bundle / name).read_text()) for bundle in (tf_bundle, torch_bundle))
            assert _key_structure(torch_json) == _key_structure(tf_json), name
        tf_run, torch_run = run.run_of(tf_slot), run.run_of(torch_slot)
        assert torch_run.data.tags["backend"] == "pytorch" and torch_run.info.status == "FINISHED"
        assert set(torch_run.data.metrics) == set(tf_run.data.metrics)
        assert torch_run.data.tags["parity_key"] == tf_run.data.tags["parity_key"]
        keys.add(tf_run.data.tags["parity_key"])
    assert len(keys) == 2  # one per gridsize


def test_c2_after_the_sweep_leaves_one_green_comparison_per_gridsize(sweep_then_c2):
    run = sweep_then_c2
    assert run.done.returncode == 0, run.done.stdout[-3000:]
    c2_runs = {r.data.tags["slot"]: r for r in run.runs()
               if r.data.tags.get("phase") == "c2" and r.data.tags.get("c2") != "parent"}
    assert set(c2_runs) == {f"tf_vs_torch/phase_c2__gridsize={g}" for g in (1, 2)}
    [parent] = [r for r in run.runs() if r.data.tags.get("c2") == "parent"]
    assert parent.info.status == "FINISHED"
    inventory = (run.hub / "analysis" / "artifact_inventory.txt").read_text()
    assert inventory.count(">>> BEGIN SECTION tf_vs_torch/") == 2
    for gridsize in (1, 2):
        slot = f"tf_vs_torch/phase_c2__gridsize={gridsize}"
        result = json.loads((run.hub / slot / "analysis" / "comparison.json").read_text())
        tf_run, torch_run = (run.run_of(_sweep_slot(backend, gridsize)) for backend in ("tensorflow", "pytorch"))
        assert (result["tf_run_id"], result["torch_run_id"]) == (tf_run.info.run_id, torch_run.info.run_id)
        assert result["parity_key"] == tf_run.data.tags["parity_key"]
        assert result["figure_from"] == "arrays.npz"
        assert_comparison_figure(run.hub / slot / "analysis")
        assert run.section(slot).splitlines()[0] == f"Phase C2 — TF vs PyTorch comparison [gridsize={gridsize}]"
        assert c2_runs[slot].data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert c2_runs[slot].data.tags["tf_run_id"] == tf_run.info.run_id
        assert result["verdict"] == "GREEN", result["failures"]
        assert "Status: GREEN" in run.section(slot)

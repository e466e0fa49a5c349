"""Issue 11: resume. A job whose slot holds a GREEN record of the same work is skipped."""
import re
import time

import pytest

from runners.evidence import hub, resume
from runners.evidence import PhaseRecord, inventory_section

from .conftest import _run_cli

SMALL = ["dataset.simulation.n_images=96"]
SLOT = "tf_baseline/phase_c1_scaled"
# The sweep runs on the PyTorch port: resume is the runner's, the same for both backends, and a TF
# member at xla=off runs in a fresh process of its own (2 TF imports per member, 4 sweeps)
SWEEP = ["-m", "c1=scaled", "xla=off", "gridsize=1,2", "backend=pytorch", *SMALL]
SWEEP_SLOT = "torch_baseline/phase_c1_scaled"


def _slot(root, name=SLOT):
    return hub.resolve_slot(root, name, tag="tf", phase_stem="phase_c1_scaled", variant="scaled",
                            guard_name="tf_translation_guard")


def _publish(slot, status="GREEN", key="k1"):
    record = PhaseRecord(slot=slot.name, title="Phase C1 — TF scaled baseline", utc_time="2026-11-30T10:00:00Z",
                         command="c", env={}, versions={}, git_commit="g", parameters={}, paths={}, status=status,
                         stats_sha1="s" * 40, mlflow={"run_id": "r1", "experiment": "E"}, work_key=key,
                         error=None if status == "GREEN" else "boom", blocker=None if status == "GREEN" else "b.md")
    hub.publish(slot, inventory_section(record), "entry", 5.0)


def test_the_work_key_follows_config_data_and_code_but_not_where_evidence_goes(tmp_path):
    data = tmp_path / "train.npz"
    data.write_bytes(b"one")
    config = {"c1": {"gridsize": 2}, "hub": {"root": "a"}, "tracking": {"uri": "x"}, "force": False}
    key = resume.work_key(config, [data], "abc")
    assert key == resume.work_key({**config, "hub": {"root": "b"}, "tracking": {"uri": "y"}, "force": True},
                                  [data], "abc")
    assert key != resume.work_key({**config, "c1": {"gridsize": 1}}, [data], "abc")
    assert key != resume.work_key(config, [data], "abd")
    data.write_bytes(b"two")
    assert key != resume.work_key(config, [data], "abc")
    assert resume.work_key(config, [data], "unknown") is None


@pytest.mark.parametrize("status, key, found", [
    ("GREEN", "k1", True), ("GREEN", "k2", False), ("BLOCKED", "k1", False), ("INTERRUPTED", "k1", False),
])
def test_only_a_green_section_of_the_same_work_counts_as_done(tmp_path, status, key, found):
    slot = _slot(tmp_path / "hub")
    _publish(slot, status, key)
    done = resume.finished_work(slot, "k1")
    assert (done is not None) is found
    if found:
        assert done == resume.FinishedWork("2026-11-30T10:00:00Z", "r1", "s" * 40)
    assert resume.finished_work(slot, None) is None
    assert resume.finished_work(_slot(tmp_path / "hub", SLOT + "__other"), "k1") is None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("resume")


def _sweep(workdir, isolated_overrides, *extra):
    t0 = time.perf_counter()
    done = _run_cli([*SWEEP, *extra, *isolated_overrides(workdir)], cwd=workdir, timeout=600)
    return done, time.perf_counter() - t0


def _section(workdir, gridsize):
    text = (workdir / "hub" / "analysis" / "artifact_inventory.txt").read_text()
    return hub.read_section(text, f"{SWEEP_SLOT}__gridsize={gridsize}")


@pytest.mark.slow
@pytest.mark.torch
def test_a_crashed_sweep_rerun_does_only_the_missing_work(workdir, isolated_overrides):
    pytest.importorskip("torch")
    from mlflow.tracking import MlflowClient

    first, first_s = _sweep(workdir, isolated_overrides)
    assert first.returncode == 0, first.stdout[-3000:]
    # the sweep "died" in member 2: its section is not GREEN
    inventory = workdir / "hub" / "analysis" / "artifact_inventory.txt"
    before = _section(workdir, 1)
    inventory.write_text(inventory.read_text().replace(
        _section(workdir, 2), _section(workdir, 2).replace("Status: GREEN", "Status: INTERRUPTED (step: training)")))

    second, _ = _sweep(workdir, isolated_overrides)
    assert second.returncode == 0, second.stdout[-3000:]
    assert _section(workdir, 1) == before  # member 1: skipped, its record untouched
    assert "Status: GREEN" in _section(workdir, 2)
    run_id = re.search(r"run_id=(\w+)", before).group(1)
    assert f"skipped: GREEN at " in second.stdout and f"run {run_id}: {SWEEP_SLOT}__gridsize=1 holds" in second.stdout
    out = second.stdout
    assert out[out.index("== Sweep "):].splitlines()[0].endswith("2 GREEN / 0 BLOCKED of 2 jobs (1 skipped: done before) ==")

    # the new parent shows the whole sweep: the skipped member as a child linking the original run
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("FIX-PYTORCH-FORWARD-PARITY-001").experiment_id
    parents = client.search_runs([experiment], "tags.sweep = 'parent'", order_by=["attributes.start_time DESC"])
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    assert len(children) == 2
    (link,) = [child for child in children if child.data.tags.get("skipped") == "true"]
    assert link.data.tags["original_run_id"] == run_id and link.info.status == "FINISHED"

    # all done: a third run trains nothing; force=true reruns
    third, third_s = _sweep(workdir, isolated_overrides)
    assert third.returncode == 0 and third.stdout.count("skipped: GREEN at ") == 2
    assert "(2 skipped: done before)" in third.stdout and "epoch 1/1" not in third.stdout
    print(f"first sweep {first_s:.1f} s, all-done rerun {third_s:.1f} s ({third_s / first_s:.0%})")
    forced, _ = _sweep(workdir, isolated_overrides, "force=true")
    assert forced.returncode == 0 and "skipped" not in forced.stdout and forced.stdout.count("epoch 1/1") == 2

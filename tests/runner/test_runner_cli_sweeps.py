"""Issue 9's sweeps on the CLI (subprocesses on the real core, small sizes): a plain ``xla=off`` run,
then the sweep ``xla=on,off`` in the same folder and MLflow store. Split from test_runner_cli.py so
that ``--dist loadfile`` can run it on another worker; conftest.cli_run keeps every run in a tmp folder.
"""
import pytest

from runners.evidence import hub

from .conftest import CLI_EXPERIMENT, CLI_SLOT, CLI_SMALL

pytestmark = pytest.mark.slow
SMALL, EXPERIMENT, SLOT = CLI_SMALL, CLI_EXPERIMENT, CLI_SLOT


@pytest.fixture(scope="module")
def mixed_xla_sweep(cli_run, isolated_overrides, run_cli):
    """A plain ``xla=off`` run, then the sweep ``xla=on,off`` in the same folder (``.plain``: the first)."""
    plain = {}

    def plain_run_first(workdir):
        plain["done"] = run_cli(["c1=scaled", "xla=off", *SMALL, *isolated_overrides(workdir)], cwd=workdir,
                                timeout=600)

    run = cli_run("mixed", "-m", "c1=scaled", "xla=on,off", *SMALL, prepare=plain_run_first)
    run.plain = plain["done"]
    return run


def test_a_sweep_leaves_the_plain_runs_slot_alone(mixed_xla_sweep):
    """Issue 9: the sweep's isolated job (a fresh process) filed its record under the plain slot."""
    run = mixed_xla_sweep
    assert run.plain.returncode == 0, run.plain.stdout[-3000:]
    section = run.section()
    assert section.splitlines()[0] == "Phase C1 — TF scaled baseline"
    assert "Command: python -m runners.phase c1=scaled xla=off dataset.simulation.n_images=96" in section
    command = section.split("Command: ")[1].splitlines()[0]
    assert "xla=on,off" not in command and "of the multirun" not in command, command
    summary = (run.hub / "summary.md").read_text()
    entry = hub.read_section(summary, SLOT, markdown=True)
    assert entry.startswith(f"### Phase C1 — TF scaled baseline (`{SLOT}`)") and "xla=on,off" not in entry


def test_a_mixed_xla_sweep_runs_each_job_in_a_process_of_its_own_mode(mixed_xla_sweep):
    run = mixed_xla_sweep
    assert run.done.returncode == 0, run.done.stdout[-3000:]
    on, off = run.run_of(f"{SLOT}__xla=on"), run.run_of(f"{SLOT}__xla=off")
    assert on.data.tags["xla.tf_import.TF_XLA_FLAGS"] == "<empty>"
    assert on.data.tags["xla.tf_import.USE_XLA_TRANSLATE"] == "1"
    assert off.data.tags["xla.tf_import.TF_XLA_FLAGS"] == "--tf_xla_auto_jit=0"
    assert off.data.tags["xla.tf_import.USE_XLA_TRANSLATE"] == "0"
    assert off.data.tags["xla.isolated"] == "yes" and on.data.tags["xla.isolated"] == "no"
    assert on.data.tags["xla.pid"] != off.data.tags["xla.pid"]
    for slot, env in ((f"{SLOT}__xla=on", "TF_XLA_FLAGS= USE_XLA_TRANSLATE=1"),
                      (f"{SLOT}__xla=off", "TF_XLA_FLAGS=--tf_xla_auto_jit=0 USE_XLA_TRANSLATE=0")):
        section = run.section(slot)
        assert "Status: GREEN" in section and f"Env: {env}" in section
        assert section.splitlines()[0] == f"Phase C1 — TF scaled baseline [{slot.split('__')[1]}]"
        guard_log = (run.hub / slot / "green" / "pytest_tf_translation_guard.log").read_text()
        assert f"# env: {env}" in guard_log


def test_a_sweep_gets_one_parent_run_with_each_job_as_a_child(mixed_xla_sweep):
    runs = mixed_xla_sweep.runs()
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and parent.info.status == "FINISHED"
    # the sweep's closing block: the count, the parent run, each member's slot and run
    out = mixed_xla_sweep.done.stdout
    summary = out[out.index("== Sweep "):].splitlines()
    assert summary[0].endswith(": 2 GREEN / 0 BLOCKED of 2 jobs ==")
    assert summary[1].startswith(f"  MLflow parent run {parent.info.run_id}: http://127.0.0.1:5000/#/experiments/")
    by_slot = {child.info.run_name: child.info.run_id for child in children}
    for line in summary[2:4]:
        _, job, status, slot, _, run_id = line.split()
        assert status == "GREEN" and by_slot[slot] == run_id
    assert parent.info.run_name.startswith("sweep: c1=scaled xla=on,off dataset.simulation.n_images=96")

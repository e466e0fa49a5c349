"""runners.phases.base.PhaseRun: a phase made from the shared lifecycle with only its steps.

A phase whose steps raise is BLOCKED through the lifecycle every phase shares (blocker file,
section, record, closing lines, the CLI log under its banner, PhaseBlocked); one whose steps
pass is GREEN. The entry point's blocker log hears of the blocker where the job printed it, and
of a PhaseBlocked that comes back pickled from a launcher's worker.
"""
import pickle

import pytest

from runners.evidence import BLOCKED, GREEN, OUTCOME_FILE, PhaseRecord
from runners.evidence import hub, outcome
from runners.job import JobContext
from runners.phases.base import PhaseRun
from runners.schema import to_spec


class BrokenStep(PhaseRun):
    """A later phase in miniature: one step, which fails."""

    def _run(self) -> None:
        self._step("reconstruct with a trained network")
        print("working on it")
        raise RuntimeError("the network's weights are missing")


class OneStep(PhaseRun):
    def _run(self) -> None:
        self._step("work")
        self.record.stats_sha1 = "0" * 40
        outcome.mark_green(self.record, self.slot, self.lock_timeout_s)
        self.record.save(self.outcome_path)


@pytest.fixture
def make_run(compose_phase, tmp_path):
    """make_run(cls) -> cls(spec, job, slot, record) for a slot under tmp_path/hub, no MLflow."""
    spec = to_spec(compose_phase())
    job = JobContext(launch_dir=tmp_path, output_dir=tmp_path / "outputs", overrides=(), job_num=0,
                     sweep_dir=None, sweep=None, parent=None)
    job.output_dir.mkdir()
    slot = hub.resolve_slot(tmp_path / "hub", "demo/phase_demo", tag="demo", phase_stem="phase_demo",
                            variant="demo", guard_name="demo_guard", log_verb="demo")
    record = PhaseRecord(slot=slot.name, title="Phase demo", utc_time="2026-01-01T00:00:00Z",
                         command="python -m runners.phase demo", env={}, versions={}, git_commit="abc",
                         parameters={}, paths={"cli_log": "cli.log", "bundle": "bundle", "run_dir": "run"})
    return lambda cls: cls(spec, job, slot, record)


def test_a_phase_whose_step_raises_is_blocked_through_the_shared_lifecycle(make_run, tmp_path, capfd):
    run = make_run(BrokenStep)
    with outcome.blocker_log() as blockers, pytest.raises(outcome.PhaseBlocked) as raised:
        run.execute()
    assert raised.value.announced and raised.value.blocker == run.record.blocker
    assert isinstance(raised.value.__cause__, RuntimeError)
    saved = PhaseRecord.load(tmp_path / "outputs" / OUTCOME_FILE)
    assert saved.status == BLOCKED and saved.step == "reconstruct with a trained network"
    assert saved.error == "RuntimeError: the network's weights are missing"
    blocker = tmp_path / saved.blocker
    assert blocker.parent == run.slot.red_dir and "the network's weights are missing" in blocker.read_text()
    assert "Status: BLOCKED" in hub.read_section(run.slot.inventory.read_text(), run.slot.name)
    err = capfd.readouterr().err
    assert f"BLOCKED: Phase demo; {saved.error}\nblocker: {saved.blocker}" in err
    log = run.slot.cli_log.read_text()
    assert log.startswith("# Phase demo\n") and "working on it" in log and f"blocker: {saved.blocker}" in log
    assert blockers.paths() == [saved.blocker] and blockers.paths(unannounced=True) == []


def test_a_phase_whose_steps_pass_is_green(make_run, tmp_path, capfd):
    record = make_run(OneStep).execute()
    assert record.status == GREEN and PhaseRecord.load(tmp_path / "outputs" / OUTCOME_FILE).status == GREEN
    assert capfd.readouterr().out.rstrip().endswith(f"stats.json sha1 {'0' * 40}; inventory hub/analysis/"
                                                     "artifact_inventory.txt")


def test_blockers_are_noted_only_while_the_entry_point_has_its_log_open():
    outcome.note_blocker("red/before.md")  # no log open: nothing kept, nothing raised
    with outcome.blocker_log() as blockers:
        outcome.PhaseBlocked("made, not raised", "red/made.md")
        outcome.note_blocker("red/written.md")
        received = pickle.loads(pickle.dumps(outcome.PhaseBlocked("in a worker", "red/worker.md", announced=True)))
    assert (received.reason, received.blocker, received.announced) == ("in a worker", "red/worker.md", True)
    assert blockers.paths() == ["red/written.md", "red/worker.md"]
    assert blockers.paths(unannounced=True) == ["red/written.md"]

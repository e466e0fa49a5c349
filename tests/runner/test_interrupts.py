"""Ctrl-C, SIGTERM and SLURM preemption (issue 9, class Interrupts).

A run signalled at any step ends within 2 s, with exit status 130 (SIGINT) or 143 (SIGTERM), its
guard's pytest gone, its MLflow run KILLED, an INTERRUPTED record in the hub (section status
``INTERRUPTED (step: <step>; signal <SIG>)``, summary entry, one blocker named after the step) and
no half bundle; a rerun is GREEN.

Real subprocess runs at tiny sizes, signalled once their log says they reached the step: the
steps that last seconds (imports, guard wait with a sleeping guard, an epoch of a longer fit) in
``python -m runners.phase`` itself; the steps that last milliseconds in
tests/runner/pausing_phase.py (the same command with a pause patched in at that step).

The 2 s are the code's own deadlines (runners.process.interrupt: the watchdog ends the process
EXIT_AFTER_S after the signal, whatever the writer does); a run is judged on what the code did
within them (its exit status as announced, its evidence complete, its watchdog silent, its MLflow
budget), and on the wall clock only to 5x: a loaded machine delays the signal and the exit.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from filelock import FileLock
from mlflow.tracking import MlflowClient

from runners.evidence import hub, outcome
from runners.process import interrupt
from runners import tracking

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
PAUSING = Path(__file__).with_name("pausing_phase.py")
TINY = ["c1=scaled", "xla=off", "c1.n_images=32", "c1.n_groups=8", "c1.batch_size=4", "c1.model.n_filters_scale=1",
        "dataset.simulation.n_images=96"]
LONG_FIT = ["c1.n_groups=24", "c1.n_images=64", "c1.max_epochs=3"]  # epochs of a second or more
EXIT_LIMIT_S = 2.0  # the promise (runners.phase, runners.process.interrupt)
WALL_SLACK = 5  # the wall clock's bounds are this many times the code's
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
SLEEPING_GUARD = "import time\n\ndef test_guard_sleeps():\n    time.sleep(120)\n"
EXPERIMENT = "FIX-PYTORCH-FORWARD-PARITY-001"


class Launched:
    """A runner started in ``workdir``: its output lines as they come, a signal, its exit time."""

    def __init__(self, workdir: Path, argv: list[str]):
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("TF_XLA_FLAGS", None)
        env.pop("USE_XLA_TRANSLATE", None)
        self.workdir = workdir
        self.process = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._arrived = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.children: list[psutil.Process] = []
        self.child_commands: list[str] = []

    def _read(self):
        for line in self.process.stdout:
            with self._arrived:
                self.lines.append(line)
                self._arrived.notify_all()
        with self._arrived:
            self._arrived.notify_all()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float = 240) -> None:
        """Until a line matches ``pattern``; fails when the run ends or times out first."""
        found = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._arrived:
            while not any(found.search(line) for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    self.process.kill()
                    pytest.fail(f"no line matching {pattern!r}; output:\n{self.output[-4000:]}")
                self._arrived.wait(min(left, 0.5))

    def signal(self, signum: int) -> float:
        """Send ``signum``; the seconds until the process exited (the run is killed after 20 s)."""
        self.children = psutil.Process(self.process.pid).children(recursive=True)
        self.child_commands = [" ".join(_command(p)) for p in self.children]
        t0 = time.monotonic()
        self.process.send_signal(signum)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        elapsed = time.monotonic() - t0
        self._reader.join(10)
        return elapsed

    def orphans(self) -> list[psutil.Process]:
        """Processes the run started that are still running (zombies count as gone)."""
        _, alive = psutil.wait_procs(self.children, timeout=1.0)
        return [p for p in alive if _running(p)]


def _command(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.NoSuchProcess:
        return []


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _isolated(workdir: Path, sim_cache: Path) -> list[str]:
    return [f"hub.root={workdir / 'hub'}", f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
            f"dataset.cache_dir={sim_cache}", f"hydra.run.dir={workdir / 'outputs' / 'run'}",
            f"hydra.sweep.dir={workdir / 'multirun'}"]


@pytest.fixture
def launch(tmp_path, sim_cache):
    """launch(*overrides, pause=None, guard=<passing>) -> Launched: the runner at tiny sizes in tmp_path
    (``pause``: a pausing_phase.py pause, e.g. ``step:hub``)."""
    passing = tmp_path / "test_guard_green.py"
    passing.write_text("def test_guard_passes():\n    assert True\n")
    started = []

    def start(*overrides, pause=None, guard=None, multirun=False):
        command = [sys.executable, str(PAUSING), *pause] if pause else [sys.executable, "-m", "runners.phase"]
        run = Launched(tmp_path, [*command, *(["-m"] if multirun else []), *TINY, *_isolated(tmp_path, sim_cache),
                                  f"guard.selector={guard or passing} -q", *overrides])
        started.append(run)
        return run

    yield start
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


def _slot(backend: str = "tensorflow") -> str:
    return ("tf" if backend == "tensorflow" else "torch") + "_baseline/phase_c1_scaled"


def _label(step: str) -> str:
    """The blocker's file-name label of ``step`` (outcome.blocker_label)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", step).strip("_")


def _interrupted(run: Launched, elapsed: float, signum: int, step: str, *, label: str | None = None,
                 slot: str = _slot(), mlflow_status: str | None = "KILLED", blocker_last: bool = True) -> str:
    """The common assertions of an interrupted run (exit, children, hub record, MLflow run); its
    blocker's text."""
    name = signal.Signals(signum).name
    out = run.output
    print(f"{name} at step {step!r}: exit {run.process.returncode} after {elapsed:.2f} s")
    assert elapsed < WALL_SLACK * EXIT_LIMIT_S, f"exit took {elapsed:.2f} s after {name}:\n{out[-3000:]}"
    assert run.process.returncode == EXIT_CODES[signum], out[-3000:]
    # The writer took the signal and said how it would end; its evidence (below) was done before
    # the watchdog's deadline, which would otherwise have cut it short and said so.
    assert f"{name} received: writing the evidence, then exit {EXIT_CODES[signum]}" in out, out[-3000:]
    assert "the evidence took longer than" not in out, out[-3000:]
    assert run.orphans() == [], f"processes left running: {run.orphans()}"
    blocker = _hub_record(run.workdir / "hub", slot, step, name, label or _label(step))
    shown = blocker.relative_to(run.workdir)
    if blocker_last:
        assert out.strip().splitlines()[-1] == f"blocker: {shown}", out[-2000:]
    else:
        assert f"blocker: {shown}\n" in out, out[-2000:]
    _mlflow_end(run.workdir, slot, mlflow_status, str(shown))
    return blocker.read_text()


def _hub_record(root: Path, slot: str, step: str, signal_name: str, label: str) -> Path:
    """One blocker named ``label``, the INTERRUPTED section and summary entry, no half bundle; the blocker."""
    blockers = list((root / slot / "red").glob("blocked_*.md"))
    assert len(blockers) == 1, blockers
    assert blockers[0].name.endswith(f"Z_{label}.md"), blockers[0].name
    text = blockers[0].read_text()
    assert text.startswith("# INTERRUPTED: ") and f"- Failed step: {step}" in text and f"signal {signal_name}" in text
    section = hub.read_section((root / "analysis" / "artifact_inventory.txt").read_text(), slot)
    assert f"Status: INTERRUPTED (step: {step}; signal {signal_name})" in section, section
    shown = blockers[0].relative_to(root.parent)
    assert f"Blocker: {shown}" in section
    summary = hub.read_section((root / "summary.md").read_text(), slot, markdown=True)
    assert "**INTERRUPTED**" in summary and str(shown) in summary, summary
    bundles = root / slot / "analysis"
    assert not list(bundles.glob(".forward_parity_debug_*")), "a bundle's staging folder was left"
    for bundle in bundles.glob("forward_parity_debug_*"):
        assert (bundle / "stats.json").is_file() and (bundle / "arrays.npz").is_file(), "half a bundle"
    return blockers[0]


def _mlflow_end(workdir: Path, slot: str, status: str | None, blocker: str) -> None:
    """The slot's MLflow run ended as ``status`` (KILLED: tagged INTERRUPTED with its blocker); with
    ``status`` None, no run is left RUNNING (the run had not started)."""
    runs = _mlflow_runs(workdir)
    if status is None:
        assert all(r.info.status != "RUNNING" for r in runs), [r.info.status for r in runs]
        return
    (mlflow_run,) = [r for r in runs if r.data.tags.get("slot") == slot]
    assert mlflow_run.info.status == status, mlflow_run.info.status
    if status == "KILLED":
        assert mlflow_run.data.tags["status"] == "INTERRUPTED" and mlflow_run.data.tags["blocker"] == blocker


def _mlflow_runs(workdir: Path) -> list:
    if not (workdir / "mlflow.db").is_file():
        return []
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id]) if experiment else []


def _mlflow_budget_s(output: str) -> float:
    """The seconds the writer gave MLflow to end the run (its ``(up to <s> s)``), within its shares."""
    found = re.search(r"ending the MLflow run as KILLED \(up to ([\d.]+) s\)", output)
    assert found, output[-2000:]
    budget = float(found.group(1))
    assert 0 < budget <= min(outcome.MLFLOW_KILL_TIMEOUT_S, interrupt.CALLBACKS_UNTIL_S), budget
    return budget


def test_the_code_keeps_its_deadlines_inside_the_promise():
    """The watchdog's exit, and inside it the callbacks' and the forwarded children's shares, come
    before the 2 s the runner promises; the runs below add only the machine's delays to them."""
    assert interrupt.FORWARDED_UNTIL_S < interrupt.CALLBACKS_UNTIL_S < interrupt.EXIT_AFTER_S < EXIT_LIMIT_S
    assert interrupt.CALLBACKS_UNTIL_S + interrupt.CHILD_WAIT_S <= interrupt.EXIT_AFTER_S  # then the children go
    assert outcome.MLFLOW_KILL_TIMEOUT_S <= interrupt.CALLBACKS_UNTIL_S


def test_sigint_while_the_backend_imports_stops_the_guard_and_leaves_a_record(launch):
    run = launch()
    run.wait_for(r"step: imports")
    time.sleep(0.5)
    elapsed = run.signal(signal.SIGINT)
    assert run.children, "the guard's pytest was not running"
    text = _interrupted(run, elapsed, signal.SIGINT, "imports", mlflow_status=None)
    assert "- Guard: INTERRUPTED" in text


def test_sigterm_at_the_guard_step(launch):
    run = launch(pause=["step:guard"])
    run.wait_for(r"paused at step:guard")
    _interrupted(run, run.signal(signal.SIGTERM), signal.SIGTERM, "guard", mlflow_status=None)


def test_sigterm_in_guard_wait_kills_the_guard_then_a_rerun_is_green(launch, tmp_path):
    sleeping = tmp_path / "test_guard_sleeps.py"
    sleeping.write_text(SLEEPING_GUARD)
    run = launch(guard=sleeping)
    run.wait_for(r"step: guard wait")
    time.sleep(0.3)
    elapsed = run.signal(signal.SIGTERM)
    assert any("pytest" in command for command in run.child_commands), run.child_commands
    _interrupted(run, elapsed, signal.SIGTERM, "guard wait", label="tf_translation_guard")
    guard_log = (tmp_path / "hub" / _slot() / "green" / "pytest_tf_translation_guard.log").read_text()
    assert "# result: INTERRUPTED" in guard_log and "test_guard_sleeps" in guard_log

    with FileLock(str(tmp_path / "hub" / hub.LOCK_NAME), timeout=0):
        pass  # the interrupted run's hub lock is free
    rerun = launch()
    assert rerun.process.wait(300) == 0, rerun.output[-3000:]
    rerun._reader.join(10)
    section = hub.read_section((tmp_path / "hub" / "analysis" / "artifact_inventory.txt").read_text(), _slot())
    assert "Status: GREEN" in section
    assert rerun.output.strip().splitlines()[-1].startswith("GREEN: ")


def test_sigterm_is_forwarded_to_a_job_isolated_in_a_fresh_process(launch):
    """The runner's process forwards the signal to the job it re-ran in a process of its own XLA
    mode (a session of its own: a terminal's Ctrl-C reaches it once), which writes the record."""
    run = launch(pause=["isolated"])
    run.wait_for(r"step: imports")
    time.sleep(0.5)
    elapsed = run.signal(signal.SIGTERM)
    assert any("-m runners.phase" in command for command in run.child_commands), run.child_commands
    text = _interrupted(run, elapsed, signal.SIGTERM, "imports", mlflow_status=None)
    assert "isolated=yes" in text


def test_sigint_inside_a_long_tensorflow_epoch(launch):
    run = launch(*LONG_FIT)
    run.wait_for(r"epoch 1/3: ")
    time.sleep(0.3)
    _interrupted(run, run.signal(signal.SIGINT), signal.SIGINT, "training")


@pytest.mark.torch
def test_sigterm_inside_a_long_pytorch_epoch(launch):
    run = launch("backend=pytorch", *LONG_FIT)
    run.wait_for(r"epoch 1/3: ")
    time.sleep(0.3)
    _interrupted(run, run.signal(signal.SIGTERM), signal.SIGTERM, "training", slot=_slot("pytorch"),
                 label="training")


def test_sigint_while_the_bundle_is_written_leaves_no_half_bundle(launch, tmp_path):
    run = launch(pause=["bundle"])
    run.wait_for(r"paused at bundle")
    staging = list((tmp_path / "hub" / _slot() / "analysis").glob(".forward_parity_debug_tf.tmp-*"))
    assert staging, "the pause is not inside the bundle writer"
    _interrupted(run, run.signal(signal.SIGINT), signal.SIGINT, "inference, stitching and bundle")
    assert not (tmp_path / "hub" / _slot() / "analysis" / "forward_parity_debug_tf").exists()


def test_sigint_at_tracking_end_after_the_green_section(launch):
    run = launch(pause=["step:tracking end"])
    run.wait_for("paused at step:tracking end")
    _interrupted(run, run.signal(signal.SIGINT), signal.SIGINT, "tracking end")


def test_a_silent_mlflow_is_given_up_on_and_a_second_ctrl_c_exits_at_once(launch):
    """The second Ctrl-C comes while the writer waits for MLflow to end the run: the process ends
    there, before the writer records MLflow's (missing) answer in the section, as it does when no
    second signal comes (test_mlflow_that_does_not_answer_...)."""
    run = launch(pause=["step:data", "--mlflow-hangs"])
    run.wait_for(r"paused at step:data")
    run.process.send_signal(signal.SIGINT)
    run.wait_for(r"ending the MLflow run", timeout_s=WALL_SLACK * EXIT_LIMIT_S)  # the hub's record comes first
    _mlflow_budget_s(run.output)
    time.sleep(interrupt.DUPLICATE_WINDOW_S + 0.1)  # a second signal, not the same one again
    elapsed = run.signal(signal.SIGINT)
    assert elapsed < WALL_SLACK * 0.5, f"the second Ctrl-C took {elapsed:.2f} s"
    assert run.process.returncode == 130
    section = hub.read_section((run.workdir / "hub" / "analysis" / "artifact_inventory.txt").read_text(), _slot())
    assert "Status: INTERRUPTED (step: data; signal SIGINT)" in section
    mlflow = next(line for line in section.splitlines() if line.startswith("MLflow: "))
    assert not re.search(r"(^|\s)end=", mlflow), f"the writer outlived the second Ctrl-C: {mlflow}"


def test_mlflow_that_does_not_answer_is_reported_and_the_exit_stays_in_time(launch):
    run = launch(pause=["step:tracking results", "--mlflow-hangs"])
    run.wait_for(r"paused at step:tracking results")
    elapsed = run.signal(signal.SIGTERM)
    _interrupted(run, elapsed, signal.SIGTERM, "tracking results", mlflow_status="RUNNING")
    budget = _mlflow_budget_s(run.output)
    assert re.search(rf"MLflow.*no answer within {budget:.1f} s", run.output), run.output[-2000:]
    section = hub.read_section((run.workdir / "hub" / "analysis" / "artifact_inventory.txt").read_text(), _slot())
    assert f"end=not ended: no answer within {budget:.1f} s" in section, section


def test_an_interrupted_sweep_member_is_journaled_as_interrupted(launch, tmp_path):
    run = launch("gridsize=1,2", pause=["step:model build and grouping"], multirun=True)
    run.wait_for(r"paused at step:model build and grouping")
    slot = _slot() + "__gridsize=1"
    _interrupted(run, run.signal(signal.SIGTERM), signal.SIGTERM, "model build and grouping", slot=slot,
                 blocker_last=False)
    journal = (tmp_path / "multirun" / "phase_sweep_jobs.jsonl").read_text()
    (entry,) = [json.loads(line) for line in journal.splitlines()]
    assert entry["job"] == 0 and entry["green"] is False and entry["status"] == "INTERRUPTED"
    assert entry["slot"] == slot and entry["blocker"].endswith("_model_build_and_grouping.md")
    assert re.search(r"== Sweep .*: 0 GREEN / 0 BLOCKED / 1 INTERRUPTED of 2 jobs", run.output), run.output[-2000:]
    parent = [r for r in _mlflow_runs(tmp_path) if r.data.tags.get("sweep") == "parent"]
    assert [r.info.status for r in parent] == ["KILLED"]


def test_a_store_whose_creation_was_cut_short_leaves_nothing_half_made(tmp_path, monkeypatch):
    """A job ended while MLflow creates a new SQLite store's schema (the ``tracking`` step of a first
    run) leaves no half-made ``mlflow.db`` that every later job would fail to open."""
    store = tmp_path / "mlflow.db"
    creator = subprocess.Popen(
        [sys.executable, "-c", "import sys, mlflow.tracking\nfrom pathlib import Path\nfrom runners import tracking\n"
         "print('ready', flush=True)\ntracking.create_sqlite_store(Path(sys.argv[1]))", str(store)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True)
    assert creator.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # creating the schema takes seconds
    creator.kill()
    creator.wait()
    assert not store.exists()
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    assert tracking.Tracker(f"sqlite:///{store}", "E").failure is None
    assert store.is_file() and [p.name for p in tmp_path.glob(".mlflow.db.*")] == []



def test_sigterm_during_a_c2_comparison_leaves_an_interrupted_record(launch, tmp_path):
    """Phase C2 (and C3, through the same runners.phases.base.PhaseRun) records its interrupt as C1 does."""
    from .test_runner_c2 import _bundle

    tf, torch = _bundle(tmp_path / "tf"), _bundle(tmp_path / "torch")
    run = launch("c2=tf_vs_torch", f"c2.tf_bundle={tf}", f"c2.torch_bundle={torch}", pause=["compare"])
    run.wait_for(r"paused at compare")
    _interrupted(run, run.signal(signal.SIGTERM), signal.SIGTERM, "comparison", slot="tf_vs_torch/phase_c2")

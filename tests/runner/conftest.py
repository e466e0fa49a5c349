"""Helpers for the runner tests: composing the config and running the CLI in a scratch folder.

No test writes to the repository's own plans/ or mlflow.db: every run gets hub.root,
tracking.uri and the dataset cache inside pytest's tmp folders, and runs with cwd there.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from runners.schema import register_configs

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "runners" / "conf"
PASSING_GUARD = "def test_guard_passes():\n    assert True\n"
FAILING_GUARD = "def test_guard_fails():\n    assert 1 == 2, 'injected red guard'\n"


def _compose_phase(overrides=(), hydra_node=False):
    """The composed runners/conf/phase.yaml (without the hydra node unless asked)."""
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("phase", overrides=list(overrides), return_hydra_config=hydra_node)


def _repo_evidence_state():
    plans = REPO / "plans"
    files = sorted(p for p in plans.rglob("*") if p.is_file()) if plans.exists() else []
    state = {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}
    for name in ("mlflow.db", "mlruns", "outputs", "multirun"):
        state[name] = (REPO / name).exists()
    return state


@pytest.fixture(scope="session", autouse=True)
def repo_evidence_untouched():
    """Fails the session if a runner test wrote into the repository's plans/, mlflow.db or outputs."""
    before = _repo_evidence_state()
    yield
    assert _repo_evidence_state() == before, "a runner test wrote into the repository's own evidence"


@pytest.fixture(scope="session")
def sim_cache(tmp_path_factory):
    """One simulated-dataset cache for the whole session (datasets are simulated once)."""
    return tmp_path_factory.mktemp("sim_cache")


def _isolated_overrides(workdir: Path, sim_cache: Path) -> list[str]:
    """Overrides that keep a run's hub, MLflow store and data cache inside ``workdir``/tmp."""
    return [
        f"hub.root={workdir / 'hub'}",
        f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}",
        f"dataset.cache_dir={sim_cache}",
        f"hydra.run.dir={workdir / 'outputs' / 'run'}",
        f"hydra.sweep.dir={workdir / 'multirun'}",
    ]


def _write_guard(folder: Path, passing: bool) -> str:
    """A one-test guard file in ``folder``; returns its pytest selector."""
    path = folder / ("test_guard_green.py" if passing else "test_guard_red.py")
    path.write_text(PASSING_GUARD if passing else FAILING_GUARD)
    return f"{path} -q"


def _run_cli(args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m runners.phase *args`` in ``cwd``; stdout and stderr merged in ``.stdout``."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "0"}
    env.pop("TF_XLA_FLAGS", None)
    env.pop("USE_XLA_TRANSLATE", None)
    return subprocess.run(
        [sys.executable, "-m", "runners.phase", *args], cwd=cwd, env=env, timeout=timeout,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def run_in_process(argv: list[str], capfd, monkeypatch) -> tuple[int, str, str]:
    """``python -m runners.phase <argv>`` in this process: (exit status, stdout, stderr)."""
    import runpy

    monkeypatch.setattr(sys, "argv", ["phase", *argv])
    capfd.readouterr()
    try:
        runpy.run_module("runners.phase", run_name="__main__")
        status = 0
    except SystemExit as exc:
        status = exc.code
    captured = capfd.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="session")
def compose_phase():
    """compose_phase(overrides=(), hydra_node=False) -> DictConfig."""
    return _compose_phase


@pytest.fixture(scope="session")
def isolated_overrides(sim_cache):
    """isolated_overrides(workdir) -> the overrides keeping a run inside workdir."""
    return lambda workdir: _isolated_overrides(workdir, sim_cache)


@pytest.fixture(scope="session")
def write_guard():
    """write_guard(folder, passing) -> selector of a one-test guard file."""
    return _write_guard


@pytest.fixture(scope="session")
def run_cli():
    """run_cli(args, cwd, timeout=300) -> CompletedProcess (stdout and stderr merged)."""
    return _run_cli


# The CLI runs of issues 3 and 4 (test_runner_cli*.py): split over files so that --dist loadfile
# can put them on different workers; each file runs its own commands (module-scoped fixtures).
CLI_SMALL = ["dataset.simulation.n_images=96"]  # 72 train / 24 test positions; c1 stays at 'scaled'
CLI_EXPERIMENT = "FIX-PYTORCH-FORWARD-PARITY-001"
CLI_SLOT = "tf_baseline/phase_c1_scaled"


class Run:
    """A finished CLI run: its folder, completed process and MLflow client."""

    def __init__(self, workdir, done):
        from mlflow.tracking import MlflowClient

        self.workdir, self.done = workdir, done
        self.hub = workdir / "hub"
        self.client = MlflowClient(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}")

    @property
    def last_line(self):
        return self.done.stdout.strip().splitlines()[-1]

    def section(self, slot=CLI_SLOT):
        from runners.evidence import hub

        return hub.read_section((self.hub / "analysis" / "artifact_inventory.txt").read_text(), slot)

    def runs(self):
        experiment = self.client.get_experiment_by_name(CLI_EXPERIMENT)
        return self.client.search_runs([experiment.experiment_id])

    def run_of(self, slot=CLI_SLOT):
        (found,) = [r for r in self.runs() if r.info.run_name == slot]
        return found


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, isolated_overrides, run_cli):
    """cli_run(name, *args, prepare=None) -> Run of ``python -m runners.phase *args`` in a new folder."""
    def start(name, *args, prepare=None):
        workdir = tmp_path_factory.mktemp(name)
        if prepare:
            prepare(workdir)
        return Run(workdir, run_cli([*args, *isolated_overrides(workdir)], cwd=workdir, timeout=600))

    return start

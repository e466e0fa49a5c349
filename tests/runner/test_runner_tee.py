"""The runner inside another process: it closes none of the host's streams and leaves its logging as found.

Hydra's logging set-up closes every handler in the process; absl's handler (TensorFlow
imports absl) then closed the ``sys.stderr`` it was created under, which under pytest was
the capture file, and the session died with "I/O operation on closed file".
"""
import logging
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from runners.process.tee import FdTee

REPO = Path(__file__).resolve().parents[2]
CONFIG_ERROR = "gridsize=0"  # Hydra sets up logging, then the job stops before any science
INNER_SESSION = """
import runpy, sys

import pytest

def test_import_absl_under_the_global_capture():
    import absl.logging

def test_in_process_run(capfd, monkeypatch):
    monkeypatch.setattr(sys, "argv", {argv!r})
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("runners.phase", run_name="__main__")
    assert exit_.value.code == 1 and "c1.gridsize" in capfd.readouterr().err
"""


@pytest.fixture
def run_in_process(tmp_path, monkeypatch, isolated_overrides):
    """run_in_process(*overrides) -> exit status of ``python -m runners.phase`` run in this process."""
    monkeypatch.chdir(tmp_path)

    def run(*overrides):
        monkeypatch.setattr(sys, "argv", ["phase", *isolated_overrides(tmp_path), *overrides])
        try:
            runpy.run_module("runners.phase", run_name="__main__")
        except SystemExit as exc:
            return exc.code
        return 0

    return run


def test_an_in_process_run_leaves_the_stream_absl_holds_open(run_in_process, tmp_path, monkeypatch):
    from absl import logging as absl_logging  # absl comes with TensorFlow, a dependency
    absl_handler = absl_logging.get_absl_handler().python_handler
    host_stream = (tmp_path / "host_stderr.txt").open("w")  # the sys.stderr absl was imported under
    monkeypatch.setattr(absl_handler, "stream", host_stream)
    assert run_in_process(CONFIG_ERROR) == 1
    assert not host_stream.closed
    assert absl_handler.stream is host_stream
    host_stream.close()


def test_an_in_process_run_gives_the_root_logger_back(run_in_process, tmp_path):
    root = logging.getLogger()
    host_log = (tmp_path / "host.log").open("w")
    host_handler = logging.StreamHandler(host_log)
    root.addHandler(host_handler)
    before = list(root.handlers), root.level
    try:
        assert run_in_process(CONFIG_ERROR) == 1
        after = list(root.handlers), root.level
        logging.getLogger("after_the_run").warning("lands in the host's handler")
    finally:
        root.removeHandler(host_handler)
    assert after == before
    assert not host_log.closed
    host_log.close()
    assert "lands in the host's handler" in (tmp_path / "host.log").read_text()
    (job_log,) = (tmp_path / "outputs" / "run").glob("*.log")  # Hydra's file handler was closed
    assert "lands in the host's handler" not in job_log.read_text()


def test_logging_inside_the_tee_reaches_the_log_and_outlives_it(tmp_path, capfd, monkeypatch):
    before = sys.stderr
    inside = logging.getLogger("test_runner_tee.inside")
    monkeypatch.setattr(inside, "propagate", False)
    log_path = tmp_path / "cli.log"
    with FdTee(log_path, "# banner"):
        handler = logging.StreamHandler(sys.stderr)  # bound to the tee's stream, like a late import
        inside.addHandler(handler)
        inside.warning("during the tee")
    try:
        inside.warning("after the tee")
    finally:
        inside.removeHandler(handler)
    assert sys.stderr is before and not before.closed
    assert not handler.stream.closed
    assert log_path.read_text().splitlines() == ["# banner", "during the tee"]
    assert capfd.readouterr().err.splitlines() == ["during the tee", "after the tee"]


@pytest.mark.slow
def test_a_run_after_absl_was_imported_under_pytest_capture(isolated_overrides, tmp_path):
    """The reported crash, end to end: a pytest session with fd capture (absl stands for TensorFlow)."""
    argv = ["phase", *isolated_overrides(tmp_path), CONFIG_ERROR]
    (tmp_path / "test_inner.py").write_text(INNER_SESSION.format(argv=argv))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--capture=fd", "test_inner.py"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )
    assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout
    assert "closed file" not in result.stdout, result.stdout

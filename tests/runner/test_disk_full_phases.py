"""Issue 26, part 1 for Phases C2 and C3, and C1's guard log: the disk pre-flight and a disk that fills.

The same real small file systems as tests/runner/test_disk_full.py (a tmpfs, else an ext4 image on
a loop device): C2 and C3 refuse before any work when the hub cannot hold their outputs (naming
the path, the need and the free space), and a disk filled at one step by another process
(``filling_phase``) ends the job with exit 1, one line naming the path and the errno, a blocker,
a BLOCKED section, no partial file, no RUNNING MLflow run, and the earlier sections byte for byte.
The jobs run in this process (C2 compares two tiny bundles in seconds; C3 reconstructs 16 positions).
Last, C1's guard: its log, written when training waits for the guard, fails on a full hub.
"""
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from . import filling_phase
from .conftest import run_in_process
from .test_disk_full import FULL_LINE, SLOT, _earlier_green_section, _mlflow_run, _sections  # noqa: F401
from .test_disk_full import phase_run, small_fs  # noqa: F401 (fixtures)
from .test_runner_c2 import _bundle

C2_SLOT = "tf_vs_torch/phase_c2"
C3_SLOT = "iterative_reference/phase_c3_iterative"
C3_TINY = ["c3=iterative", "c3.epochs=2", "threads=1", "dataset.simulation.n_images=64"]
FS_MB = 32  # room for a tiny job and the pre-flight's margin (C3 and its store: 25 MB); the filler takes the rest


@pytest.fixture
def c2_run(tmp_path, monkeypatch, capfd):
    """c2_run(*overrides) -> (status, output) of an in-process C2 job comparing two tiny bundles."""
    monkeypatch.chdir(tmp_path)
    tf, torch = _bundle(tmp_path / "tf"), _bundle(tmp_path / "torch")

    def run(*overrides):
        argv = ["c2=tf_vs_torch", f"c2.tf_bundle={tf}", f"c2.torch_bundle={torch}",
                f"hydra.run.dir={tmp_path / 'outputs'}", *overrides]
        status, out, err = run_in_process(argv, capfd, monkeypatch)
        return status, out + err

    return run


@pytest.fixture
def c3_run(tmp_path, monkeypatch, capfd, sim_cache):
    """c3_run(*overrides) -> (status, output) of an in-process tiny C3 job."""
    monkeypatch.chdir(tmp_path)

    def run(*overrides):
        argv = [*C3_TINY, f"dataset.cache_dir={sim_cache}", f"hydra.run.dir={tmp_path / 'outputs'}", *overrides]
        status, out, err = run_in_process(argv, capfd, monkeypatch)
        return status, out + err

    return run


def _runs(store: Path, phase: str):
    client = MlflowClient(f"sqlite:///{store}")
    if not store.exists():
        return []
    return client.search_runs([e.experiment_id for e in client.search_experiments()], f"tags.phase = '{phase}'")


def _leftovers(root: Path) -> list[Path]:
    """Temporary files, staging folders and reserves left under ``root``."""
    return [path for path in root.rglob("*") if ".tmp" in path.name or path.name.startswith(".disk_reserve")]


def _assert_refused(status: int, output: str, slot_dir: Path, fs: Path, tmp_path: Path) -> str:
    """The pre-flight's blocker in the slot names the path, the need and the free space; the text."""
    assert status == 1, output[-3000:]
    (blocker,) = (slot_dir / "red").glob("blocked_*_disk_pre_flight.md")
    text = blocker.read_text()
    assert "- Failed step: disk pre-flight" in text and "not enough disk space" in text
    assert f"on the file system of {fs}" in text and "MB free" in text and "the job needs" in text
    assert "hub.root" in text and "Nothing was written" in text
    assert output.strip().splitlines()[-1] == f"blocker: {blocker.relative_to(tmp_path)}"
    assert "refused by the disk pre-flight (nothing was run)" in output and "Traceback" not in output
    return text


def _assert_blocked_by_full_disk(status, output, root: Path, slot: str, fs: Path, tmp_path: Path, earlier,
                                 store: Path, phase: str) -> None:
    assert status == 1, output[-3000:]
    full = FULL_LINE.findall(output)
    assert full and Path(full[0]).is_relative_to(fs), output[-3000:]
    last = output.strip().splitlines()[-1]
    blockers = list((root / slot / "red").glob("blocked_*.md"))
    assert len(blockers) == 1 and last == f"blocker: {blockers[0].relative_to(tmp_path)}", output[-2000:]
    assert FULL_LINE.search(blockers[0].read_text())
    inventory, _ = _sections(root, slot)
    assert inventory is not None and "Status: BLOCKED" in inventory and "out of disk space" in inventory
    assert _sections(root, "tf_baseline/phase_c1_earlier") == earlier  # byte for byte
    assert _leftovers(fs) == [] and not list(tmp_path.glob(".disk_reserve*"))
    (run,) = _runs(store, phase)
    assert run.info.status == "FAILED" and run.data.tags["status"] == "BLOCKED"
    assert run.data.tags["blocker"] == last.split(": ", 1)[1]


# C2 -------------------------------------------------------------------------------------------------------


def test_c2_refuses_before_any_work_when_the_hub_cannot_hold_its_comparison(c2_run, small_fs, tmp_path):
    fs = small_fs("fs", 3)
    store = tmp_path / "mlflow.db"
    status, output = c2_run(f"hub.root={fs / 'hub'}", f"tracking.uri=sqlite:///{store}")
    text = _assert_refused(status, output, fs / "hub" / C2_SLOT, fs, tmp_path)
    assert "comparison 4.19 MB in " in text and "logs 4.19 MB" in text
    assert not (fs / "hub" / C2_SLOT / "analysis" / "comparison.json").exists()
    assert _runs(store, "c2") == []  # no MLflow run was started, so none is left RUNNING


def test_c2_refuses_when_its_sqlite_store_has_no_room(c2_run, small_fs, tmp_path):
    fs = small_fs("store", 2)
    status, output = c2_run(f"hub.root={tmp_path / 'hub'}", f"tracking.uri=sqlite:///{fs / 'mlflow.db'}")
    assert status == 1, output[-3000:]
    (blocker,) = (tmp_path / "hub" / C2_SLOT / "red").glob("blocked_*_disk_pre_flight.md")
    assert f"{fs}: not enough disk space" in blocker.read_text() and "MLflow store 4.19 MB" in blocker.read_text()


@pytest.mark.parametrize("step", ["comparison", "inventory"])
@pytest.mark.parametrize("store_on_full_disk", [False, True], ids=["hub", "hub_and_sqlite_store"])
def test_c2_on_a_disk_that_fills_ends_blocked_with_a_record(c2_run, small_fs, tmp_path, monkeypatch, step,
                                                            store_on_full_disk):
    fs = small_fs("fs", FS_MB)
    root, store = fs / "hub", (fs if store_on_full_disk else tmp_path) / "mlflow.db"
    earlier = _earlier_green_section(root)
    filling_phase.install(step, fs, monkeypatch.setattr)
    status, output = c2_run(f"hub.root={root}", f"tracking.uri=sqlite:///{store}")
    _assert_blocked_by_full_disk(status, output, root, C2_SLOT, fs, tmp_path, earlier, store, "c2")
    assert not (root / C2_SLOT / "analysis" / "comparison.png").exists() or step == "inventory"


# C3 -------------------------------------------------------------------------------------------------------


def test_c3_refuses_before_any_work_when_the_hub_cannot_hold_its_reconstruction(c3_run, small_fs, tmp_path):
    fs = small_fs("fs", 3)
    store = tmp_path / "mlflow.db"
    status, output = c3_run(f"hub.root={fs / 'hub'}", f"tracking.uri=sqlite:///{store}")
    text = _assert_refused(status, output, fs / "hub" / C3_SLOT, fs, tmp_path)
    assert "reconstruction " in text and "debug bundle " in text and "model weights" not in text
    assert "step: imports" not in output and not (fs / "hub" / C3_SLOT / "run_iterative").exists()
    assert _runs(store, "c3") == []


@pytest.mark.slow  # 3 tiny reconstructions, about 10 s each
@pytest.mark.parametrize("step, store_on_full_disk", [("data", False), ("bundle", False), ("inventory", True)])
def test_c3_on_a_disk_that_fills_ends_blocked_with_a_record(c3_run, small_fs, tmp_path, monkeypatch, step,
                                                            store_on_full_disk):
    fs = small_fs("fs", FS_MB)
    root, store = fs / "hub", (fs if store_on_full_disk else tmp_path) / "mlflow.db"
    earlier = _earlier_green_section(root)
    filling_phase.install(step, fs, monkeypatch.setattr)
    cache = [f"dataset.cache_dir={fs / 'cache'}"] if step == "data" else []
    status, output = c3_run(f"hub.root={root}", f"tracking.uri=sqlite:///{store}", *cache)
    _assert_blocked_by_full_disk(status, output, root, C3_SLOT, fs, tmp_path, earlier, store, "c3")


# C1's guard log ------------------------------------------------------------------------------------------


@pytest.mark.slow  # one tiny C1 run up to its first epoch, about 15 s
def test_a_guard_log_that_cannot_be_written_on_a_full_hub_ends_the_run_blocked_naming_it(phase_run, small_fs,
                                                                                      tmp_path, monkeypatch):
    """The guard (runners.process.guard) writes its log when training waits for it; on a full hub that write
    fails: exit 1, not a crash; the record, blocker and MLflow run name the guard log and the errno;
    once the job gave its reserved space back, the guard log is written after all."""
    fs = small_fs("fs", 48)
    root, store = fs / "hub", tmp_path / "mlflow.db"
    earlier = _earlier_green_section(root)
    filling_phase.install("guard log", fs, monkeypatch.setattr)
    status, output = phase_run(f"hub.root={root}", f"tracking.uri=sqlite:///{store}")
    guard_log = root / SLOT / "green" / "pytest_tf_translation_guard.log"

    assert status == 1, output[-3000:]
    assert "Traceback" not in output and "I/O operation on closed file" not in output, output[-3000:]
    assert FULL_LINE.findall(output)[0] == str(guard_log), output[-3000:]
    last = output.strip().splitlines()[-1]
    (blocker,) = (root / SLOT / "red").glob("blocked_*_tf_translation_guard.md")
    assert last == f"blocker: {blocker.relative_to(tmp_path)}"
    text = blocker.read_text()
    assert f"out of disk space: {guard_log}: [Errno 28]" in text and "- Failed step: guard wait" in text
    inventory, _ = _sections(root, SLOT)
    assert "Status: BLOCKED" in inventory and str(guard_log) in inventory
    assert _sections(root, "tf_baseline/phase_c1_earlier") == earlier
    run = _mlflow_run(store)
    assert run.info.status == "FAILED" and run.data.tags["status"] == "BLOCKED"
    assert str(guard_log) in run.data.tags["error"]
    assert "# result: GREEN" in guard_log.read_text()  # written once the reserved space was given back
    assert _leftovers(fs) == []

"""Issue 26, parts 1 and 2: the disk pre-flight, and a disk that fills during the run anyway.

Real small file systems: a tmpfs mounted for the test (we run as root), or an ext4 image on a
loop device where tmpfs cannot be mounted; skipped, with the reason, where neither works.
``filling_phase`` fills the file system right before the job writes at one step (data cache,
weights, bundle, inventory), as another process on a shared disk would. The jobs run in this
process at tiny sizes (TensorFlow loaded once); one runs in a subprocess, where h5py's failed
close used to end the process with a segmentation fault.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ptycho import disk_preflight
from runners.process import diskfull, xla
from runners.evidence import hub, outcome
from runners.evidence import GREEN, PhaseRecord

from . import filling_phase
from .conftest import REPO, run_in_process

TINY = ["c1=scaled", "xla=off", "c1.n_images=32", "c1.n_groups=8", "c1.batch_size=4", "c1.model.n_filters_scale=1",
        "dataset.simulation.n_images=96"]
SLOT = "tf_baseline/phase_c1_scaled"
EARLIER = "tf_baseline/phase_c1_earlier"
FS_MB = 48  # room for the tiny job and the pre-flight's margin; the filler takes the rest
FULL_LINE = re.compile(r"out of disk space: (\S+): \[Errno 28\] No space left on device \(ENOSPC\)")


def _mount(target: Path, size_mb: int) -> str | None:
    """Mount a small file system at ``target``: tmpfs, else an ext4 image on a loop device; None,
    or why neither could be mounted."""
    target.mkdir(parents=True, exist_ok=True)
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(target)],
                           capture_output=True, text=True)
    if tmpfs.returncode == 0:
        return None
    image = target.with_suffix(".img")
    with open(image, "wb") as handle:
        handle.truncate(size_mb << 20)
    steps = [["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], ["mount", "-o", "loop", str(image), str(target)]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            return f"tmpfs: {tmpfs.stderr.strip() or tmpfs.returncode}; loop device: {done.stderr.strip()}"
    return None


@pytest.fixture
def small_fs(tmp_path):
    """small_fs(name, size_mb) -> the mount point of a new small file system (unmounted after the test)."""
    mounted = []

    def make(name: str, size_mb: int = FS_MB) -> Path:
        target = tmp_path / name
        why = _mount(target, size_mb)
        if why is not None:
            pytest.skip(f"no small file system could be mounted: {why}")
        mounted.append(target)
        return target

    yield make
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def phase_run(tmp_path, monkeypatch, capfd, write_guard, sim_cache):
    """phase_run(*overrides) -> (status, stdout + stderr) of an in-process tiny C1 job launched in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(xla, "needs_isolation", lambda: False)
    guard = write_guard(tmp_path, passing=True)

    def run(*overrides):
        argv = [*TINY, f"guard.selector={guard}", f"hydra.run.dir={tmp_path / 'outputs'}",
                f"dataset.cache_dir={sim_cache}", *overrides]
        status, out, err = run_in_process(argv, capfd, monkeypatch)
        return status, out + err

    return run


def _earlier_green_section(root: Path) -> tuple[str, str]:
    """An earlier GREEN section and summary entry in the hub (another slot); their text."""
    slot = hub.resolve_slot(root, EARLIER, tag="tf", phase_stem="phase_c1_earlier", variant="earlier",
                            guard_name="tf_translation_guard")
    record = PhaseRecord(
        slot=EARLIER, title="Phase C1 — an earlier run", utc_time="2026-01-01T00:00:00Z", command="earlier",
        env={}, versions={}, git_commit="abc", parameters={}, paths={"bundle": "b"}, status=GREEN,
        stats_sha1="0" * 40)
    outcome.mark_green(record, slot, 10)
    return _sections(root, EARLIER)


def _sections(root: Path, slot: str) -> tuple[str, str]:
    inventory = hub.inventory_file(root).read_text(encoding="utf-8")
    summary = hub.summary_file(root).read_text(encoding="utf-8")
    return hub.read_section(inventory, slot), hub.read_section(summary, slot, markdown=True)


def _mlflow_run(store: Path):
    (run,) = MlflowClient(f"sqlite:///{store}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{store}").search_experiments()])
    return run


def _no_partials(folder: Path, step: str) -> list[Path]:
    """Temporary files, staging folders and reserves left in ``folder``; weights when their write failed."""
    partial = ("model.weights.h5",) if step == "weights" else ()
    return [path for path in folder.rglob("*")
            if ".tmp" in path.name or path.name.startswith(".disk_reserve") or path.name in partial]


# 1. The pre-flight ----------------------------------------------------------------------------------


def test_the_preflight_refuses_what_cannot_fit_and_names_path_need_and_free_space(small_fs):
    fs = small_fs("fs", 2)
    needs = [disk_preflight.DiskNeed("model weights", fs / "hub" / "run", 5_000_000, "hub.root"),
             disk_preflight.DiskNeed("logs", fs / "hub" / "cli", 100_000, "hub.root")]
    t0 = time.perf_counter()
    with pytest.raises(disk_preflight.DiskSpaceError) as refused:
        disk_preflight.check_disk(needs)
    seconds = time.perf_counter() - t0
    message = str(refused.value)
    assert message.startswith(f"{fs / 'hub' / 'run'}: not enough disk space: the job needs 7.42 MB")
    assert "model weights 5 MB" in message and "which has 2.1 MB free" in message and "hub.root" in message
    assert refused.value.free_bytes <= 2 << 20 < refused.value.need_bytes
    assert seconds < 2.0  # the bound; a statvfs per file system takes microseconds
    assert not any(fs.iterdir())  # nothing written
    assert disk_preflight.check_disk(needs[1:])  # what fits passes


def test_needs_on_two_file_systems_are_checked_apart(small_fs, tmp_path):
    fs = small_fs("fs", 4)
    needs = [disk_preflight.DiskNeed("debug bundle", fs / "hub", 2_000_000, "hub.root"),
             disk_preflight.DiskNeed("simulated dataset", tmp_path / "cache", 2_000_000, "dataset.cache_dir")]
    assert len(disk_preflight.check_disk(needs)) == 2  # 2 MB each (with margin) fits 4 MB and the big disk


def test_a_run_that_cannot_fit_is_blocked_before_any_work(phase_run, small_fs, tmp_path):
    fs = small_fs("fs", 3)
    status, output = phase_run(f"hub.root={fs / 'hub'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    assert status == 1, output[-3000:]
    (blocker,) = (fs / "hub" / SLOT / "red").glob("blocked_*_disk_pre_flight.md")
    text = blocker.read_text()
    assert "- Failed step: disk pre-flight" in text and "not enough disk space" in text
    assert f"{fs / 'hub' / SLOT / 'run_scaled'}" in text and "MB free" in text
    assert not (fs / "hub" / SLOT / "run_scaled").exists() and "step: guard" not in output
    assert output.strip().splitlines()[-1] == f"blocker: {blocker.relative_to(tmp_path)}"


# 2. Out of space anyway -------------------------------------------------------------------------------


@pytest.mark.slow  # 8 tiny runs, about 80 s together
@pytest.mark.parametrize("step", filling_phase.STEPS)
@pytest.mark.parametrize("store_on_full_disk", [False, True], ids=["hub", "hub_and_sqlite_store"])
def test_a_disk_that_fills_at_a_step_ends_the_run_blocked_with_a_record(phase_run, small_fs, tmp_path, monkeypatch,
                                                                         step, store_on_full_disk):
    fs = small_fs("fs")
    root, store = fs / "hub", (fs if store_on_full_disk else tmp_path) / "mlflow.db"
    earlier = _earlier_green_section(root)
    filling_phase.install(step, fs, monkeypatch.setattr)
    cache = [f"dataset.cache_dir={fs / 'cache'}"] if step == "data" else []
    status, output = phase_run(f"hub.root={root}", f"tracking.uri=sqlite:///{store}", *cache)

    assert status == 1, output[-3000:]
    full = FULL_LINE.findall(output)
    assert full and Path(full[0]).is_relative_to(fs), output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("blocker: "), output[-2000:]
    blockers = list((root / SLOT / "red").glob("blocked_*.md"))
    assert len(blockers) == 1 and last == f"blocker: {blockers[0].relative_to(tmp_path)}"
    assert FULL_LINE.search(blockers[0].read_text())
    inventory, _ = _sections(root, SLOT)
    assert inventory is not None and "Status: BLOCKED" in inventory and "out of disk space" in inventory
    assert _sections(root, EARLIER) == earlier  # the earlier section and summary entry, byte for byte
    assert _no_partials(root, step) == [], _no_partials(root, step)
    run = _mlflow_run(store)
    assert run.info.status == "FAILED" and run.data.tags["status"] == "BLOCKED"
    assert FULL_LINE.search(run.data.tags["error"]) and run.data.tags["blocker"] == last.split(": ", 1)[1]
    assert not list(fs.glob("**/.disk_reserve*")) and not list(tmp_path.glob(".disk_reserve*"))


def test_where_the_hub_cannot_take_the_blocker_it_goes_to_the_launch_folder_then_mlflow(small_fs, tmp_path):
    fs, launch = small_fs("fs", 1), small_fs("launch", 1)
    slot = hub.resolve_slot(fs / "hub", SLOT, tag="tf", phase_stem="phase_c1_scaled", variant="scaled",
                            guard_name="tf_translation_guard")
    slot.make_dirs()
    filling_phase.fill(fs)
    record = PhaseRecord(slot=SLOT, title="T", utc_time="2026-01-01T00:00:00Z", command="c", env={}, versions={},
                         git_commit="abc", parameters={}, paths={}, step="training")
    try:
        raise OSError(28, "No space left on device", str(slot.run_dir / "model.weights.h5"))
    except OSError as exc:
        error = exc
    assert outcome.block(record, slot, error, launch, 5) is not None  # the launch folder took it
    (kept,) = launch.glob("blocked_*_tf_baseline_phase_c1_scaled_training.md")
    assert record.blocker == (f"{kept.name} (the hub could not take it: {slot.red_dir}: [Errno 28] "
                              "No space left on device)")
    assert record.hub_error == f"section and summary entry not written: {slot.inventory}: [Errno 28] No space left on device"
    filling_phase.fill(launch)
    kept_in_mlflow = []
    assert outcome.block(record, slot, error, launch, 5, elsewhere=lambda text: kept_in_mlflow.append(text)
                         or "the description of MLflow run r1") is None
    assert record.blocker.startswith("the description of MLflow run r1 (the hub could not take it: ")
    assert "# BLOCKED: T" in kept_in_mlflow[0] and "No space left on device" in kept_in_mlflow[0]


@pytest.mark.slow
def test_a_weights_write_into_a_full_disk_exits_1_not_with_a_segmentation_fault(small_fs, tmp_path, write_guard,
                                                                                 sim_cache):
    fs = small_fs("fs")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for key in ("TF_XLA_FLAGS", "USE_XLA_TRANSLATE"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "runner" / "filling_phase.py"), "weights", str(fs), *TINY,
         f"hub.root={fs / 'hub'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"dataset.cache_dir={sim_cache}",
         f"guard.selector={write_guard(tmp_path, passing=True)}", f"hydra.run.dir={tmp_path / 'outputs'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 1, (done.returncode, output[-3000:])
    assert "Segmentation fault" not in output and "Can't decrement id ref count" not in output
    assert FULL_LINE.search(output) and output.strip().splitlines()[-1].startswith("blocker: ")
    assert not (fs / "hub" / SLOT / "run_scaled" / "model.weights.h5").exists()


# 3. Pieces ------------------------------------------------------------------------------------------------


def test_find_names_the_path_and_errno_of_an_os_error_an_h5py_error_and_a_full_sqlite_store(tmp_path):
    plain = OSError(28, "No space left on device", "/hub/x.npz")
    assert diskfull.find(plain).line() == "out of disk space: /hub/x.npz: [Errno 28] No space left on device (ENOSPC)"
    h5 = OSError(28, "Can't synchronously write data (file write failed: time = Mon Dec  7 2026\n, filename = "
                     "'/hub/run/model.weights.h5', file descriptor = 3, errno = 28, error message = 'No space')")
    assert diskfull.find(h5).path == "/hub/run/model.weights.h5"
    try:
        try:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full")
        except RuntimeError as cause:
            raise ValueError("could not log") from cause
    except ValueError as chained:
        assert diskfull.find(chained, tmp_path / "mlflow.db").path == str(tmp_path / "mlflow.db")
    assert diskfull.find(OSError(13, "Permission denied", "/x")) is None and diskfull.find(ValueError("x")) is None


def test_the_cli_log_stops_on_a_full_disk_and_the_run_goes_on(small_fs, capfd):
    from runners.process.tee import FdTee

    fs = small_fs("fs", 1)
    with FdTee(fs / "cli.log", "# banner") as tee:
        filling_phase.fill(fs)
        # through file descriptor 1, as the job's output reaches the tee (pytest's capture may hold sys.stdout);
        # twice the file system's size, so the log cannot fit it into pages it already holds
        for _ in range(1000):
            os.write(1, b"x" * 2000 + b"\n")
        os.write(1, b"still here\n")
    assert tee.log_error is not None and tee.log_error.errno == 28
    assert "still here" in capfd.readouterr().out


def test_a_full_sqlite_store_degrades_the_tracker_and_the_run_is_ended_once_there_is_room(small_fs):
    """The store alone is full (the hub has room): the job goes on without MLflow, and ends the run
    FAILED (not RUNNING) once the space it set aside on the store's disk is given back."""
    from runners import tracking

    fs = small_fs("store", 8)
    tracker = tracking.Tracker(f"sqlite:///{fs / 'mlflow.db'}", "E", 30)
    tracker.start("slot", {"status": "RUNNING"})
    reserve = diskfull.Reserve(fs)
    filling_phase.fill(fs)
    tracker.log_points("step_loss", [[step, 1.0] for step in range(5000)])
    assert tracker.failure is not None and tracker.failure.disk_full, tracker.failure
    first = tracker.failure
    reserve.release()
    tracker.end_despite_failure(False, {"status": "BLOCKED", "error": "out of disk space"})
    run = MlflowClient(tracker.uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED" and run.data.tags["status"] == "BLOCKED"
    assert tracker.failure == first  # the record still says where tracking failed first


def test_only_this_runs_partial_files_go_the_complete_ones_stay(tmp_path):
    run_dir, analysis = tmp_path / "run_scaled", tmp_path / "analysis"
    run_dir.mkdir()
    (run_dir / "model.weights.h5").write_bytes(b"earlier complete weights")
    (run_dir / "history.json").write_text("{}")  # an earlier run's, left alone
    partials = diskfull.Partials(run_dir, analysis)
    (run_dir / "model.weights.h5").write_bytes(b"half")  # this run's write that failed
    (run_dir / "model_spec.json").write_text("{}")  # this run's, complete
    staging = analysis / ".forward_parity_debug_tf.tmp-abc"
    staging.mkdir(parents=True)
    (staging / "stats.json").write_text("{")
    (run_dir / ".reconstruction.npz.123.tmp").write_bytes(b"x")
    error = OSError(28, "No space left on device", str(run_dir / "model.weights.h5"))
    full = diskfull.settle(error, partials)
    assert full.path == str(run_dir / "model.weights.h5")
    assert sorted(p.name for p in run_dir.iterdir()) == ["history.json", "model_spec.json"]
    assert list(staging.iterdir()) == []
    assert diskfull.settle(ValueError("not a disk"), partials) is None


def test_a_reserve_is_real_space_given_back_and_a_dead_jobs_reserve_is_cleared(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f"{diskfull.RESERVE_PREFIX}{dead.pid}"
    left.write_bytes(b"\0" * 10)
    reserve = diskfull.Reserve(tmp_path)
    assert not left.exists() and reserve.path.stat().st_size == diskfull.RESERVE_BYTES
    assert reserve.path.stat().st_blocks * 512 >= diskfull.RESERVE_BYTES  # blocks, not a sparse hole
    reserve.release()
    assert list(tmp_path.iterdir()) == []


def test_a_store_on_a_disk_without_room_is_refused_by_the_preflight_too(phase_run, small_fs, tmp_path):
    fs = small_fs("store", 2)
    status, output = phase_run(f"hub.root={tmp_path / 'hub'}", f"tracking.uri=sqlite:///{fs / 'mlflow.db'}")
    assert status == 1, output[-3000:]
    (blocker,) = (tmp_path / "hub" / SLOT / "red").glob("blocked_*_disk_pre_flight.md")
    text = blocker.read_text()
    assert f"{fs}: not enough disk space" in text and "MLflow store 4.19 MB" in text and "tracking.uri" in text

"""Hostile data files through the runner (issue 9): one blocker, exit status 1, no bundle, small memory.

The two huge cases (a scan position millions of pixels away, a header declaring terabytes) run
as subprocesses so that their peak memory (ru_maxrss from ``os.wait4``) is the run's own; the
others run in this process at the in-process tests' tiny sizes. The pre-flight's unit cases are
in tests/data/test_preflight.py.
"""
import io
import os
import subprocess
import sys
import threading
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from runners.process import xla
from runners.inputs.datasets import check_dataset_size
from runners.schema import to_spec

from .conftest import run_in_process


REPO = Path(__file__).resolve().parents[2]
TINY = ["c1=scaled", "xla=off", "c1.n_images=32", "c1.n_groups=8", "c1.batch_size=4", "c1.model.n_filters_scale=1"]
SLOT = "tf_baseline/phase_c1_scaled"
PEAK_LIMIT_BYTES = 2 * 1024**3
N = 64


def _arrays(seed=0, side=7, step=8.0):
    """A valid dataset of side**2 positions on a grid (tiny frames; training is never reached)."""
    rng = np.random.default_rng(seed)
    grid = np.arange(side) * step + 100.0
    n = side * side
    return {
        "diffraction": rng.random((n, N, N)).astype(np.float32),
        "probeGuess": (rng.random((N, N)) + 1j * rng.random((N, N))).astype(np.complex64),
        "xcoords": np.tile(grid, side),
        "ycoords": np.repeat(grid, side),
    }


def _with_terabyte_header(path, arrays, key):
    """Save ``arrays`` with the .npy header of ``key`` declaring 2**40 float64 values (8.8 TB)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**40,)})
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in arrays.items():
            member = io.BytesIO()
            np.save(member, value)
            data = header.getvalue() + value.tobytes() if name == key else member.getvalue()
            archive.writestr(f"{name}.npy", data)


def _dataset(folder: Path, train_edit=None, test_edit=None, writer=None):
    """(train, test) paths of a valid dataset after the optional edits of the arrays."""
    paths = []
    for name, edit, seed in (("train", train_edit, 0), ("test", test_edit, 1)):
        arrays = _arrays(seed)
        if edit:
            edit(arrays)
        path = folder / f"{name}.npz"
        (writer or {}).get(name, lambda p, a: np.savez(p, **a))(path, arrays)
        paths.append(path)
    return paths


def _files_overrides(train, test):
    return ["dataset=fly001", f"dataset.train_data_file={train}", f"dataset.test_data_file={test}"]


def _run_measured(args, cwd: Path, timeout=300):
    """(exit status, output, peak RSS bytes) of ``python -m runners.phase *args`` in ``cwd``.

    The peak is the run's own VmHWM (/proc/<pid>/status, per address space, so it starts afresh at
    exec), read every 10 ms until the run ends. ``ru_maxrss`` from ``os.wait4`` is not the run's own:
    Python starts the child with vfork, and the kernel carries the parent's high-water mark across
    exec, so the run "peaked" at whatever the pytest worker held (2.85 GB after other tests in the
    full suite, for a run that used 0.4 GB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("TF_XLA_FLAGS", None)
    env.pop("USE_XLA_TRANSLATE", None)
    log = cwd / "cli_output.txt"
    peak, done = [0], threading.Event()

    def watch(pid):
        while not done.wait(0.01):
            try:
                status_text = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                return
            for line in status_text.splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) * 1024)

    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "runners.phase", *args], cwd=cwd, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
        watcher = threading.Thread(target=watch, args=(process.pid,), daemon=True)
        watcher.start()
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            process.wait()
        finally:
            timer.cancel()
            done.set()
            watcher.join()
    assert peak[0] > 0, "the run's memory was never read"
    return process.returncode, log.read_text(), peak[0]


def _one_blocker(status, output, root: Path) -> str:
    """The text of the one blocker a blocked run left, after the common checks."""
    slot = root / SLOT
    assert status == 1, output
    blockers = list((slot / "red").glob("blocked_*.md"))
    assert len(blockers) == 1, blockers
    assert not (slot / "analysis" / "forward_parity_debug_tf").exists()
    assert not list((slot / "run_scaled").glob("*.h5")) and not (slot / "run_scaled" / "history.json").exists()
    assert f"blocker: {blockers[0].relative_to(root.parent)}" in output
    text = blockers[0].read_text()
    assert "Failed step: data" in text
    return text


@pytest.mark.slow
@pytest.mark.parametrize("case", ["position_2e6_px_away", "header_declares_terabytes"])
def test_huge_cases_block_once_with_small_memory(tmp_path, isolated_overrides, write_guard, case):
    if case == "position_2e6_px_away":
        train, test = _dataset(tmp_path, test_edit=lambda a: a["xcoords"].__setitem__(5, 2e6))
        named = [f"{test}: key 'xcoords'", "#5 (x=2e+06, y=100)", "GB"]
    else:
        train, test = _dataset(tmp_path, writer={"train": lambda p, a: _with_terabyte_header(p, a, "xcoords")})
        named = [f"{train}: key 'xcoords'", "declar"]
    args = [*TINY, *_files_overrides(train, test), *isolated_overrides(tmp_path),
            f"guard.selector={write_guard(tmp_path, passing=True)}"]
    status, output, peak = _run_measured(args, tmp_path)
    text = _one_blocker(status, output, tmp_path / "hub")
    assert all(words in text for words in named), text
    assert peak <= PEAK_LIMIT_BYTES, f"peak RSS {peak / 1e9:.2f} GB"
    print(f"{case}: peak RSS {peak / 1e9:.3f} GB")


@pytest.fixture
def phase_run(tmp_path, monkeypatch, capfd, isolated_overrides, write_guard):
    """phase_run(*overrides) -> (exit status, stdout + stderr, hub root) of an in-process run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(xla, "needs_isolation", lambda: False)
    guard = write_guard(tmp_path, passing=True)

    def run(*overrides):
        status, out, err = run_in_process(
            [*TINY, *isolated_overrides(tmp_path), f"guard.selector={guard}", *overrides], capfd, monkeypatch)
        return status, out + err, tmp_path / "hub"

    return run


def _zero(key):
    return lambda arrays: arrays.__setitem__(key, np.zeros_like(arrays[key]))


def _no_positions(arrays):
    arrays.update(diffraction=np.zeros((0, N, N), np.float32), xcoords=np.zeros(0), ycoords=np.zeros(0))


IN_PROCESS_CASES = {
    # id: (train edit, test edit, extra overrides, words of the blocker; {train}/{test}: the paths)
    "zero_probe": (_zero("probeGuess"), None, [], ["{train}: key 'probeGuess'", "not all zero"]),
    "zero_diffraction": (None, _zero("diffraction"), [], ["{test}: key 'diffraction'", "not all zero"]),
    "no_positions": (_no_positions, None, [], ["{train}: key 'diffraction'", "zero images"]),
    "network_too_wide": (None, None, ["c1.model.n_filters_scale=4096"], ["n_filters_scale", "GB"]),
    "budget_too_small": (None, None, ["c1.memory_budget_gb=0.001"], ["c1.memory_budget_gb = 0.001", "GB"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(IN_PROCESS_CASES))
def test_bad_data_blocks_once_in_process(phase_run, tmp_path, case):
    train_edit, test_edit, overrides, words = IN_PROCESS_CASES[case]
    train, test = _dataset(tmp_path, train_edit, test_edit)
    status, output, root = phase_run(*_files_overrides(train, test), *overrides)
    text = _one_blocker(status, output, root)
    for expected in words:
        assert expected.format(train=train, test=test) in text, text


@pytest.mark.slow
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf", "lots"])
def test_an_impossible_memory_budget_is_a_config_error(phase_run, value):
    status, output, root = phase_run(f"c1.memory_budget_gb={value}")
    assert status == 1 and "c1.memory_budget_gb" in output, output
    assert not (root / SLOT).exists()


def _spec(compose_phase, train, test):
    return to_spec(compose_phase([*TINY, *_files_overrides(train, test)]))


def test_the_size_check_reads_headers_not_arrays(tmp_path, compose_phase):
    train, test = _dataset(tmp_path, writer={"train": lambda p, a: _with_terabyte_header(p, a, "xcoords")})
    tracemalloc.start()
    try:
        check_dataset_size(_spec(compose_phase, train, test), tmp_path)  # left to the data step's blocker
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10e6


def test_the_size_check_leaves_a_file_without_positions_to_the_data_step(tmp_path, compose_phase):
    train, test = _dataset(tmp_path, train_edit=_no_positions)
    check_dataset_size(_spec(compose_phase, train, test), tmp_path)  # no config error naming c1.n_groups


def test_the_size_check_still_names_n_groups_for_a_small_valid_file(tmp_path, compose_phase):
    train, test = _dataset(tmp_path)
    spec = to_spec(compose_phase([*TINY, *_files_overrides(train, test), "c1.n_images=null", "c1.n_groups=50"]))
    with pytest.raises(ValueError, match="c1.n_groups: must be <= 49"):
        check_dataset_size(spec, tmp_path)

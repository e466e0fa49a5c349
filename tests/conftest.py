"""Suite-wide settings: quiet TensorFlow, one process, no network."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# Fixed thread pools (read by TensorFlow when it starts; TensorFlow may not be imported here,
# see tests/runner): a run's numbers then depend on the code alone, not on the machine's load.
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

# The full suite runs on two workers with --dist loadfile: each test file whole on one worker,
# handed out in collection order (pytest_configure below turns off xdist's own order, most tests
# first, which put these few-test files last, so one worker ran them alone at the end). The
# longest files go first: a worker that draws a long one is not handed it at the end.
# Seconds: each file's time in the full suite on 2 workers (2026-12-07, a loaded 2-core machine;
# only their order matters). Files not listed follow in collection order.
LONG_FILES_S = {
    "tests/torch/test_default_parity.py": 300,
    "tests/runner/test_slurm.py": 290,
    "tests/runner/test_tracking_server_postgres.py": 280,
    "tests/torch/test_no_collapse.py": 270,
    "tests/runner/test_interrupts.py": 260,
    "tests/runner/test_runner_inprocess.py": 250,
    "tests/model/test_determinism.py": 200,
    "tests/runner/test_runner_c2.py": 195,
    "tests/runner/test_runner_tracking_down.py": 195,
    "tests/model/test_scaled_run.py": 165,
    "tests/runner/test_mlflow_ui.py": 165,
    "tests/torch/test_training_parity.py": 130,
    "tests/runner/test_disk_full.py": 125,
    "tests/runner/test_runner_cli.py": 120,
    "tests/runner/test_code_state.py": 115,
    "tests/runner/test_runner_cli_sweeps.py": 90,
    "tests/runner/test_runner_cli_joblib.py": 90,
    "tests/model/test_smoke.py": 80,
    "tests/iterative/test_runner_c3.py": 80,
    "tests/runner/test_runner_mlflow_server.py": 75,
    "tests/runner/test_tracking_faults.py": 70,
    "tests/runner/test_installed_package.py": 70,
}


def pytest_configure(config):
    """Under xdist's controller: hand files out in collection order (``--no-loadscope-reorder``, set
    here, not in pyproject's addopts: a pytest run without xdist, such as the runner's guard with
    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, would refuse the option)."""
    if getattr(config.option, "loadscopereorder", None) is not None:
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Under xdist only: the long files first, each file's tests in their own order (stable sort)."""
    if not hasattr(config, "workerinput"):
        return
    items[:] = sorted(items, key=lambda item: -LONG_FILES_S.get(item.nodeid.split("::", 1)[0], 0))

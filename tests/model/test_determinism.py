"""Repeatable runs: the same job on the same machine gives the same stats.json sha1, also while
another process keeps a CPU busy (ptycho.determinism: fixed threads, deterministic kernels).

Each run is a fresh interpreter configured exactly as the runner configures a job
(``runners.phases.backends``: ``determinism.configure_<backend>(resolve_threads(None))``).
"""
import subprocess
import sys

import pytest

from ptycho import determinism

JOB = """
import sys
from ptycho import determinism
backend = sys.argv[1]
threads = determinism.resolve_threads(None)
if backend == "tensorflow":
    determinism.configure_tensorflow(threads)
    from ptycho.tf.workflow import run_phase_job
else:
    determinism.configure_torch(threads)
    from ptycho.torch.workflow import run_phase_job
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
train, test = simulate_dataset(SimulationSpec(n_images=48, seed=3))
result = run_phase_job(train, test, grouping=GroupingSpec(gridsize=2, n_groups=8, n_images=24, seed=1),
                       model_spec=ModelSpec(gridsize=2, n_filters_scale=1, use_xla_translate=False),
                       train_spec=TrainSpec(max_epochs=2, batch_size=4),
                       run_dir=sys.argv[2] + "/run", bundle_dir=sys.argv[2] + "/bundle")
print("sha1", result.stats_sha1)
"""
BURN = "import time\nend = time.time() + 600\nwhile time.time() < end:\n    pass\n"


def _sha1_of_run(backend, folder):
    done = subprocess.run([sys.executable, "-c", JOB, backend, str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.split("sha1 ")[-1].strip()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("pytorch", marks=pytest.mark.torch)])
def test_a_job_repeats_bit_for_bit_beside_a_cpu_burning_process(backend, tmp_path):
    if backend == "pytorch":
        pytest.importorskip("torch")
    quiet = _sha1_of_run(backend, tmp_path / "quiet")
    burner = subprocess.Popen([sys.executable, "-c", BURN])
    try:
        loaded = _sha1_of_run(backend, tmp_path / "loaded")
    finally:
        burner.kill()
        burner.wait()
    assert len(quiet) == 40 and loaded == quiet


def test_threads_resolve_to_the_affinity_mask_or_the_given_count():
    assert determinism.resolve_threads(None) == determinism.available_cpus() >= 1
    assert determinism.resolve_threads(3) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            determinism.resolve_threads(bad)


@pytest.mark.torch
def test_torch_configuration_reports_what_is_in_force():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        state = determinism.configure_torch(1)
        assert state["threads"] == "1" and state["op_determinism"] == "on"
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_num_threads(before[0])
        torch.use_deterministic_algorithms(before[1])


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.parametrize("preset, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_torchs_idle_openmp_threads_sleep_unless_the_user_chose(preset, expected):
    """Issue 9 (load): spinning OpenMP threads beside another busy process slowed the PyTorch
    phase 18x on 2 cores; a fresh process that configures torch gets the passive policy."""
    import os
    import subprocess
    import sys

    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if preset:
        env["OMP_WAIT_POLICY"] = preset
    code = ("import json; from ptycho import determinism; s = determinism.configure_torch(1); "
            "import os; print(json.dumps([s['omp_wait_policy'], os.environ['OMP_WAIT_POLICY']]))")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f'["{expected}", "{expected}"]'

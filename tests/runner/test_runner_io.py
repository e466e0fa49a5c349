"""The fd-level tee, the guard subprocess, the training callbacks and the XLA isolation rule."""
import os
import subprocess
import sys

import pytest

from runners.process import xla
from runners.phases.callbacks import EpochLogger, GuardGate, keras_base, make_callbacks
from runners.process.guard import GREEN, RED, GuardRun
from runners.process.tee import FdTee


def test_tee_captures_python_native_and_child_process_output(tmp_path, capfd):
    log = tmp_path / "cli" / "train.log"
    with FdTee(log, "# banner"):
        print("from python stdout")
        print("from python stderr", file=sys.stderr)
        os.write(2, b"native write to fd 2\n")
        subprocess.run([sys.executable, "-c", "import os; os.write(1, b'child on fd 1\\n')"], check=True)
    text = log.read_text()
    assert text.startswith("# banner\n")
    for line in ("from python stdout", "from python stderr", "native write to fd 2", "child on fd 1"):
        assert line in text
    captured = capfd.readouterr()  # still reaches the original descriptors
    assert "from python stdout" in captured.out and "native write to fd 2" in captured.err
    print("after the tee")
    assert "after the tee" not in log.read_text()


def test_tee_restores_descriptors_when_the_body_raises(tmp_path):
    before = os.fstat(1).st_ino, os.fstat(2).st_ino
    with pytest.raises(RuntimeError):
        with FdTee(tmp_path / "log.txt", "# banner"):
            raise RuntimeError("boom")
    assert (os.fstat(1).st_ino, os.fstat(2).st_ino) == before
    assert (tmp_path / "log.txt").read_text() == "# banner\n"


def _guard(tmp_path, body, timeout_s=60):
    test_file = tmp_path / "test_guard_case.py"
    test_file.write_text(body)
    logs = []
    run = GuardRun(f"{test_file} -q", tmp_path, timeout_s, logs.append)
    return run, run.finish(), logs


def test_a_green_guard_logs_a_header_and_pytest_output(tmp_path):
    run, result, logs = _guard(tmp_path, "def test_ok():\n    assert True\n")
    assert result.status == GREEN and result.passed and result.returncode == 0
    assert len(logs) == 1 and logs[0] == result.log_text
    header = logs[0].split("#" + "-" * 79)[0]
    for field in ("# UTC time: ", "# command: python -m pytest ", "# cwd: ", "# env: TF_XLA_FLAGS=",
                  "USE_XLA_TRANSLATE=", "PYTEST_DISABLE_PLUGIN_AUTOLOAD=1", "# result: GREEN (exit 0)"):
        assert field in header
    assert "1 passed" in logs[0]
    assert run.finish() is result and len(logs) == 1  # idempotent


def test_a_guard_may_load_third_party_plugins(tmp_path):
    test_file = tmp_path / "test_needs_plugin.py"
    # hydra-core (a dependency) ships a pytest plugin with this fixture
    test_file.write_text("def test_plugin_fixture(hydra_restore_singletons):\n    pass\n")
    with_plugins = GuardRun(f"{test_file} -q", tmp_path, 60, lambda text: None, autoload_plugins=True).finish()
    without = GuardRun(f"{test_file} -q", tmp_path, 60, lambda text: None).finish()
    assert with_plugins.passed and not without.passed
    assert "PYTEST_DISABLE_PLUGIN_AUTOLOAD=<unset>" in with_plugins.log_text


def test_a_red_guard_is_reported_red(tmp_path):
    _, result, logs = _guard(tmp_path, "def test_bad():\n    assert 1 == 2\n")
    assert result.status == RED and not result.passed and result.returncode == 1
    assert "# result: RED (exit 1)" in logs[0] and "1 failed" in logs[0]


def test_a_hanging_guard_is_killed_and_red(tmp_path):
    _, result, logs = _guard(tmp_path, "import time\ndef test_hang():\n    time.sleep(60)\n", timeout_s=3)
    assert result.status == RED and result.returncode is None and result.duration_s < 30
    assert "timed out after 3 s" in logs[0]


def test_callbacks_work_duck_typed_without_keras():
    events, epochs, said = [], [], []

    def wait():
        events.append("guard")

    gate, logger = make_callbacks(object, wait_for_guard=wait, log_epoch=lambda e, m: epochs.append((e, m)),
                                  mark=events.append, say=said.append)
    assert isinstance(gate, GuardGate) and isinstance(logger, EpochLogger)
    for callback in (gate, logger):  # what a PyTorch loop calls
        callback.on_train_begin({})
    for epoch in range(2):
        for callback in (gate, logger):
            callback.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})
    for callback in (gate, logger):
        callback.on_train_end({})
    assert events == ["guard", "train_begin", "first_epoch_end", "train_end"]
    assert epochs == [(0, {"loss": 1.0}), (1, {"loss": 0.5})]
    assert said == ["epoch 1/?: loss 1", "epoch 2/?: loss 0.5"]


def test_callbacks_are_keras_callbacks_and_a_red_gate_stops_fit():
    import keras
    import numpy as np

    def red():
        raise RuntimeError("guard red")

    callbacks = make_callbacks(keras_base(), wait_for_guard=red, log_epoch=lambda e, m: None, mark=lambda e: None,
                               say=lambda text: None)
    assert all(isinstance(c, keras.callbacks.Callback) for c in callbacks)
    keras.utils.set_random_seed(0)  # the suite runs TF with deterministic ops: random ops need a seed
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(RuntimeError, match="guard red"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=1, verbose=0, callbacks=callbacks)


def test_isolation_is_needed_only_when_tensorflow_saw_another_xla_env(monkeypatch):
    monkeypatch.setattr(xla, "_tf_import_env", {"TF_XLA_FLAGS": "", "USE_XLA_TRANSLATE": "1"})
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", object()))
    monkeypatch.setenv("TF_XLA_FLAGS", "")
    monkeypatch.setenv("USE_XLA_TRANSLATE", "1")
    assert not xla.needs_isolation()
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    monkeypatch.setenv("USE_XLA_TRANSLATE", "0")
    assert xla.needs_isolation()
    monkeypatch.delitem(sys.modules, "tensorflow")
    assert not xla.needs_isolation()


@pytest.mark.parametrize("value", ["/tmp/it's a \\ path", "/plain/dir", "end\\", "a\\'b", "x=1,y"])
def test_hydra_quote_round_trips_through_the_override_parser(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"hydra.run.dir={xla.hydra_quote(value)}"])[0]
    assert parsed.value() == value


def test_tensorflow_imported_outside_a_job_saw_the_process_env_the_entry_point_recorded(monkeypatch):
    monkeypatch.setattr(xla, "_tf_import_env", None)
    monkeypatch.setattr(xla, "_process_xla_env", None)
    monkeypatch.setitem(sys.modules, "tensorflow", sys.modules.get("tensorflow", object()))
    monkeypatch.setenv("TF_XLA_FLAGS", "")
    monkeypatch.setenv("USE_XLA_TRANSLATE", "1")
    assert set(xla.tf_import_env().values()) == {xla.UNKNOWN} and xla.needs_isolation()  # not recorded: isolate
    xla.remember_process_env()
    assert xla.tf_import_env() == {"TF_XLA_FLAGS": "", "USE_XLA_TRANSLATE": "1"} and not xla.needs_isolation()
    monkeypatch.setenv("USE_XLA_TRANSLATE", "0")  # a job's env_set
    assert xla.needs_isolation()

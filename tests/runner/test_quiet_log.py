"""Issue 26, part 5: a console and a CLI log without framework chatter or Hydra's hint.

TensorFlow prints start-up notes (oneDNN, CPU features, an ``E0000 ... oneDNN supports DT_INT32
only on platforms with AVX-512`` line that is no error) whatever ``TF_CPP_MIN_LOG_LEVEL`` says;
the job's tee leaves them out unless ``verbose=true``. A configuration error names its key and
ends there, without Hydra's "Set the environment variable HYDRA_FULL_ERROR=1" line.
"""
import os

import pytest

from runners.process import xla
from runners.process.tee import FdTee, framework_chatter

from .conftest import run_in_process

CHATTER = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796674174.454929    4919 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1796674174.625270    4919 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use "
    "available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796674220.118671    4919 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512. "
    "Falling back to the default Eigen-based implementation if present.",
]
KEPT = [
    "[2026-12-07 20:09:33,145][runners.phases.c1][INFO] - step: guard",
    "E0000 00:00:1796674220.118671    4919 op_kernel.cc:1857] OP_REQUIRES failed at conv_ops.cc:1: a real error",
    "Iteration 10 of the iterative engine",
    "epoch 1/1: loss -3345846",
]


@pytest.mark.parametrize("line", CHATTER)
def test_tensorflow_start_up_chatter_is_recognised(line):
    assert framework_chatter(line.encode())


@pytest.mark.parametrize("line", KEPT)
def test_the_runs_own_lines_and_real_errors_are_kept(line):
    assert not framework_chatter(line.encode())


def test_the_tee_leaves_chatter_out_of_console_and_log_in_whatever_pieces_it_comes(tmp_path, capfd):
    text = "\n".join([KEPT[0], *CHATTER, KEPT[1], KEPT[3]]) + "\nno newline at the end"
    data = text.encode()
    with FdTee(tmp_path / "cli.log", "# banner", framework_chatter):
        for start in range(0, len(data), 7):  # chunks that cut lines anywhere
            os.write(2, data[start:start + 7])
    expected = "\n".join([KEPT[0], KEPT[1], KEPT[3]]) + "\nno newline at the end"
    assert capfd.readouterr().err == expected
    assert (tmp_path / "cli.log").read_text() == "# banner\n" + expected


def test_a_line_cut_between_two_reads_is_judged_whole(tmp_path):
    """What the drain thread does with each read of the pipe (reads may cut a line anywhere)."""
    tee = FdTee(tmp_path / "unused.log", "", framework_chatter)
    data = ("\n".join([KEPT[0], *CHATTER, KEPT[3]]) + "\n").encode()
    shown, held = b"", b""
    for start in range(0, len(data), 5):
        passed, held = tee._filtered(held + data[start:start + 5])
        shown += passed
    assert held == b"" and shown.decode() == f"{KEPT[0]}\n{KEPT[3]}\n"


def test_without_a_filter_every_line_passes(tmp_path, capfd):
    with FdTee(tmp_path / "cli.log", "# banner"):
        os.write(2, ("\n".join(CHATTER) + "\n").encode())
    assert capfd.readouterr().err == "\n".join(CHATTER) + "\n"


def test_verbose_or_an_explicit_log_level_0_shows_the_framework_log(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    assert not xla.framework_log_shown(False) and xla.framework_log_shown(True)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert xla.framework_log_shown(False)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    assert not xla.framework_log_shown(False)


@pytest.mark.parametrize("override, key", [("c1.gridsize=0", "c1.gridsize"), ("c1.gridsiz=2", "c1.gridsiz"),
                                           ("c1=nope", "c1/nope")])
def test_a_config_error_names_the_key_without_hydras_hint(override, key, tmp_path, monkeypatch, capfd,
                                                          isolated_overrides):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_in_process([*isolated_overrides(tmp_path), override], capfd, monkeypatch)
    assert status == 1 and key in err
    assert "HYDRA_FULL_ERROR" not in out + err

"""In-process phase runs on the real core at tiny sizes, and an injected failure at each step.

Each failure must leave exactly one blocker, no debug bundle, an inventory section and
summary entry pointing at the blocker, and exit status 1 with the blocker path last.
The job runs in this (pytest) process: the XLA isolation rule is switched off here
because TensorFlow was imported by other tests; the CLI tests cover isolation.
"""
import dataclasses
import hashlib
import json

import numpy as np
import pytest

from runners.evidence import hub
from runners.process import xla

from .conftest import run_in_process

pytestmark = pytest.mark.slow  # runner runs in process


TINY = ["c1=scaled", "xla=off", "c1.n_images=32", "c1.n_groups=8", "c1.batch_size=4", "c1.model.n_filters_scale=1"]
SMALL_SIMULATION = "dataset.simulation.n_images=96"
SLOT = "tf_baseline/phase_c1_scaled"


@pytest.fixture
def phase_run(tmp_path, monkeypatch, capfd, isolated_overrides, write_guard):
    """phase_run(*overrides) -> (exit status, (stdout, stderr), hub root) for an in-process run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(xla, "needs_isolation", lambda: False)
    guard = write_guard(tmp_path, passing=True)

    def run(*overrides):
        files = any(o.startswith("dataset=") for o in overrides)
        argv = [*TINY, *([] if files else [SMALL_SIMULATION]), *isolated_overrides(tmp_path),
                f"guard.selector={guard}", *overrides]
        status, out, err = run_in_process(argv, capfd, monkeypatch)
        return status, (out, err), tmp_path / "hub"

    return run


def _slot_dir(root):
    return root / SLOT


def test_a_green_run_then_a_blocked_rerun_in_process(phase_run, tmp_path):
    status, output, root = phase_run()
    assert status == 0, output
    slot = _slot_dir(root)
    stats = slot / "analysis" / "forward_parity_debug_tf" / "stats.json"
    sha1 = hashlib.sha1(stats.read_bytes()).hexdigest()
    section = hub.read_section((root / "analysis" / "artifact_inventory.txt").read_text(), SLOT)
    assert section.splitlines()[0] == "Phase C1 — TF scaled baseline"
    assert "Status: GREEN" in section and f"stats.json sha1: {sha1}" in section
    assert (slot / "cli" / "train_tf_phase_c1_scaled.log").read_text().strip()
    assert (slot / "green" / "pytest_tf_translation_guard.log").is_file()
    assert (slot / "run_scaled" / "timings.json").is_file()
    assert not list((slot / "red").iterdir())
    assert sha1 in output[0].strip().splitlines()[-1]

    # a blocked rerun replaces the section; the earlier bundle stays and the blocker says so
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not an npz")
    status, output, root = phase_run(
        "dataset=fly001", f"dataset.train_data_file={broken}", f"dataset.test_data_file={broken}"
    )
    assert status == 1
    inventory = (root / "analysis" / "artifact_inventory.txt").read_text()
    assert inventory.count(f">>> BEGIN SECTION {SLOT}\n") == 1 and "Status: GREEN" not in inventory
    bundle = _slot_dir(root) / "analysis" / "forward_parity_debug_tf"
    assert (bundle / "stats.json").is_file()
    (blocker,) = (_slot_dir(root) / "red").glob("blocked_*.md")
    assert f"Earlier bundle left in place, NOT produced by this run: `{bundle.relative_to(tmp_path)}`" in (
        blocker.read_text())


def test_a_pytorch_run_in_process_fills_its_own_slot(phase_run):
    """``backend=pytorch``: slot torch_baseline/..., the torch bundle and weights, its own title; with
    ``c1.n_groups=null`` a group is seeded at every one of the 32 training images."""
    status, output, root = phase_run("backend=pytorch", "c1.n_groups=null")
    assert status == 0, output
    slot = root / "torch_baseline" / "phase_c1_scaled"
    section = hub.read_section((root / "analysis" / "artifact_inventory.txt").read_text(),
                               "torch_baseline/phase_c1_scaled")
    assert section.splitlines()[0] == "Phase C1 — PyTorch scaled baseline" and "Status: GREEN" in section
    stats = slot / "analysis" / "forward_parity_debug_torch" / "stats.json"
    assert f"stats.json sha1: {hashlib.sha1(stats.read_bytes()).hexdigest()}" in section
    assert (slot / "cli" / "train_torch_phase_c1_scaled.log").read_text().strip()
    assert (slot / "green" / "pytest_torch_translation_guard.log").is_file()
    assert (slot / "run_scaled" / "model.pt").is_file()
    fields = dict(line.split(": ", 1) for line in section.splitlines()[1:])
    assert "device=cpu" in fields["Compute"] and "n_groups=one_per_position" in fields["Parameters"]
    assert json.loads(stats.read_text())["training"]["n_groups_train"] == 32
    assert not (root / SLOT).exists()  # the TF slot is untouched


def _blocked(status, output, root, failed):
    """The one blocker of a blocked run, named after what ``failed``, after the common assertions."""
    slot = _slot_dir(root)
    assert status == 1, output
    blockers = list((slot / "red").glob("blocked_*.md"))
    assert len(blockers) == 1, blockers
    assert blockers[0].name.endswith(f"Z_{failed}.md"), blockers[0].name
    console = output[0] + output[1]
    assert console.count("blocker: ") == 1 and "HYDRA_FULL_ERROR" not in console, console[-2000:]
    assert not (slot / "analysis" / "forward_parity_debug_tf").exists()
    shown = blockers[0].relative_to(root.parent)  # paths are shown relative to the launch folder
    assert output[1].strip().splitlines()[-1] == f"blocker: {shown}"
    section = hub.read_section((root / "analysis" / "artifact_inventory.txt").read_text(), SLOT)
    assert "Status: BLOCKED" in section and f"Blocker: {shown}" in section
    assert str(shown) in (root / "summary.md").read_text()
    text = blockers[0].read_text()
    assert "## Stack trace" in text and "Traceback" in text and "pytest_tf_translation_guard.log" in text
    assert "python -m runners.phase" in text and "USE_XLA_TRANSLATE=0" in text
    return text


def test_red_guard_blocks_before_training(phase_run, write_guard, tmp_path):
    red = write_guard(tmp_path, passing=False)
    text = _blocked(*phase_run(f"guard.selector={red}"), failed="tf_translation_guard")
    assert "GuardFailed" in text and "Failed step: guard wait" in text and "Guard: RED" in text
    guard_log = (tmp_path / "hub" / SLOT / "green" / "pytest_tf_translation_guard.log").read_text()
    assert "# result: RED (exit 1)" in guard_log and "injected red guard" in guard_log
    assert not (tmp_path / "hub" / SLOT / "run_scaled" / "history.json").exists()


def test_bad_data_blocks_with_the_data_contract_error(phase_run, tmp_path):
    broken = tmp_path / "broken_train.npz"
    broken.write_bytes(b"PK\x03\x04 this is not a complete npz")
    text = _blocked(*phase_run(
        "dataset=fly001", f"dataset.train_data_file={broken}", f"dataset.test_data_file={broken}"
    ), failed="data")
    assert "DataContractError" in text and "broken_train.npz" in text and "Failed step: data" in text


def test_training_crash_blocks(phase_run, monkeypatch):
    import keras
    from ptycho.tf import workflow

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise RuntimeError("injected training crash")

    real_train = workflow.BACKEND.train
    monkeypatch.setattr(workflow, "BACKEND", dataclasses.replace(
        workflow.BACKEND, train=lambda model, data, spec, callbacks: real_train(model, data, spec, [*callbacks, Crash()])))
    text = _blocked(*phase_run(), failed="training")
    assert "injected training crash" in text and "Failed step: training" in text


def test_stitching_crash_blocks(phase_run, monkeypatch):
    from ptycho.tf import workflow

    def crash(*args, **kwargs):
        raise RuntimeError("injected stitching crash")

    monkeypatch.setattr(workflow, "BACKEND", dataclasses.replace(workflow.BACKEND, stitch_patches=crash))
    text = _blocked(*phase_run(), failed="inference_stitching_and_bundle")
    assert "injected stitching crash" in text and "Failed step: inference, stitching and bundle" in text


def test_nan_loss_blocks(phase_run, monkeypatch):
    import tensorflow as tf
    from ptycho.tf import training

    monkeypatch.setattr(training, "poisson_nll", lambda observed, predicted: tf.reduce_mean(predicted) * np.nan)
    text = _blocked(*phase_run(), failed="training")
    assert "NonFiniteLossError" in text and "Failed step: training" in text


def test_the_job_writes_its_blocker_without_the_post_hook(phase_run, tmp_path):
    missing = tmp_path / "missing.npz"
    text = _blocked(*phase_run(
        "~hydra.callbacks.hub_post_hook", "dataset=fly001",
        f"dataset.train_data_file={missing}", f"dataset.test_data_file={missing}",
    ), failed="data")
    assert "Dataset: name=fly001 train=missing.npz test=missing.npz" in text  # the files given, unread


def test_the_post_hook_writes_the_blocker_when_the_job_could_not(phase_run, monkeypatch, tmp_path):
    from runners.phases import c1

    def broken_fail(self, error):
        raise RuntimeError("the job's own blocker path is broken") from error

    monkeypatch.setattr(c1.C1Run, "_fail", broken_fail)
    missing = tmp_path / "missing.npz"
    status, output, root = phase_run(
        "dataset=fly001", f"dataset.train_data_file={missing}", f"dataset.test_data_file={missing}"
    )
    blockers = list((_slot_dir(root) / "red").glob("blocked_*.md"))
    assert status == 1 and len(blockers) == 1
    text = blockers[0].read_text()
    assert "the job's own blocker path is broken" in text and "missing.npz" in text
    section = hub.read_section((root / "analysis" / "artifact_inventory.txt").read_text(), SLOT)
    assert "Status: BLOCKED" in section and blockers[0].name in section


def test_a_config_error_names_the_key_and_writes_nothing(phase_run, tmp_path):
    status, output, root = phase_run("gridsize=0")
    assert status == 1 and "c1.gridsize (shorthand: gridsize): must be >= 1; got 0" in output[1]
    assert not root.exists()
    status, output, root = phase_run("hub.slot=../../outside")
    assert status == 1 and "hub.slot" in output[1] and not (tmp_path / "outside").exists()
    status, output, root = phase_run("backend.workflow=no_such_backend.workflow")
    assert status == 1 and "backend.workflow: module 'no_such_backend.workflow'" in output[1]
    assert not root.exists()
    status, output, root = phase_run("backend.device=cuda")
    assert status == 1 and "backend.device: must be cpu for backend=tensorflow" in output[1]
    status, output, root = phase_run("backend=pytorch", "backend.device=gpu")
    assert status == 1 and "backend.device: must be one of cpu, cuda, cuda:<index>, auto; got 'gpu'" in output[1]
    assert not root.exists()


def test_a_named_gpu_that_is_missing_blocks_the_pytorch_run_and_says_so(phase_run, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    status, output, root = phase_run("backend=pytorch", "backend.device=cuda")
    assert status == 1, output
    blockers = list((root / "torch_baseline" / "phase_c1_scaled" / "red").glob("blocked_*.md"))
    assert len(blockers) == 1 and "device 'cuda': this torch build" in blockers[0].read_text()
    assert not (root / "torch_baseline" / "phase_c1_scaled" / "run_scaled" / "model.pt").exists()


def test_phase_offsets_from_the_runner_record_every_stitching(phase_run):
    status, output, root = phase_run("c1.phase_offsets=sync")
    assert status == 0, output
    slot = _slot_dir(root)
    quality = json.loads((slot / "analysis" / "forward_parity_debug_tf" / "stats.json").read_text())["quality"]
    assert (quality["amp_mae"], quality["phase_mae"]) == (quality["amp_mae_offsets_sync"],
                                                          quality["phase_mae_offsets_sync"])
    assert quality["phase_mae_offsets_none"] > 0 and quality["phase_mae_offsets_com"] > 0
    assert "(patch phase offsets: sync)" in "".join(output)  # the closing summary says how it stitched
    saved = np.load(slot / "run_scaled" / "reconstruction.npz")
    assert saved["phase_corrections"].shape == (len(saved["offsets_xy"]),)
    section = hub.read_section((root / "analysis" / "artifact_inventory.txt").read_text(), SLOT)
    assert "phase_offsets=sync" in section and "stitch_from=canvas" in section


def test_the_diffraction_mae_loss_alone_trains_from_the_runner(phase_run):
    status, output, root = phase_run("c1.model.nll_weight=0", "c1.model.diffraction_mae_weight=1")
    assert status == 0, output
    history = json.loads((_slot_dir(root) / "run_scaled" / "history.json").read_text())
    assert "poisson_nll" not in history and history["loss"] == history["diffraction_mae"]
    assert "loss " in output[0] and "NLL" not in output[0].split("epoch 1/1:")[1].splitlines()[0]

"""MLflow helpers: flattening, parity key recipe, URIs, batching limits, datasets, sweep parents."""
import hashlib
import json

import pytest

from runners import sweep, tracking


def test_flatten_and_numeric_leaves():
    nested = {"a": {"b": 1, "c": {"d": "x"}}, "e": None}
    assert tracking.flatten(nested) == {"a.b": 1, "a.c.d": "x", "e": None}
    stats = {"patch_amplitude": {"mean": 0.5, "n": 3, "ok": True, "nan": float("nan")}, "name": "x"}
    assert tracking.numeric_leaves(stats, "bundle.") == {"bundle.patch_amplitude.mean": 0.5,
                                                          "bundle.patch_amplitude.n": 3.0}


def test_parity_key_follows_the_documented_recipe_and_ignores_other_settings():
    params = dict(N=64, gridsize=2, n_images=64, n_groups=32, neighbor_count=7, batch_size=4, max_epochs=1, seed=0)
    payload = {"dataset": {"train_sha1": "t" * 40, "test_sha1": "s" * 40}, "params": params}
    expected = hashlib.sha1(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert tracking.parity_key("t" * 40, "s" * 40, {**params, "backend": "pytorch", "xla": "off"}) == expected
    assert tracking.parity_key("t" * 40, "s" * 40, {**params, "gridsize": 1}) != expected
    with pytest.raises(ValueError, match="n_groups"):
        tracking.parity_key("t", "s", {k: v for k, v in params.items() if k != "n_groups"})


def test_relative_sqlite_uris_are_anchored_at_the_launch_dir(tmp_path):
    assert tracking.absolute_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.absolute_uri("sqlite:////abs/m.db", tmp_path) == "sqlite:////abs/m.db"
    assert tracking.absolute_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"


@pytest.fixture
def tracker(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tracking.Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "TEST-EXPERIMENT")


def test_params_in_batches_with_long_values_cut(tracker, tmp_path):
    run_id = tracker.start("tf_baseline/phase_c1_scaled", {"backend": "tensorflow"})
    params = {f"p{i:03d}": i for i in range(250)}
    params["long"] = "x" * 2000
    params["none"] = None
    tracker.log_params(params)
    tracker.log_metrics({"loss": 2.0}, step=0)
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.end(green=True)
    run = tracker.client.get_run(run_id)
    assert len(run.data.params) == 252 and run.data.params["p249"] == "249"
    assert len(run.data.params["long"]) == tracking.MAX_PARAM_CHARS and run.data.params["none"] == "null"
    history = tracker.client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 2.0), (1, 1.0)]
    assert run.info.status == "FINISHED" and run.info.run_name == "tf_baseline/phase_c1_scaled"
    assert tracker.seconds > 0


def test_datasets_carry_a_36_char_digest_and_the_full_sha1_in_a_tag(tracker, tmp_path):
    run_id = tracker.start("r", {})
    sha1 = hashlib.sha1(b"data").hexdigest()
    tracker.log_dataset("simulated", tmp_path / "train.npz", sha1, "train", 48)
    run = tracker.client.get_run(run_id)
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == sha1[:36] and dataset_input.dataset.name == "simulated"
    assert run.data.tags["dataset.train_sha1"] == sha1
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "train"


def test_the_experiment_is_created_once_even_when_two_trackers_race(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = tracking.Tracker(uri, "SAME")
    second = tracking.Tracker(uri, "SAME")
    assert first.experiment_id == second.experiment_id


def test_sweep_describe_counts_jobs():
    assert sweep.describe(["c1=scaled", "xla=on,off", "gridsize=1,2"]) == (["xla", "gridsize"], 4)
    assert sweep.describe(["c1=scaled"]) == ([], 1)
    assert sweep.describe(["lr=interval(0,1)"]) == (["lr"], None)


def test_the_last_job_to_report_ends_the_parent_run(tracker, tmp_path):
    parent = tracker.start("sweep: x", {})
    context = sweep.SweepContext(["gridsize"], 2, parent, tracker.uri, "TEST-EXPERIMENT")
    sweep.write_context(tmp_path, context)
    assert sweep.read_context(tmp_path) == context
    sweep.record_job_end(tmp_path, 0, green=True)
    sweep.finish_parent(tmp_path, context)
    assert tracker.client.get_run(parent).info.status == "RUNNING"
    sweep.record_job_end(tmp_path, 1, green=False)
    sweep.finish_parent(tmp_path, context)
    assert tracker.client.get_run(parent).info.status == "FAILED"
    sweep.finish_parent(tmp_path, context, sweep_over=True)  # idempotent
    assert tracker.client.get_run(parent).info.status == "FAILED"


def test_multirun_end_closes_a_parent_of_unknown_size(tracker, tmp_path):
    parent = tracker.start("sweep: y", {})
    context = sweep.SweepContext(["lr"], None, parent, tracker.uri, "TEST-EXPERIMENT")
    sweep.record_job_end(tmp_path, 0, green=True)
    sweep.finish_parent(tmp_path, context)
    assert tracker.client.get_run(parent).info.status == "RUNNING"
    sweep.finish_parent(tmp_path, context, sweep_over=True)
    assert tracker.client.get_run(parent).info.status == "FINISHED"


class _FakeSlurmJob:
    """Stands in for submitit's SlurmJob: records which members were awaited."""
    waited: list[str] = []
    interrupt_at: str | None = None

    def __init__(self, folder, job_id):
        self.job_id = job_id

    def wait(self):
        if self.job_id == self.interrupt_at:
            raise KeyboardInterrupt
        self.waited.append(self.job_id)


@pytest.mark.parametrize("launcher, reported, awaited", [
    ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", [0], ["7_0", "7_1"]),
    ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", [0, 1], []),  # all reported
    ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher", [0], []),  # not SLURM
    ("", [0], []),  # a context written before the launcher was recorded
])
def test_a_slurm_sweep_with_a_member_unreported_waits_for_every_member(tmp_path, monkeypatch, launcher, reported,
                                                                      awaited):
    """Hydra's submitit launcher gives up at the first member without a result while later ones still
    run; the summary waits until every member of a SLURM sweep has left the queue."""
    import submitit.slurm.slurm

    monkeypatch.setattr(submitit.slurm.slurm, "SlurmJob", _FakeSlurmJob)
    monkeypatch.setattr(_FakeSlurmJob, "waited", [])
    sweep.write_context(tmp_path, sweep.SweepContext(["gridsize"], 2, None, "sqlite:///x.db", "E", launcher=launcher))
    for member in ("7_0", "7_1"):
        (tmp_path / ".submitit" / member).mkdir(parents=True)
    (tmp_path / ".submitit" / "7").mkdir()  # submitit's array folder: not a member
    for job in reported:
        sweep.record_job_end(tmp_path, job, green=True)
    said = []
    sweep.wait_for_slurm_members(tmp_path, said.append)
    assert _FakeSlurmJob.waited == awaited
    assert bool(said) == bool(awaited)
    assert sweep.missing_jobs(tmp_path) == 2 - len(reported)


def test_ctrl_c_stops_the_wait_for_slurm_members_and_says_so(tmp_path, monkeypatch):
    import submitit.slurm.slurm

    monkeypatch.setattr(submitit.slurm.slurm, "SlurmJob", _FakeSlurmJob)
    monkeypatch.setattr(_FakeSlurmJob, "waited", [])
    monkeypatch.setattr(_FakeSlurmJob, "interrupt_at", "7_1")
    sweep.write_context(tmp_path, sweep.SweepContext(["gridsize"], 3, None, "sqlite:///x.db", "E",
                                                     launcher="x.SlurmLauncher"))
    for member in ("7_0", "7_1", "7_2"):
        (tmp_path / ".submitit" / member).mkdir(parents=True)
    said = []
    sweep.wait_for_slurm_members(tmp_path, said.append)
    assert _FakeSlurmJob.waited == ["7_0"]
    assert said[-1].startswith("stopped waiting")

"""Config composition: every group and option, the typed schema, and its error messages."""
import dataclasses
import inspect
import subprocess
import sys
import time
from enum import Enum
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from ptycho import iterative, pipeline
from ptycho.data import phantoms, simulate
from ptycho.data.cxi import CxiConversion
from ptycho.evaluation.compare import DEFAULT_TOLERANCE
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec
from runners.dataset_schema import (
    AmplitudeUnits, CxiConfig, DatasetSource, ObjectKind, ProbeKind, SimulationConfig,
)
from runners.schema import (
    Backend, C1Config, C3Config, IterativeEngine, ModelConfig, PhaseConfig, PhaseKind, XlaMode, to_spec,
)

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "runners" / "conf"


def test_default_config_is_the_scaled_tf_phase_with_xla_on(compose_phase):
    spec = to_spec(compose_phase())
    assert spec.phase is PhaseKind.c1 and spec.backend.name is Backend.tensorflow
    assert spec.xla.mode is XlaMode.on and spec.dataset.source is DatasetSource.simulated
    c1 = spec.c1
    assert (c1.n_images, c1.n_groups, c1.batch_size, c1.gridsize, c1.neighbor_count, c1.max_epochs) == (
        64, 32, 4, 2, 7, 1
    )
    assert c1.do_stitching and c1.quiet
    assert spec.tracking.uri == "sqlite:///mlflow.db"
    assert spec.tracking.experiment == "FIX-PYTORCH-FORWARD-PARITY-001"
    assert spec.hub.root == (
        "plans/active/FIX-PYTORCH-FORWARD-PARITY-001/reports/2025-11-13T000000Z/forward_parity"
    )
    assert spec.guard.selector == (
        "runners/process/guard_checks/tf_translation.py::test_non_xla_translation_guard -vv"
    )


def _options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group, option",
    [(group, option) for group in ("dataset", "backend", "xla", "c1", "guard", "tracking", "hub")
     for option in _options(group)],
)
def test_every_group_option_composes_and_validates(group, option, compose_phase):
    assert compose_phase([f"{group}={option}"], hydra_node=True).hydra.runtime.choices[group] == option
    assert getattr(to_spec(compose_phase([f"{group}={option}"])), group) is not None


@pytest.mark.parametrize(
    "preset, target",
    [("parallel", "JoblibLauncher"), ("cluster_local", "LocalLauncher"), ("slurm", "SlurmLauncher")],
)
def test_launcher_presets_compose(preset, target, compose_phase):
    launcher = compose_phase([f"hydra/launcher={preset}"], hydra_node=True).hydra.launcher
    assert launcher._target_.endswith(target)
    assert (launcher.n_jobs if preset == "parallel" else launcher.timeout_min) > 0


def test_c1_variants(compose_phase):
    baseline = to_spec(compose_phase(["c1=baseline"])).c1
    gs1 = to_spec(compose_phase(["c1=gs1"])).c1
    assert baseline.variant == "baseline" and baseline.n_images is None and baseline.max_epochs > 1
    assert baseline.n_groups is None  # a group seeded at every training position
    assert gs1.variant == "gs1" and gs1.gridsize == 1


@pytest.mark.parametrize("mode, flags, translate", [("off", "--tf_xla_auto_jit=0", "0"), ("on", "", "1")])
def test_xla_modes_set_the_job_environment(mode, flags, translate, compose_phase):
    cfg = compose_phase([f"xla={mode}"], hydra_node=True)
    assert cfg.xla.mode == mode
    assert dict(cfg.hydra.job.env_set) == {"TF_XLA_FLAGS": flags, "USE_XLA_TRANSLATE": translate}


def test_pytorch_backend_brings_its_own_guard_and_names(compose_phase):
    spec = to_spec(compose_phase(["backend=pytorch"]))
    assert (spec.backend.tag, spec.backend.label) == ("torch", "PyTorch")
    assert spec.guard.name == "torch_translation_guard"
    assert to_spec(compose_phase(["backend=pytorch", "guard=tf_translation"])).guard.name == "tf_translation_guard"


def test_the_pytorch_guard_imports_no_tensorflow(compose_phase):
    """So a PyTorch run never waits for a TensorFlow import, in its guard or in its job."""
    guard_file = to_spec(compose_phase(["backend=pytorch"])).guard.selector.split("::")[0]
    code = (f"import runpy, sys; runpy.run_path({str(REPO / guard_file)!r}); "
            "print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_gridsize_shorthand_drives_the_phase(compose_phase):
    assert to_spec(compose_phase(["gridsize=1"])).c1.gridsize == 1
    assert to_spec(compose_phase(["c1=gs1", "gridsize=3", "c1.neighbor_count=9"])).c1.gridsize == 3


def test_fly001_points_at_the_prepared_files_and_files_are_overridable(compose_phase):
    spec = to_spec(compose_phase(["dataset=fly001"]))
    assert spec.dataset.train_data_file.endswith("fly001_reconstructed_final_downsampled_data_train.npz")
    assert spec.dataset.test_data_file.endswith("fly001_reconstructed_final_downsampled_data_test.npz")
    spec = to_spec(compose_phase(["dataset.train_data_file=a.npz", "dataset.test_data_file=b.npz"]))
    assert spec.dataset.uses_files and spec.dataset.train_data_file == "a.npz"


def _defaults(cls) -> dict:
    """{field: default} of a dataclass's fields that have one (neither none nor omegaconf's MISSING);
    an enum as its value."""
    return {f.name: f.default.value if isinstance(f.default, Enum) else f.default
            for f in dataclasses.fields(cls) if f.default not in (dataclasses.MISSING, "???")}


@pytest.mark.parametrize("config, core", [
    (SimulationConfig, simulate.SimulationSpec), (CxiConfig, CxiConversion), (ModelConfig, ModelSpec),
    (C1Config, TrainSpec), (C1Config, GroupingSpec), (C3Config, iterative.IterativeSpec), (PhaseConfig, GroupingSpec),
], ids=lambda cls: cls.__name__)
def test_every_schema_default_is_the_cores(config, core):
    schema, library = _defaults(config), _defaults(core)
    shared = sorted(schema.keys() & library.keys())
    assert shared and {key: schema[key] for key in shared} == {key: library[key] for key in shared}


@pytest.mark.parametrize("config, core, extra", [
    (SimulationConfig, simulate.SimulationSpec, set()), (CxiConfig, CxiConversion, {"probe_file"}),
    (ModelConfig, ModelSpec, set()),
], ids=lambda value: getattr(value, "__name__", ""))
def test_a_schema_mirror_holds_only_the_cores_fields(config, core, extra):
    mirrored = {f.name for f in dataclasses.fields(config)} - extra
    assert mirrored <= {f.name for f in dataclasses.fields(core)}
    assert core is ModelSpec or mirrored == {f.name for f in dataclasses.fields(core)}


def test_c1_stitching_defaults_are_the_pipelines():
    run_job, c1 = inspect.signature(pipeline.run_job).parameters, _defaults(C1Config)
    for key in ("do_stitching", "phase_offsets", "stitch_from"):
        assert c1[key] == run_job[key].default, key


@pytest.mark.parametrize("enum, choices", [
    (ObjectKind, phantoms.OBJECT_KINDS), (ProbeKind, phantoms.PROBE_KINDS),
    (AmplitudeUnits, simulate.AMPLITUDE_UNITS), (IterativeEngine, iterative.ENGINES),
], ids=lambda value: getattr(value, "__name__", ""))
def test_every_choice_is_the_cores(enum, choices):
    assert tuple(member.value for member in enum) == tuple(choices)


def test_the_default_options_give_the_cores_defaults(compose_phase):
    """What the CLI gives without overrides is what the library gives without arguments: the
    options in runners/conf/ that restate a default agree with the core (the simulated dataset:
    2048 positions)."""
    spec = to_spec(compose_phase())
    assert simulate.SimulationSpec(**dataclasses.asdict(spec.dataset.simulation)) == simulate.SimulationSpec()
    assert spec.dataset.simulation.n_images == simulate.SimulationSpec().n_images == 2048
    assert ModelSpec(**dataclasses.asdict(spec.c1.model)) == ModelSpec()
    assert (spec.gridsize, spec.c1.quiet, spec.c1.seed, spec.c1.validation_split) == (
        GroupingSpec.gridsize, TrainSpec.quiet, TrainSpec.seed, TrainSpec.validation_split)
    cxi = dataclasses.asdict(to_spec(compose_phase(["dataset=cxi"])).dataset.cxi)
    assert cxi.pop("probe_file") is None and CxiConversion(**cxi) == CxiConversion()
    c3 = to_spec(compose_phase(["c3=iterative"])).c3
    assert iterative.IterativeSpec(engine=c3.engine.value, epochs=c3.epochs, learning_rate=c3.learning_rate,
                                   batch_size=c3.batch_size, seed=c3.seed) == iterative.IterativeSpec()
    assert to_spec(compose_phase(["c2=tf_vs_torch"])).c2.tolerance == DEFAULT_TOLERANCE


@pytest.mark.parametrize("override", ["c1.gridsiz=2", "hub.rot=x", "tracking.url=x", "bogus=1"])
def test_a_typo_fails_at_composition_naming_the_key(override, compose_phase):
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].replace(".", r"\.")):
        compose_phase([override])


@pytest.mark.parametrize("override", ["c1.batch_size=four", "gridsize=two", "c1.quiet=maybe", "xla.mode=sideways"])
def test_a_wrong_type_fails_at_composition(override, compose_phase):
    with pytest.raises(ConfigCompositionException, match=override.split("=")[0].replace(".", r"\.")):
        compose_phase([override])


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["gridsize=0"], "c1.gridsize"),
        (["c1.neighbor_count=3"], "c1.neighbor_count"),
        (["c1.batch_size=0"], "c1.batch_size"),
        (["c1.max_epochs=0"], "c1.max_epochs"),
        (["c1.n_groups=65"], "c1.n_groups"),
        (["c1.n_images=5000"], "c1.n_images"),
        (["c1=baseline", "c1.n_groups=5000"], "c1.n_groups"),
        (["c1.n_groups=0"], "c1.n_groups"),
        (["dataset.train_data_file=a.npz"], "dataset.test_data_file"),
        (["dataset.simulation.test_fraction=1.5"], "dataset.simulation.test_fraction"),
        (["c1.validation_split=1.0"], "c1.validation_split"),
        (["c1.stitch_from=group"], "c1.stitch_from"),
        (["c1.phase_offsets=centroid"], "c1.phase_offsets"),
        (["guard.name=has space"], "guard.name"),
        (["threads=0"], "threads"),
        (["c2=tf_vs_torch", "c2.phase_atol_rad=-1"], "c2.phase_atol_rad"),
    ],
)
def test_impossible_values_fail_with_the_key_named(overrides, key, compose_phase):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        to_spec(compose_phase(overrides))


def test_resolved_config_interpolates_the_initiative_everywhere(compose_phase):
    cfg = compose_phase(["initiative=OTHER-001"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["tracking"]["experiment"] == "OTHER-001"
    assert resolved["hub"]["root"].startswith("plans/active/OTHER-001/")


def _cli(*args):
    """``python -m runners.phase *args`` in a child that reports, last, which heavy modules it
    imported; the CLI's own exit status passes through as the child's return code."""
    code = (
        "import runpy, sys; sys.argv = ['phase', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('runners.phase', run_name='__main__')\n"
        "finally:\n"
        "    print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_ABSENT',"
        " 'MLFLOW_LOADED' if 'mlflow' in sys.modules else 'MLFLOW_ABSENT', flush=True)\n"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    return done, time.perf_counter() - t0


def test_help_is_readable_quick_and_imports_neither_tensorflow_nor_mlflow():
    done, seconds = _cli("--help")
    assert done.returncode == 0, done.stderr
    for group in ("backend", "c1", "dataset", "guard", "hub", "tracking", "xla"):
        assert f"{group}: " in done.stdout
    assert "python -m runners.phase c1=scaled xla=off" in done.stdout
    assert done.stdout.strip().endswith("TF_ABSENT MLFLOW_ABSENT")
    assert seconds < 10  # generous under load; bench_phase measures the 2 s target


def test_cfg_job_prints_the_composed_config_without_running():
    done, _ = _cli("--cfg", "job", "c1=scaled", "xla=off", "gridsize=1")
    assert done.returncode == 0, done.stderr
    printed = OmegaConf.create(done.stdout.rsplit("\n", 2)[0])
    assert printed.xla.mode == "off" and printed.gridsize == 1
    assert done.stdout.strip().endswith("TF_ABSENT MLFLOW_ABSENT")


def test_a_config_error_exits_non_zero_without_heavy_imports():
    done, _ = _cli("bogus=1")
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "bogus" in done.stderr
    assert done.stdout.strip().endswith("TF_ABSENT MLFLOW_ABSENT")


def test_an_isolated_jobs_parent_is_read_once_and_kept(monkeypatch):
    """The job and Hydra's post-hook both ask; the post-hook once got None and filed the job
    under the plain slot (issue 9)."""
    import json

    from runners.process import xla

    xla.parent_job_from_env.cache_clear()
    parent = {"command": "python -m runners.phase -m c1=scaled xla=on,off", "slot": "tf/s__xla=off",
              "parent_run_id": "p1"}
    monkeypatch.setenv(xla.PARENT_JOB_ENV, json.dumps(parent))
    try:
        first, second = xla.parent_job_from_env(), xla.parent_job_from_env()
        assert first == second == xla.ParentJob(**parent)
        assert xla.PARENT_JOB_ENV not in __import__("os").environ  # not inherited by the job's children
    finally:
        xla.parent_job_from_env.cache_clear()

"""Issue 24, item 6: ``pip install .`` (not ``-e``) into a new venv runs the main command from an
empty folder: the config groups (runners/conf) and the guard's check (runners/process/guard_checks)
ship inside the package, and the console script ``ptycho-phase`` is the same entry point.

No network: the venv sees this interpreter's packages (the dependencies) and pip installs only
the project, from a copy of the working tree (so the build leaves nothing in the repository).
"""
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow
SOURCES = ("ptycho", "runners", "pyproject.toml", "README.md")  # what pip install . needs


def _env() -> dict[str, str]:
    """This environment without the checkout on the path or an XLA setting of the shell; pip offline."""
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    for key in ("PYTHONPATH", "TF_XLA_FLAGS", "USE_XLA_TRANSLATE"):
        env.pop(key, None)
    return env


def _run(argv, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(arg) for arg in argv], cwd=cwd, env=_env(), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _installed_venv(root: Path) -> tuple[Path, Path]:
    """(the venv's bin folder, its site-packages) after ``pip install .`` of a copy of the project."""
    source = root / "source"
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], root, 60)
                   .stdout.strip())
    if sys.prefix != sys.base_prefix:  # run from a venv: --system-site-packages would skip its packages
        (purelib / "_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", source], root, 300)
    assert done.returncode == 0, done.stdout[-3000:]
    return venv / "bin", purelib


def test_pip_install_runs_the_main_command_from_an_empty_folder(tmp_path, compose_phase):
    bin_dir, purelib = _installed_venv(tmp_path)
    work = tmp_path / "empty"
    work.mkdir()

    where = _run([bin_dir / "python", "-c", "import ptycho, runners; print(runners.__file__, ptycho.__file__)"],
                 work, 60)
    assert where.stdout.split() == [str(purelib / "runners" / "__init__.py"), str(purelib / "ptycho" / "__init__.py")]
    assert (purelib / "runners" / "conf" / "phase.yaml").is_file() and not (purelib / "conf").exists()
    shipped = {path.relative_to(REPO / "runners" / "conf") for path in (REPO / "runners" / "conf").rglob("*.yaml")}
    assert {path.relative_to(purelib / "runners" / "conf")
            for path in (purelib / "runners" / "conf").rglob("*.yaml")} == shipped

    helped = _run([bin_dir / "ptycho-phase", "--help"], work, 120)
    assert helped.returncode == 0, helped.stdout[-3000:]
    assert "c1: baseline, gs1, scaled" in helped.stdout and "guard: tf_translation, torch_translation" in helped.stdout

    done = _run([bin_dir / "python", "-m", "runners.phase", "c1=scaled", "xla=off"], work, 600)
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout.strip().splitlines()[-1].startswith("GREEN: Phase C1 — TF scaled baseline")

    hub = work / compose_phase().hub.root  # the default hub root, relative to the launch folder
    inventory = (hub / "analysis" / "artifact_inventory.txt").read_text()
    assert "Git commit: unknown" in inventory  # the installed package's code, not the checkout's commit
    guard_log = (hub / "tf_baseline" / "phase_c1_scaled" / "green" / "pytest_tf_translation_guard.log").read_text()
    assert f"# cwd: {purelib}\n" in guard_log and "test_non_xla_translation_guard PASSED" in guard_log
    (hydra_yaml,) = work.glob("outputs/*/*/.hydra/hydra.yaml")
    assert f"path: {purelib / 'runners' / 'conf'}\n" in hydra_yaml.read_text()  # composed from the installed groups
    mentions_checkout = [path for path in work.rglob("*") if path.is_file() and str(REPO).encode() in path.read_bytes()]
    assert not mentions_checkout

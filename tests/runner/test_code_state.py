"""Issue 26, part 3: the code state that keys resume, inside git and outside it.

Inside git the state must change with every source file a run imports, untracked new modules
included; outside git (an installed package, a copied tree) it is the package's version and a
digest of its own source files, so a rerun there skips its GREEN work too.
"""
import shutil
import subprocess
from pathlib import Path

import pytest

from runners.evidence import envinfo, resume

from .conftest import REPO


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def _state(root: Path) -> str:
    envinfo.git_commit.cache_clear()
    envinfo.code_state.cache_clear()
    return envinfo.code_state(root)


@pytest.fixture
def checkout(tmp_path):
    """A git checkout holding a committed ptycho/core.py (and a README)."""
    root = tmp_path / "checkout"
    (root / "ptycho").mkdir(parents=True)
    (root / "ptycho" / "core.py").write_text("VALUE = 1\n")
    (root / "README.md").write_text("notes\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return root


def test_a_clean_checkout_is_its_commit(checkout):
    assert _state(checkout) == _git(checkout, "rev-parse", "HEAD")


def test_an_untracked_new_module_changes_the_state_and_so_does_each_edit(checkout):
    clean = _state(checkout)
    module = checkout / "ptycho" / "new_module.py"
    module.write_text("def f():\n    return 1\n")
    first = _state(checkout)
    assert first.startswith(clean + "+"), first
    module.write_text("def f():\n    return 2\n")
    assert _state(checkout) not in (clean, first)


def test_files_a_run_does_not_import_leave_the_state_alone(checkout):
    clean = _state(checkout)
    (checkout / "ptycho" / "notes.txt").write_text("not source\n")
    (checkout / "scratch.py").write_text("x = 1\n")  # outside the source folders
    (checkout / ".gitignore").write_text("ptycho/ignored.py\n")
    _git(checkout, "add", ".gitignore")
    _git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "ignore")
    clean = _state(checkout)
    (checkout / "ptycho" / "ignored.py").write_text("x = 1\n")
    assert _state(checkout) == clean


def test_outside_git_the_state_is_the_version_and_a_digest_of_the_source(tmp_path):
    copy = tmp_path / "copied"
    for folder in envinfo.SOURCE_FOLDERS:
        shutil.copytree(REPO / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    state = _state(copy)
    version = envinfo.metadata.version(envinfo.DISTRIBUTION)
    assert state.startswith(f"{version}+src.") and state == envinfo.package_state(copy)
    again = tmp_path / "copied_again"
    shutil.copytree(copy, again)
    assert _state(again) == state  # where the tree lies does not matter, its content does
    (copy / "runners" / "__pycache__").mkdir(exist_ok=True)
    (copy / "runners" / "__pycache__" / "x.py").write_text("compiled leftovers\n")
    assert _state(copy) == state
    module = copy / "ptycho" / "data" / "contract.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    assert _state(copy) != state


def test_a_package_installed_inside_a_checkout_is_not_that_checkouts_commit(checkout):
    """A venv inside a checkout (site-packages under it, ignored by git) holds an installed copy."""
    site = checkout / ".venv" / "site-packages"
    shutil.copytree(checkout / "ptycho", site / "ptycho")
    (checkout / ".gitignore").write_text(".venv/\n")
    assert envinfo.git_commit(site) == "unknown"
    assert _state(site) == envinfo.package_state(site)


def test_outside_git_the_work_key_exists_so_resume_can_skip(tmp_path):
    copy = tmp_path / "copied"
    shutil.copytree(REPO / "runners", copy / "runners", ignore=shutil.ignore_patterns("__pycache__"))
    key = resume.work_key({"c1": {"gridsize": 1}}, [], _state(copy))
    assert key is not None and len(key) == 40
    assert resume.work_key({"c1": {"gridsize": 1}}, [], "unknown") is None


@pytest.mark.slow
@pytest.mark.torch
def test_a_sweep_rerun_from_pip_install_in_a_folder_without_git_skips_its_green_members(tmp_path, sim_cache,
                                                                                        write_guard):
    """``pip install .`` of a copy of the project (no .git anywhere), then the same sweep twice."""
    pytest.importorskip("torch")
    import os
    import sys

    source = tmp_path / "source"
    for name in (*envinfo.SOURCE_FOLDERS, "pyproject.toml", "README.md"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (REPO / name).is_dir() else {}))
    installed = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(installed), str(source)], check=True, capture_output=True, timeout=300)
    assert (installed / "runners" / "conf" / "phase.yaml").is_file() and not (installed / ".git").exists()
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed)}
    for key in ("TF_XLA_FLAGS", "USE_XLA_TRANSLATE"):
        env.pop(key, None)
    args = [sys.executable, "-m", "runners.phase", "-m", "c1=scaled", "xla=off", "backend=pytorch", "gridsize=1,2",
            "c1.n_images=32", "c1.n_groups=8", "dataset.simulation.n_images=96", f"hub.root={workdir / 'hub'}",
            f"tracking.uri=sqlite:///{workdir / 'mlflow.db'}", f"dataset.cache_dir={sim_cache}",
            f"guard.selector={write_guard(workdir, passing=True)}", f"hydra.sweep.dir={workdir / 'multirun'}"]

    def sweep() -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)

    first = sweep()
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    inventory = (workdir / "hub" / "analysis" / "artifact_inventory.txt").read_text()
    assert inventory.count("Work key: ") == 2 and "Git commit: unknown" in inventory
    second = sweep()
    assert second.returncode == 0, second.stdout[-3000:]
    assert second.stdout.count("skipped: GREEN at ") == 2, second.stdout[-3000:]

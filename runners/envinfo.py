"""What the evidence records about the environment: project root, git commit, library versions."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

XLA_ENV_KEYS = ("TF_XLA_FLAGS", "USE_XLA_TRANSLATE")
_DISTRIBUTIONS = ("tensorflow-cpu", "keras", "numpy", "hydra-core", "omegaconf", "mlflow", "torch")


def project_root() -> Path:
    """The folder holding the ``runners`` package (the repository root in a clone)."""
    return Path(__file__).resolve().parent.parent


def library_versions() -> dict[str, str]:
    """Python and the installed versions of the libraries a phase depends on (no imports)."""
    versions = {"python": sys.version.split()[0]}
    for name in _DISTRIBUTIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@lru_cache(maxsize=None)
def git_commit(root: Path, evidence: Path | None = None) -> str:
    """``<sha>`` of HEAD, ``<sha> (dirty)`` with uncommitted changes to tracked files, or ``unknown``.

    ``evidence``: the reports hub root. Researchers commit the hub as evidence, so every run
    changes tracked files under it (the inventory, the summary); those changes say nothing
    about the code and are left out of the dirty check. A hub outside the repository needs no
    exclusion.
    """
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *_excluded(root, evidence))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha} (dirty)" if dirty else sha


@lru_cache(maxsize=None)
def code_state(root: Path, evidence: Path | None = None) -> str:
    """The code a run ran: HEAD's sha, ``<sha>+<digest>`` with uncommitted changes to tracked
    files (sha1 of their diff against HEAD, the hub root left out as in :func:`git_commit`), or
    ``unknown``. Two runs with the same state ran the same tracked code."""
    commit = git_commit(root, evidence)
    if commit == "unknown" or not commit.endswith("(dirty)"):
        return commit
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--", ".", *_excluded(root, evidence)], cwd=root,
                              capture_output=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit.split()[0]}+{hashlib.sha1(diff).hexdigest()[:16]}"


def _excluded(root: Path, evidence: Path | None) -> list[str]:
    """git pathspecs that leave ``evidence`` out, when it lies inside ``root``."""
    if evidence is None:
        return []
    try:
        inside = Path(evidence).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return []
    return [f":(exclude){inside.as_posix()}"] if inside.parts else []

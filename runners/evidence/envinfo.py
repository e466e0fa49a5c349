"""What the evidence records about the environment: project root, git commit, code state, library versions."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

XLA_ENV_KEYS = ("TF_XLA_FLAGS", "USE_XLA_TRANSLATE")
DISTRIBUTION = "ptycho-phase-runner"  # this project, as pip installs it
SOURCE_FOLDERS = ("ptycho", "runners")  # what a run imports or composes from (runners/conf: its config groups)
SOURCE_SUFFIXES = (".py", ".yaml")
_DISTRIBUTIONS = ("tensorflow-cpu", "keras", "numpy", "hydra-core", "omegaconf", "mlflow", "torch")


def project_root() -> Path:
    """The folder holding the ``runners`` package (the repository root in a clone)."""
    return Path(__file__).resolve().parents[2]


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
    """``<sha>`` of HEAD, ``<sha> (dirty)`` with uncommitted changes to tracked files, or ``unknown``
    (no git, or ``root`` is not the top of its work tree: a package installed into a venv that
    lies inside some checkout is not that checkout's code).

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
        top, sha = git("rev-parse", "--show-toplevel", "HEAD").splitlines()
        if Path(top).resolve() != Path(root).resolve():
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", *_excluded(root, evidence))
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"
    return f"{sha} (dirty)" if dirty else sha


@lru_cache(maxsize=None)
def code_state(root: Path, evidence: Path | None = None) -> str:
    """The code a run ran; two runs with the same state ran the same source files.

    In a git checkout: HEAD's sha, or ``<sha>+<digest>`` when tracked files differ from HEAD or
    source files (:data:`SOURCE_FOLDERS`) are untracked: sha1 of the diff against HEAD (the hub
    root left out as in :func:`git_commit`) and of the untracked source files' paths and
    contents, so a new module not yet committed changes the state too. Outside git (an
    installed package, a copied tree): :func:`package_state`.
    """
    commit = git_commit(root, evidence)
    if commit == "unknown":
        return package_state(root)
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--", ".", *_excluded(root, evidence)], cwd=root,
                              capture_output=True, timeout=30, check=True).stdout
        listed = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "-z", "--", *SOURCE_FOLDERS],
                                cwd=root, capture_output=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return package_state(root)
    untracked = sorted(name for name in listed.decode("utf-8", "surrogateescape").split("\0")
                       if name.endswith(SOURCE_SUFFIXES))
    if not diff and not untracked:
        return commit.split()[0]
    digest = hashlib.sha1(diff)
    for name in untracked:
        _add_file(digest, Path(root), Path(name))
    return f"{commit.split()[0]}+{digest.hexdigest()[:16]}"


def package_state(root: Path) -> str:
    """``<version>+src.<digest>`` of the code outside git: the installed distribution's version
    (``unversioned`` without one) and the sha1 of every source file under ``root``'s
    :data:`SOURCE_FOLDERS` (relative path and content; ``__pycache__`` left out)."""
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "unversioned"
    root = Path(root)
    digest = hashlib.sha1()
    for path in sorted(source_files(root)):
        _add_file(digest, root, path.relative_to(root))
    return f"{version}+src.{digest.hexdigest()[:16]}"


def source_files(root: Path) -> list[Path]:
    """The source files (:data:`SOURCE_SUFFIXES`) under ``root``'s :data:`SOURCE_FOLDERS`."""
    return [path for folder in SOURCE_FOLDERS for path in (Path(root) / folder).rglob("*")
            if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts and path.is_file()]


def _add_file(digest, root: Path, relative: Path) -> None:
    digest.update(relative.as_posix().encode() + b"\0" + (root / relative).read_bytes() + b"\0")


def _excluded(root: Path, evidence: Path | None) -> list[str]:
    """git pathspecs that leave ``evidence`` out, when it lies inside ``root``."""
    if evidence is None:
        return []
    try:
        inside = Path(evidence).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return []
    return [f":(exclude){inside.as_posix()}"] if inside.parts else []

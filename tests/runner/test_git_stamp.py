"""The git stamp of a record: a run's own evidence never marks the code dirty; a code change does."""
import subprocess

import pytest

from runners.evidence.envinfo import git_commit


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.org")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "code.py").write_text("x = 1\n")
    hub = tmp_path / "plans" / "reports" / "hub" / "analysis"
    hub.mkdir(parents=True)
    (hub / "artifact_inventory.txt").write_text("## old section\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "start")
    return tmp_path


def test_a_change_under_the_hub_root_is_not_dirty_but_a_code_change_is(repo):
    hub_root = repo / "plans" / "reports" / "hub"
    (hub_root / "analysis" / "artifact_inventory.txt").write_text("## new section\n")
    stamp = git_commit(repo, hub_root)
    assert len(stamp) == 40 and "dirty" not in stamp
    assert git_commit(repo).endswith(" (dirty)")  # without the hub root: the hub's change counts
    (repo / "code.py").write_text("x = 2  # a real change\n")
    git_commit.cache_clear()  # one stamp per process and folder: the runner asks once per job
    assert git_commit(repo, hub_root).endswith(" (dirty)")


def test_a_hub_outside_the_repository_or_no_repository(repo, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    assert "dirty" not in git_commit(repo, outside)
    assert git_commit(outside, None) == "unknown"

"""Hub faults a hostile user can cause: file modes, stale temporary files, forged sections, unusable roots.

Tests run as root here, and root ignores permission bits: a read-only hub is a read-only
bind mount in a private mount namespace (``unshare -m``) where the machine allows that,
and otherwise a hub whose write check is made to fail (``os.access`` monkeypatched).
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runners.evidence import hub, outcome
from runners.evidence import BLOCKED, GREEN, PhaseRecord, inventory_section, summary_entry
from runners.evidence.outcome import block, is_published, mark_green

from .conftest import run_in_process


SLOT_A, SLOT_B = "tf_baseline/phase_c1_scaled", "torch_baseline/phase_c1_scaled"
NO_BLOCKER = "no blocker can be written"


def _slot(root: Path, name: str = SLOT_A) -> hub.HubSlot:
    return hub.resolve_slot(root, name, tag="tf", phase_stem="phase_c1_scaled", variant="scaled",
                            guard_name="tf_translation_guard")


def _record(slot: hub.HubSlot, **changes) -> PhaseRecord:
    fields = dict(
        slot=slot.name, title="Phase C1 — TF scaled baseline", utc_time="2025-11-13T00:00:00Z",
        command="python -m runners.phase c1=scaled xla=off", env={"TF_XLA_FLAGS": "--tf_xla_auto_jit=0"},
        versions={"python": "3"}, git_commit="abc", parameters={"gridsize": 2},
        paths={"guard_log": "g.log", "cli_log": "c.log", "bundle": "b", "run_dir": "r"},
        status=GREEN, stats_sha1="0" * 40, parity_key="k", mlflow={"run_id": "r1", "tracking_uri": "sqlite:///m.db"},
    )
    fields.update(changes)
    return PhaseRecord(**fields)


# 1. File modes ------------------------------------------------------------------------------------


@pytest.fixture
def set_umask():
    """set_umask(mask): this process's umask for the test; the old one is restored after."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077, 0o027], ids=oct)
def test_every_hub_file_follows_the_umask(tmp_path, set_umask, mask):
    set_umask(mask)
    slot = _slot(tmp_path / "hub")
    slot.make_dirs()
    record = _record(slot)
    mark_green(record, slot, 10)
    hub.write_guard_logs(slot, "1 passed\n", 10)
    try:
        raise RuntimeError("injected")
    except RuntimeError as exc:
        blocker = block(record, slot, exc, tmp_path, 10)
    timings = slot.run_dir / "timings.json"
    hub.atomic_write_text(timings, "{}\n")
    plain = tmp_path / "plain.txt"
    plain.write_text("any other file")
    written = [slot.inventory, slot.summary, slot.guard_log, slot.hub_guard_log, blocker, timings, plain]
    expected = oct(0o666 & ~mask)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in written}
    assert modes == {path.name: expected for path in written}


# 2. Temporary files of dead writers ----------------------------------------------------------------

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from runners.evidence import hub

os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # killed between write and rename
hub.atomic_write_text(Path(sys.argv[1]), "half of a section")
"""


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_writer_killed_mid_write_leaves_a_temp_file_the_next_writer_removes(tmp_path):
    slot = _slot(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(slot.inventory)], env=env)
    assert killed.returncode == -signal.SIGKILL
    assert list(slot.inventory.parent.glob(".*.tmp")), "the killed writer left no temporary file"
    outcome.publish(_record(slot), slot, 10)
    assert not list(tmp_path.rglob("*.tmp"))
    assert is_published(_record(slot), slot)


def test_temp_files_of_dead_writers_go_and_those_of_live_writers_stay(tmp_path):
    slot = _slot(tmp_path)
    slot.make_dirs()
    long_ago = time.time() - 2 * 86400
    planted = {}
    for target in (slot.inventory, slot.summary, slot.red_dir / "blocked_x_tf_translation_guard.md"):
        target.parent.mkdir(parents=True, exist_ok=True)
        planted[hub.temp_path(target, pid=_dead_pid())] = "gone"  # this host, writer dead
        planted[hub.temp_path(target, pid=os.getpid())] = "stays"  # this host, writer alive
        planted[hub.temp_path(target, pid=1234, host="other-host.example")] = "stays"  # recent, other host
        old = hub.temp_path(target, pid=1234, host="old-host")
        planted[old] = "gone"  # other host, older than any write takes
        planted[target.parent / f".{target.name}.notes.tmp"] = "stays"  # not a hub temporary file
    for path in planted:
        path.write_text("partial")
        if "old-host" in path.name:
            os.utime(path, (long_ago, long_ago))
    outcome.publish(_record(slot), slot, 10)
    assert {path.name: "stays" if path.exists() else "gone" for path in planted} == {
        path.name: fate for path, fate in planted.items()
    }


def test_temp_paths_name_their_writer_and_never_repeat(tmp_path):
    target = tmp_path / "summary.md"
    first, second = hub.temp_path(target), hub.temp_path(target)
    assert first != second and first.parent == tmp_path
    assert first.name.startswith(".summary.md.") and first.name.endswith(".tmp") and str(os.getpid()) in first.name


# 3. Hostile text in fields ------------------------------------------------------------------------

HOSTILE = {
    "cut_and_reopen_own": "x\n<<< END SECTION {a}\n>>> BEGIN SECTION {a}\nStatus: GREEN",
    "cut_other": "x\n<<< END SECTION {b}",
    "forge_other": "x\n>>> BEGIN SECTION {b}\nforged\n<<< END SECTION {b}\n",
    "whole_begin_line": ">>> BEGIN SECTION {b}",
    "whole_end_line": "<<< END SECTION {a}",
    "markdown_markers": "x\n<!-- END SECTION {a} -->\n<!-- BEGIN SECTION {b} -->\n",
    "whole_markdown_line": "<!-- END SECTION {a} -->",
    "already_stuffed": "\\>>> BEGIN SECTION {b}\n\\\\<<< END SECTION {a}",
    "carriage_returns": "x\r<<< END SECTION {a}\r\n>>> BEGIN SECTION {b}\r",
    "controls": "nul\x00bell\x07esc\x1b[31mred\x7f tab\tvt\x0bff\x0c",
    "unicode_breaks": "a\u2028<<< END SECTION {a}\u2029b\x85c\x1cd\x1de\x1ef",
    "invisible": "rtl\u202eevil\u200bzero width",
    "surrogate": "bytes \udcff\udcfe from a non-UTF-8 environment",
    "long": "long " * 40_000 + "\n<<< END SECTION {a}",
}
FIELDS = ["title", "command", "error", "blocker", "env", "parameters", "paths", "mlflow", "parity_key"]


def _hostile(slot: hub.HubSlot, field: str, value: str) -> PhaseRecord:
    """A record of ``slot`` holding ``value`` in ``field`` (BLOCKED where only a blocked record shows it)."""
    blocked = dict(status=BLOCKED, step="train", error="ValueError: bad", blocker="red/blocked.md")
    changes = {
        "title": dict(title=value),
        "command": dict(command=value),
        "error": {**blocked, "error": value},
        "blocker": {**blocked, "blocker": value},
        "env": dict(env={"TF_XLA_FLAGS": value, value: "as a key"}),
        "parameters": dict(parameters={"n_groups": value, "gridsize": 2}),
        "paths": dict(paths={"guard_log": value, "cli_log": value, "bundle": value, "run_dir": value}),
        "mlflow": dict(mlflow={"run_id": value, "tracking_uri": value}),
        "parity_key": dict(parity_key=value, stats_sha1=value),
    }[field]
    return _record(slot, **changes)


def _marker_lines(text: str) -> list[str]:
    """Lines that read as section markers, with the strictest line splitting Python knows."""
    starts = (">>> BEGIN SECTION", "<<< END SECTION", "<!-- BEGIN SECTION", "<!-- END SECTION")
    return [line for line in text.splitlines() if line.startswith(starts)]


def _assert_hub_shows_exactly(root: Path, shown: list[tuple[PhaseRecord, PhaseRecord]]) -> None:
    """The hub holds exactly these records' sections, in order; ``shown``: (record, its plain-text twin)."""
    inventory = (root / "analysis" / "artifact_inventory.txt").read_text(encoding="utf-8")
    summary = (root / "summary.md").read_text(encoding="utf-8")
    names = [record.slot for record, _ in shown]
    assert _marker_lines(inventory) == [f"{mark} SECTION {name}" for name in names for mark in (">>> BEGIN", "<<< END")]
    assert _marker_lines(summary) == [f"<!-- {mark} SECTION {name} -->" for name in names for mark in ("BEGIN", "END")]
    for record, twin in shown:
        section = hub.read_section(inventory, record.slot)
        assert section == inventory_section(record)
        assert len(section.splitlines()) == len(inventory_section(twin).splitlines())  # one line per field
        entry = hub.read_section(summary, record.slot, markdown=True)
        assert entry == summary_entry(record)
        assert len(entry.splitlines()) == len(summary_entry(twin).splitlines())
        assert is_published(record, _slot(root, record.slot))


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_field_neither_forges_nor_cuts_a_section(tmp_path, field, case):
    value = HOSTILE[case].replace("{a}", SLOT_A).replace("{b}", SLOT_B)
    a, b = _slot(tmp_path, SLOT_A), _slot(tmp_path, SLOT_B)
    hostile_a, plain_b = _hostile(a, field, value), _record(b, command="second")
    outcome.publish(hostile_a, a, 10)
    outcome.publish(plain_b, b, 10)
    _assert_hub_shows_exactly(tmp_path, [(hostile_a, _hostile(a, field, "plain")), (plain_b, plain_b)])
    hostile_b, plain_a = _hostile(b, field, value), _record(a, command="rerun")
    outcome.publish(hostile_b, b, 10)  # each publish replaces only its own section
    outcome.publish(plain_a, a, 10)
    _assert_hub_shows_exactly(tmp_path, [(plain_a, plain_a), (hostile_b, _hostile(b, field, "plain"))])


def test_escaped_fields_stay_readable(tmp_path):
    slot = _slot(tmp_path)
    record = _record(slot, title="Phase C1 — TF 日本語 🚀", command="a\nb\r\x00c", env={"K": "v\tw"})
    section = inventory_section(record)
    assert section.splitlines()[0] == "Phase C1 — TF 日本語 🚀"
    assert "Command: a\\nb\\r\\x00c" in section and "Env: K=v\\tw" in section
    assert "`a\\nb\\r\\x00c`" in summary_entry(record)


MARKERS = [f"{start} SECTION {name}{end}" for name in ("a", "b", "a b")
           for start, end in ((">>> BEGIN", ""), ("<<< END", ""), ("<!-- BEGIN", " -->"), ("<!-- END", " -->"))]
BODY_LINES = st.sampled_from(MARKERS + ["plain", "", " <<< END SECTION a", "Status: GREEN"])
BODIES = st.lists(st.builds(lambda slashes, line: "\\" * slashes + line, st.integers(0, 3), BODY_LINES), max_size=6)


@settings(max_examples=300, deadline=None)
@given(BODIES, BODIES, st.booleans())
def test_any_body_reads_back_as_written(lines_a, lines_b, markdown):
    body_a, body_b = "\n".join(lines_a).rstrip("\n") or "-", "\n".join(lines_b).rstrip("\n") or "-"
    text = hub.replace_section(hub.INVENTORY_HEADER, "a", "first", markdown=markdown)
    text = hub.replace_section(text, "b", body_b, markdown=markdown)
    text = hub.replace_section(text, "a", body_a, markdown=markdown)
    assert hub.read_section(text, "a", markdown=markdown) == body_a
    assert hub.read_section(text, "b", markdown=markdown) == body_b
    assert len(_marker_lines(text)) == 4 and "first" not in text


def test_line_breaks_a_reader_would_see_are_never_left_in_a_body():
    text = hub.replace_section("", "a", "x\r<<< END SECTION a\r\n>>> BEGIN SECTION b")
    assert "\r" not in text and _marker_lines(text) == [">>> BEGIN SECTION a", "<<< END SECTION a"]
    assert hub.read_section(text, "a") == "x\n<<< END SECTION a\n>>> BEGIN SECTION b"


@pytest.mark.parametrize("name", ["a\n<<< END SECTION b", "a\rb", "a\x00b", "a\u2028b", "tab\tslot"])
def test_a_slot_name_with_control_characters_is_a_config_error(tmp_path, name):
    with pytest.raises(hub.SlotError, match="hub.slot"):
        _slot(tmp_path, name)


# 4. A hub that cannot be written -----------------------------------------------------------------


def _deny_writes_under(monkeypatch, folder: Path) -> None:
    """``os.access`` says no write permission under ``folder`` (root's own check always says yes)."""
    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and str(path).startswith(str(folder)):
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_a_hub_root_that_is_a_file_is_named(tmp_path):
    root = tmp_path / "hub"
    root.write_text("not a folder")
    with pytest.raises(hub.HubError, match=rf"^hub.root: {root} is a file, not a folder; .*{NO_BLOCKER}"):
        _slot(root)
    with pytest.raises(hub.HubError, match=rf"^hub.root {root / 'sub'}: {root} is a file, not a folder"):
        _slot(root / "sub")


def test_a_shared_hub_folder_that_is_a_file_is_named(tmp_path):
    (tmp_path / "analysis").write_text("not a folder")
    with pytest.raises(hub.HubError, match=rf"^hub.root {tmp_path}: {tmp_path / 'analysis'} is a file, not a folder"):
        _slot(tmp_path)


def test_a_slot_folder_that_is_a_file_is_named(tmp_path):
    (tmp_path / "tf_baseline").write_text("not a folder")
    with pytest.raises(hub.HubError, match=rf"^hub.slot '{SLOT_A}' \(in hub.root {tmp_path}\): "
                                           rf"{tmp_path / 'tf_baseline'} is a file, not a folder"):
        _slot(tmp_path)


def test_an_unwritable_hub_root_is_named(tmp_path, monkeypatch):
    root = tmp_path / "hub"
    root.mkdir()
    _deny_writes_under(monkeypatch, root)
    with pytest.raises(hub.HubError, match=rf"^hub.root: {root} is not writable \(permission denied\); .*{NO_BLOCKER}"):
        _slot(root)


def test_an_unwritable_parent_of_a_new_hub_root_is_named(tmp_path, monkeypatch):
    _deny_writes_under(monkeypatch, tmp_path)
    with pytest.raises(hub.HubError, match=rf"^hub.root {tmp_path / 'new' / 'hub'}: {tmp_path} is not writable"):
        _slot(tmp_path / "new" / "hub")


def _can_mount_read_only(folder: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", _read_only(folder, "true")], capture_output=True)
    return probe.returncode == 0


def _read_only(folder: Path, command: str) -> str:
    """A shell line that runs ``command`` with ``folder`` bind-mounted read-only (private namespace)."""
    return f"mount --bind '{folder}' '{folder}' && mount -o remount,bind,ro '{folder}' && {command}"


@pytest.fixture
def phase_in_process(tmp_path, monkeypatch, capfd, isolated_overrides):
    """phase_in_process(*overrides) -> (exit status, stdout + stderr) of the runner run in this process."""
    monkeypatch.chdir(tmp_path)

    def run(*overrides):
        status, out, err = run_in_process(["c1=scaled", "xla=off", *isolated_overrides(tmp_path), *overrides], capfd,
                                          monkeypatch)
        return status, out + err

    return run


def _assert_clean_config_error(status: int, output: str, message: str) -> None:
    assert status == 1, output
    assert message in output and NO_BLOCKER in output, output
    assert "Traceback" not in output and "blocker:" not in output and "raised" not in output, output


@pytest.mark.slow
@pytest.mark.parametrize("phase, broken", [("c1=scaled", "root"), ("c1=scaled", "slot"), ("c2=tf_vs_torch", "root")])
def test_the_runner_names_a_hub_path_that_is_a_file(tmp_path, run_cli, isolated_overrides, phase, broken):
    root = tmp_path / "hub"  # the hub.root isolated_overrides sets
    if broken == "root":
        root.write_text("not a folder")
        message = f"hub.root: {root} is a file, not a folder"
    else:
        root.mkdir()
        (root / "tf_baseline").write_text("not a folder")
        message = f"hub.slot '{SLOT_A}' (in hub.root {root}): {root / 'tf_baseline'} is a file, not a folder"
    args = [f"phase={phase.split('=')[0]}", phase, "xla=off", *isolated_overrides(tmp_path)]
    done = run_cli(args, cwd=tmp_path, timeout=120)
    _assert_clean_config_error(done.returncode, done.stdout, message)


@pytest.mark.slow
def test_the_runner_names_a_read_only_hub(tmp_path, isolated_overrides):
    root = tmp_path / "hub"
    root.mkdir()
    if not _can_mount_read_only(root):
        pytest.skip("no private mount namespace here (unshare -m / mount not permitted)")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    phase = " ".join(f"'{arg}'" for arg in ["c1=scaled", "xla=off", *isolated_overrides(tmp_path)])
    command = _read_only(root, f"exec '{sys.executable}' -m runners.phase {phase}")
    done = subprocess.run(["unshare", "-m", "sh", "-c", command], cwd=tmp_path, env=env, timeout=120,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    message = f"hub.root: {root} is not writable (read-only file system)"
    _assert_clean_config_error(done.returncode, done.stdout, message)
    assert not any(root.iterdir())


@pytest.mark.slow
def test_the_runner_in_process_names_an_unwritable_hub(tmp_path, monkeypatch, phase_in_process):
    root = tmp_path / "hub"
    root.mkdir()
    _deny_writes_under(monkeypatch, root)
    status, output = phase_in_process()
    _assert_clean_config_error(status, output, f"hub.root: {root} is not writable (permission denied)")
    assert not any(root.iterdir())

"""The reports hub: slot paths, sections replaced in place, locked parallel writers, blockers."""
import multiprocessing
from datetime import datetime, timezone
from pathlib import Path

import pytest

from runners.evidence import hub
from runners.evidence import BLOCKED, GREEN, PhaseRecord, inventory_section, summary_entry
from runners.evidence.outcome import block, display_path, is_published, mark_green


def _slot(root: Path, name="tf_baseline/phase_c1_scaled") -> hub.HubSlot:
    return hub.resolve_slot(root, name, tag="tf", phase_stem="phase_c1_scaled", variant="scaled",
                            guard_name="tf_translation_guard")


def _record(slot: hub.HubSlot, **changes) -> PhaseRecord:
    fields = dict(
        slot=slot.name, title="Phase C1 — TF scaled baseline", utc_time="2025-11-13T00:00:00Z",
        command="python -m runners.phase c1=scaled xla=off", env={"TF_XLA_FLAGS": "--tf_xla_auto_jit=0"},
        versions={"python": "3"}, git_commit="abc", parameters={"gridsize": 2},
        paths={"guard_log": "g.log", "cli_log": "c.log", "bundle": "b", "run_dir": "r"},
    )
    fields.update(changes)
    return PhaseRecord(**fields)


def test_slot_layout_follows_the_design(tmp_path):
    slot = _slot(tmp_path)
    base = tmp_path.resolve() / "tf_baseline" / "phase_c1_scaled"
    assert slot.cli_log == base / "cli" / "train_tf_phase_c1_scaled.log"
    assert slot.run_dir == base / "run_scaled"
    assert slot.bundle_dir == base / "analysis" / "forward_parity_debug_tf"
    assert slot.guard_log == base / "green" / "pytest_tf_translation_guard.log"
    assert slot.hub_guard_log == tmp_path.resolve() / "green" / "pytest_tf_translation_guard.log"
    assert slot.inventory == tmp_path.resolve() / "analysis" / "artifact_inventory.txt"


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "tf_baseline/../../x", "", "."])
def test_a_slot_escaping_the_hub_root_is_a_config_error(tmp_path, name):
    with pytest.raises(hub.SlotError, match="hub.slot"):
        _slot(tmp_path / "hub", name)


def test_slot_suffix_uses_only_swept_keys_and_safe_characters():
    overrides = ["c1=scaled", "xla=off", "gridsize=1", "dataset.train_data_file=/a b/c.npz"]
    assert hub.slot_suffix(overrides, ["gridsize"]) == "gridsize=1"
    assert hub.slot_suffix(overrides, ["xla", "gridsize"]) == "gridsize=1,xla=off"
    assert hub.slot_suffix(overrides, ["dataset.train_data_file"]) == "dataset.train_data_file=_a_b_c.npz"
    assert hub.slot_suffix(overrides, []) == ""


def test_replace_section_replaces_in_place_and_keeps_the_rest():
    text = hub.INVENTORY_HEADER
    text = hub.replace_section(text, "a", "A1")
    text = hub.replace_section(text, "b", "B1")
    text = hub.replace_section(text, "a", "A2\nmore")
    assert text.startswith(hub.INVENTORY_HEADER)
    assert hub.read_section(text, "a") == "A2\nmore" and hub.read_section(text, "b") == "B1"
    assert text.index("BEGIN SECTION a") < text.index("BEGIN SECTION b")
    assert text.count("BEGIN SECTION a") == 1 and "A1" not in text


def test_duplicated_sections_collapse_into_one():
    text = "h\n>>> BEGIN SECTION a\nx\n<<< END SECTION a\nmid\n>>> BEGIN SECTION a\ny\n<<< END SECTION a\n"
    out = hub.replace_section(text, "a", "z")
    assert out.count("BEGIN SECTION a") == 1 and "mid" in out and hub.read_section(out, "a") == "z"


def test_a_slot_name_that_prefixes_another_does_not_touch_it():
    text = hub.replace_section("", "tf/p__gridsize=1", "one")
    text = hub.replace_section(text, "tf/p", "plain")
    text = hub.replace_section(text, "tf/p", "plain again")
    assert hub.read_section(text, "tf/p__gridsize=1") == "one"
    assert hub.read_section(text, "tf/p") == "plain again"


def _publish_many(args):
    root, worker, rounds = args
    for index in range(rounds):
        slot = _slot(Path(root), f"tf_baseline/phase_c1_scaled__w{worker}_{index}")
        record = _record(slot, status=GREEN, stats_sha1=f"{worker}-{index}")
        hub.publish(slot, inventory_section(record), summary_entry(record), lock_timeout_s=60)
        # and rerun the first slot each round: replaced, never duplicated
        first = _slot(Path(root), f"tf_baseline/phase_c1_scaled__w{worker}_0")
        record = _record(first, status=GREEN, stats_sha1=f"{worker}-rerun-{index}")
        hub.publish(first, inventory_section(record), summary_entry(record), lock_timeout_s=60)


def test_parallel_writers_never_lose_duplicate_or_interleave_sections(tmp_path):
    workers, rounds = 4, 6
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_publish_many, [(str(tmp_path), w, rounds) for w in range(workers)])
    inventory = (tmp_path / "analysis" / "artifact_inventory.txt").read_text()
    summary = (tmp_path / "summary.md").read_text()
    for worker in range(workers):
        for index in range(rounds):
            name = f"tf_baseline/phase_c1_scaled__w{worker}_{index}"
            assert inventory.count(f">>> BEGIN SECTION {name}\n") == 1
            assert summary.count(f"<!-- BEGIN SECTION {name} -->") == 1
            body = hub.read_section(inventory, name)
            expected = f"{worker}-rerun-{rounds - 1}" if index == 0 else f"{worker}-{index}"
            assert f"stats.json sha1: {expected}" in body
    assert inventory.count(">>> BEGIN SECTION") == inventory.count("<<< END SECTION") == workers * rounds
    assert not list(tmp_path.rglob("*.tmp"))


def test_blockers_never_overwrite_each_other(tmp_path):
    slot = _slot(tmp_path)
    now = datetime(2025, 11, 13, tzinfo=timezone.utc)
    first = hub.write_blocker(slot, "one", 10, now=now)
    second = hub.write_blocker(slot, "two", 10, now=now)
    assert first.name == "blocked_20251113T000000Z_tf_translation_guard.md"
    assert second.name == "blocked_20251113T000000Z_2_tf_translation_guard.md"
    assert first.read_text() == "one" and second.read_text() == "two"


def test_block_writes_blocker_and_points_inventory_and_summary_at_it(tmp_path):
    slot = _slot(tmp_path / "hub")
    record = _record(slot)
    mark_green(record, slot, 10)
    try:
        raise ValueError("bad data: key 'diffraction' missing")
    except ValueError as exc:
        path = block(record, slot, exc, tmp_path, 10)
    assert record.status == BLOCKED and record.blocker == display_path(path, tmp_path)
    text = path.read_text()
    assert "ValueError: bad data" in text and "## Stack trace" in text and "Traceback" in text
    assert record.command in text and "TF_XLA_FLAGS=--tf_xla_auto_jit=0" in text
    section = hub.read_section(slot.inventory.read_text(), slot.name)
    assert "Status: BLOCKED" in section and f"Blocker: {record.blocker}" in section
    assert "stats.json sha1" not in section
    assert record.blocker in slot.summary.read_text()
    assert is_published(record, slot)


def test_display_paths_are_relative_to_the_launch_dir_when_inside(tmp_path):
    assert display_path(tmp_path / "a" / "b.txt", tmp_path) == str(Path("a") / "b.txt")
    assert display_path(Path("/elsewhere/x"), tmp_path) == "/elsewhere/x"

"""Issue 22: a run whose reconstruction is no better than the constant object says so in the
closing block, the hub's section and summary, and MLflow; GREEN keeps meaning "the pipeline ran"."""
import pytest

from runners.evidence import GREEN, PhaseRecord, inventory_section, quality_warning, run_description, summary_entry


def record(**changes) -> PhaseRecord:
    fields = dict(
        slot="s", title="Phase C1 — TF scaled baseline", utc_time="2026-12-07T00:00:00Z",
        command="python -m runners.phase c1=scaled xla=off", env={}, versions={"python": "3"}, git_commit="abc",
        parameters={"gridsize": 2}, paths={"guard_log": "g.log", "cli_log": "c.log", "bundle": "b", "run_dir": "r"},
        status=GREEN, stats_sha1="0" * 40, parity_key="k", mlflow={"run_id": "r1"},
    )
    fields.update(changes)
    return PhaseRecord(**fields)


@pytest.mark.parametrize("quality", [{}, {"amp_mae_to_floor": 0.99, "phase_mae_to_floor": 0.5},
                                     {"amp_mae": 0.03}, {"amp_mae_to_floor": None}])
def test_no_warning_when_the_reconstruction_beats_the_constant_object_or_was_not_measured(quality):
    assert quality_warning(quality) is None


def test_the_warning_names_each_error_that_is_no_better_than_a_constant():
    text = quality_warning({"amp_mae_to_floor": 2.034, "phase_mae_to_floor": 0.4})
    assert text.startswith("amplitude error 2.03x the constant object's") and "phase" not in text
    both = quality_warning({"amp_mae_to_floor": 1.0, "phase_mae_to_floor": 5.0})
    assert both.startswith("amplitude error 1.00x and phase error 5.00x the constant object's")


def test_section_summary_and_mlflow_note_carry_the_warning_and_the_status_stays_green():
    warned = record(quality_warning=quality_warning({"amp_mae_to_floor": 2.0}))
    section, entry, note = inventory_section(warned), summary_entry(warned), run_description(warned, "inv.txt")
    assert "Status: GREEN" in section
    assert f"Quality warning: {warned.quality_warning}" in section.splitlines()
    assert f"- **Quality warning**: {warned.quality_warning}" in entry.splitlines()
    assert "**Quality warning**" in note and note.startswith("**Phase C1 — TF scaled baseline**: GREEN")
    clean = record()
    assert "warning" not in (inventory_section(clean) + summary_entry(clean) + run_description(clean, "x")).lower()

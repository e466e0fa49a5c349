"""The closing block a C1 job prints (GREEN, BLOCKED or INTERRUPTED) and its one-line summaries
of quality and training, which C3 shares."""
from __future__ import annotations

from runners import tracking
from runners.evidence import GREEN, PhaseRecord, tracking_text
from runners.evidence.outcome import os_error_line


def closing_block(record: PhaseRecord, inventory: str, *, quality: dict[str, float] | None, phase_offsets: str,
                  last_epoch: dict[str, float], epochs_done: int, tracker: tracking.Tracker | None,
                  log_error: OSError | None) -> str:
    """What ran, how well, where the evidence is (``inventory``: the hub's inventory, as shown);
    the status line last. ``log_error``: why the CLI log is incomplete, if it is."""
    lines = [f"== {record.title}: {record.status} =="]
    if record.status != GREEN:
        lines.append(f"  failed    at step {record.step!r}: {record.error}")
    if quality:
        lines.append(f"  quality   {quality_line(quality)} (patch phase offsets: {phase_offsets})")
    if record.quality_warning:
        lines.append(f"  WARNING   {record.quality_warning}")
    if last_epoch:
        lines.append(f"  training  {epochs_line(last_epoch, epochs_done)}")
    if record.mlflow.get("run_id"):
        lines += mlflow_lines(record, tracker)
    if record.tracking:
        lines.append(f"  tracking  {tracking_text(record.tracking)}")
    if record.status == GREEN:
        lines.append(f"  bundle    {record.paths['bundle']}")
    if record.hub_error:
        lines.append(f"  section   NOT written: {record.hub_error}")
    else:
        lines.append(f"  section   \"{record.title}\" in {inventory}")
    cli_log = record.paths["cli_log"] + (f" (incomplete: {os_error_line(log_error)})" if log_error else "")
    lines.append(f"  CLI log   {cli_log}")
    if record.status == GREEN:
        lines.append(f"GREEN: {record.title}; stats.json sha1 {record.stats_sha1}; inventory {inventory}")
    else:
        lines.append(f"blocker: {record.blocker}")
    return "\n".join(lines)


def mlflow_lines(record: PhaseRecord, tracker: tracking.Tracker) -> list[str]:
    """The run's link, the runs table's, and for a local store how to start the UI."""
    lines = [f"  MLflow    run {record.mlflow['run_id']}: {record.mlflow.get('ui', '-')}",
             f"            runs table: {tracker.runs_link()}"]
    if not tracker.uri.startswith(("http://", "https://")):
        uri = tracker.uri
        lines.append(f"            (start the UI with: python -m runners.tracking.mlflow_ui --backend-store-uri {uri}; "
                     f"that is MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri {uri})")
    return lines


def quality_line(quality: dict[str, float]) -> str:
    """``amp_mae 0.0438 (0.76x the constant-object floor), phase_mae 0.349 rad (0.92x), SSIM ..., FRC50 ...``."""
    parts = []
    for name, unit in (("amp_mae", ""), ("phase_mae", " rad")):
        if name in quality:
            ratio = quality.get(f"{name}_to_floor")
            parts.append(f"{name} {quality[name]:.4g}{unit}"
                         + (f" ({ratio:.2f}x the constant-object floor)" if ratio is not None else ""))
    for name in ("amp_ssim", "phase_ssim", "frc50"):
        if name in quality:
            parts.append(f"{name} {quality[name]:.3g}")
    return ", ".join(parts)


def epochs_line(last: dict[str, float], epochs: int) -> str:
    """``1 epoch, final loss -3.25e+06 (NLL +12.3/px over the data's floor), 26.0 groups/s``."""
    text = f"{epochs} epoch{'s' if epochs != 1 else ''}, final loss {last.get('loss', float('nan')):.7g}"
    if "nll_excess" in last:
        text += f" (NLL {last['nll_excess']:+.4g}/px over the data's floor)"
    if "groups_per_s" in last:
        text += f", {last['groups_per_s']:.1f} groups/s"
    return text

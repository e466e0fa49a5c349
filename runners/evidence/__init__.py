"""The evidence record of one phase job and its three renderings.

A :class:`PhaseRecord` is filled in while the job runs and saved as ``phase_outcome.json``
in the job's Hydra output folder. The hub's inventory section, summary entry and blocker
file are rendered from it, by the job itself and again (idempotently) by the Hydra
post-hook, so both paths write the same text. Each line of a section or entry is escaped as
one line (:func:`one_line`), so no field (a title, a command, an error) can add a line, or
forge or cut a section.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

GREEN, BLOCKED, RUNNING = "GREEN", "BLOCKED", "RUNNING"
INTERRUPTED = "INTERRUPTED"  # ended by SIGINT or SIGTERM (runners.process.interrupt); a blocker says where
OUTCOME_FILE = "phase_outcome.json"


@dataclass
class PhaseRecord:
    """Everything the hub and MLflow say about one job (plain JSON types only)."""

    slot: str
    title: str
    utc_time: str
    command: str
    env: dict[str, str]
    versions: dict[str, str]
    git_commit: str
    parameters: dict[str, object]
    paths: dict[str, str]
    status: str = RUNNING
    step: str = "start"
    xla: dict[str, str] = field(default_factory=dict)
    compute: dict[str, str] = field(default_factory=dict)
    dataset: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)  # what a comparison compared (C2)
    guard: str = "NOT RUN"
    stats_sha1: str | None = None
    parity_key: str | None = None
    mlflow: dict[str, str] = field(default_factory=dict)
    tracking: dict[str, str] = field(default_factory=dict)  # set when MLflow failed: tracking_text()
    error: str | None = None
    blocker: str | None = None
    output_file: str = "stats.json"  # the file whose sha1 is stats_sha1
    work_key: str | None = None  # runners.evidence.resume: what a rerun compares
    hub_error: str | None = None  # why the hub could not take the section (a full disk); not rendered
    quality_warning: str | None = None  # quality_warning(): the reconstruction is no better than a constant

    def save(self, path: Path) -> None:
        """Atomic JSON write (temporary file + rename); a failed write leaves no temporary file."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> "PhaseRecord | None":
        """The record saved at ``path``, or None when there is none."""
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def quality_warning(quality: dict[str, float]) -> str | None:
    """A warning when the reconstruction scores no better than the constant object (``*_to_floor`` >= 1),
    else None. GREEN keeps meaning "the pipeline ran"; this line says the picture is not to be trusted."""
    worse = [f"{label} error {quality[key]:.2f}x" for key, label in
             (("amp_mae_to_floor", "amplitude"), ("phase_mae_to_floor", "phase"))
             if quality.get(key) is not None and quality[key] >= 1.0]
    if not worse:
        return None
    return (f"{' and '.join(worse)} the constant object's: the reconstruction is no better than a constant "
            "(the pipeline ran; the network did not learn this data)")


def warning_tags(record: "PhaseRecord") -> dict[str, str]:
    """The MLflow tag of the record's quality warning, or none."""
    return {"quality_warning": record.quality_warning} if record.quality_warning else {}


def one_line(text: str) -> str:
    """``text`` with every character Python calls unprintable written as its escape.

    Line breaks, CR, NUL and other controls, Unicode line separators, invisible format
    characters and lone surrogates (undecodable bytes of an environment value) become
    ``\\n``, ``\\r``, ``\\x00``, ``\\u2028``, ``\\udcff``; other text (``—``, ``日本``) stays.
    A backslash stays as it is: the escape keeps the hub's structure, it is not meant to be undone.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def failed_tracking(operation: str, error: str, step: str) -> dict[str, str]:
    """``PhaseRecord.tracking`` of a job whose tracker gave up at ``operation`` during ``step``."""
    return {"status": "FAILED", "at": f"{operation} (step {step})", "error": error}


def tracking_text(tracking: dict[str, str]) -> str:
    """The ``Tracking:`` line of a job whose MLflow tracking failed (``status`` FAILED), or
    that ``python -m runners.tracking.sync`` logged later (SYNCED)."""
    failed = f"FAILED at {tracking['at']}: {tracking['error']}"
    if tracking["status"] == "SYNCED":
        return f"SYNCED at {tracking['synced_at']} by `python -m runners.tracking.sync` (the job's tracking {failed})"
    return f"{failed}; run `python -m runners.tracking.sync` when the server is back"


def _kv(mapping: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in mapping.items()) or "-"


def inventory_section(record: PhaseRecord) -> str:
    """The slot's section of analysis/artifact_inventory.txt (docs/design.md §7)."""
    status = record.status if record.status == GREEN else f"{record.status} (step: {record.step}; {record.error})"
    lines = [
        record.title,
        f"Slot: {record.slot}",
        f"UTC time: {record.utc_time}",
        f"Status: {status}",
        f"Command: {record.command}",
        f"Env: {_kv(record.env)}",
        f"XLA: {_kv(record.xla)}",
        f"Compute: {_kv(record.compute)}",
        f"Versions: {_kv(record.versions)}",
        f"Git commit: {record.git_commit}",
        f"Parameters: {_kv(record.parameters)}",
        *([f"Dataset: {_kv(record.dataset)}"] if record.dataset else []),
        *([f"Inputs: {_kv(record.inputs)}"] if record.inputs else []),
        f"Guard: {record.guard}; log {record.paths.get('guard_log', '-')}",
        f"CLI log: {record.paths.get('cli_log', '-')}",
        *([f"Quality warning: {record.quality_warning}"] if record.quality_warning else []),
    ]
    if record.status == GREEN:
        lines += [
            f"Bundle: {record.paths.get('bundle', '-')}",
            f"Run dir: {record.paths.get('run_dir', '-')}",
            f"{record.output_file} sha1: {record.stats_sha1}",
            f"Parity key: {record.parity_key}",
            *([f"Work key: {record.work_key}"] if record.work_key else []),
        ]
    else:
        lines.append(f"Blocker: {record.blocker}")
    lines.append(f"MLflow: {_kv(record.mlflow)}")
    if record.tracking:
        lines.append(f"Tracking: {tracking_text(record.tracking)}")
    return "\n".join(map(one_line, lines))


def summary_entry(record: PhaseRecord) -> str:
    """The slot's entry in summary.md (Markdown)."""
    lines = [f"### {record.title} (`{record.slot}`)", f"- **{record.status}** at {record.utc_time}: `{record.command}`"]
    run = record.mlflow.get("run_id", "-")
    if record.status == GREEN:
        lines += [
            f"- {record.output_file} sha1 `{record.stats_sha1}`; MLflow run `{run}`",
            f"- bundle `{record.paths.get('bundle')}`; CLI log `{record.paths.get('cli_log')}`",
        ]
    else:
        lines += [f"- step {record.step}: {record.error}", f"- blocker `{record.blocker}`; MLflow run `{run}`"]
    if record.quality_warning:
        lines.append(f"- **Quality warning**: {record.quality_warning}")
    if record.tracking:
        lines.append(f"- Tracking: {tracking_text(record.tracking)}")
    return "\n".join(map(one_line, lines))


def run_description(record: PhaseRecord, inventory: str) -> str:
    """The MLflow run's description (its note, Markdown): title, status, where the hub keeps the
    evidence (``inventory``: the inventory file as shown to the user) and the command."""
    where = f"blocker `{record.blocker}`" if record.blocker else f"bundle `{record.paths.get('bundle', '-')}`"
    failed = f" at step {record.step!r}: {record.error}" if record.error else ""
    warning = f"\n\n**Quality warning**: {record.quality_warning}" if record.quality_warning else ""
    return (f"**{record.title}**: {record.status}{failed}{warning}\n\n"
            f"Hub section `{record.slot}` in `{inventory}`; {where}; CLI log `{record.paths.get('cli_log', '-')}`."
            f"\n\nCommand: `{record.command}`")


def blocker_markdown(record: PhaseRecord, stack_trace: str, stale_bundle: str | None) -> str:
    """The blocker file: what failed, where the logs are, how to rerun, and the stack trace."""
    stale = (
        f"- Earlier bundle left in place, NOT produced by this run: `{stale_bundle}`\n" if stale_bundle else ""
    )
    return (
        f"# {record.status}: {record.title}\n\n"
        f"- Slot: `{record.slot}`\n"
        f"- UTC time: {record.utc_time}\n"
        f"- Failed step: {record.step}\n"
        f"- Error: {record.error}\n"
        f"- Guard: {record.guard}; log `{record.paths.get('guard_log', '-')}`\n"
        f"- CLI log: `{record.paths.get('cli_log', '-')}`\n"
        f"- Command: `{record.command}`\n"
        f"- Env: {_kv(record.env)}\n"
        f"- XLA: {_kv(record.xla)}\n"
        f"- Compute: {_kv(record.compute)}\n"
        f"- Versions: {_kv(record.versions)}\n"
        f"- Git commit: {record.git_commit}\n"
        f"- Parameters: {_kv(record.parameters)}\n"
        f"- Dataset: {_kv(record.dataset)}\n"
        + (f"- Inputs: {_kv(record.inputs)}\n" if record.inputs else "") +
        f"- MLflow: {_kv(record.mlflow)}\n"
        f"{stale}\n"
        f"## Stack trace\n\n```\n{stack_trace.rstrip()}\n```\n"
    )

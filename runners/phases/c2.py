"""Phase C2: compare TensorFlow and PyTorch debug bundles (``python -m runners.phase c2=tf_vs_torch``).

Inputs (:mod:`runners.phases.c2_inputs`): ``c2.tf_bundle`` and ``c2.torch_bundle`` (a bundle folder or
a bare stats.json), or else the green TF and PyTorch C1 runs in MLflow that share a
``parity_key`` tag: ``c2.parity_key=K`` compares the pair of K; by default the newest complete
pair is compared and, when it comes from a sweep (both runs children of one ``sweep=parent``
run), so is every other pair of that sweep. ``-m backend=tensorflow,pytorch gridsize=1,2``
followed by ``c2=tf_vs_torch`` thus leaves one comparison per gridsize. The comparison itself
is ``ptycho.evaluation.compare``.

Each comparison has its own slot: ``<variant>/phase_c2`` for one pair outside a sweep,
``<variant>/phase_c2__<sweep suffix>`` for a sweep's pairs (the TF slot's suffix without
``backend=``, e.g. ``tf_vs_torch/phase_c2__gridsize=1``), ``__key=<parity key[:12]>`` with
``c2.parity_key`` or when a sweep pair has no other suffix (``hub.slot`` replaces the part
before ``__``, and stands alone for a single comparison). In the slot:
``analysis/comparison.json`` and ``analysis/comparison.png``; an MLflow run (metrics
``<statistic>.ratio``/``.diff``, tags ``verdict``, ``tf_run_id``, ``torch_run_id``,
``parity_key``, ``c1_sweep_run_id``), children of one parent run (tag ``c2=parent``) when
there are several; and an inventory section. A RED verdict or a missing input blocks that
comparison through the blocker path of C1; the others are still written. Exit status 0
only when every comparison is GREEN.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ptycho import disk_preflight
from runners import tracking
from runners.evidence import OUTCOME_FILE, PhaseRecord
from runners.evidence import hub, outcome
from runners.evidence.outcome import PhaseBlocked, PhaseConfigError, display_path
from runners.job import JobContext
from runners.phases.base import PhaseRun, running_record
from runners.phases.c2_inputs import LABELS, BundlePaths, C2InputError, Inputs, LookupFailed, RunPair, select_pairs
from runners.phases.disk import store_disk_needs, store_folder, written_folders
from runners.schema import PhaseConfig
from runners.tracking.sync import keep_journal

GUARD_NAME = "c2_compare"
NEEDS_MLFLOW = (
    "C2 finds the runs to compare in MLflow (c2.tf_bundle and c2.torch_bundle compare bundles without it)")


class VerdictRed(RuntimeError):
    """The comparison ran and at least one statistic is outside the tolerance."""


class InputSource(Protocol):
    """Where one comparison's bundles come from (runners.phases.c2_inputs: BundlePaths, RunPair, LookupFailed)."""

    def resolve(self, client, launch_dir: Path, download_dir: Path) -> Inputs: ...


@dataclass(frozen=True)
class Comparison:
    """One planned comparison: its hub slot, where its bundles come from, how they were chosen."""

    slot: hub.HubSlot
    source: InputSource
    selection: str


def comparison_slot(spec: PhaseConfig, job: JobContext, suffix: str = "") -> hub.HubSlot:
    """``<hub.slot or variant/phase_c2>[__<suffix>]`` under the hub root."""
    settings = spec.c2
    stem = f"phase_{spec.phase.value}"
    name = (spec.hub.slot or f"{settings.variant}/{stem}") + (f"__{suffix}" if suffix else "")
    return hub.resolve_slot(
        job.launch_dir / spec.hub.root, name, tag=settings.variant, phase_stem=f"{stem}_{settings.variant}",
        variant=settings.variant, guard_name=GUARD_NAME, log_verb="compare",
    )


def c2_slot(spec: PhaseConfig, job: JobContext) -> hub.HubSlot:
    """The slot of the comparison this job wrote last (its phase_outcome.json), else the default one.

    The Hydra post-hook rebuilds a job's evidence from that record, so both must name one slot.
    """
    record = PhaseRecord.load(job.output_dir / OUTCOME_FILE)
    if record is None:
        return comparison_slot(spec, job, _key_suffix(spec))
    default = comparison_slot(spec, job)
    return hub.resolve_slot(default.root, record.slot, tag=default.tag, phase_stem=default.phase_stem,
                            variant=default.variant, guard_name=default.guard_name, log_verb=default.log_verb)


def _key_suffix(spec: PhaseConfig) -> str:
    key = spec.c2.parity_key
    return f"key={key[:12]}" if key and not spec.hub.slot else ""


def new_record(spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, env: dict[str, str],
               selection: str = "") -> PhaseRecord:
    """The RUNNING record of one comparison (``selection``: how its pair was chosen)."""
    settings = spec.c2
    out = analysis_dir(slot)
    parameters = {
        "tolerance": settings.tolerance, "atol": settings.atol,
        "phase_atol_rad": settings.phase_atol_rad,
        "tf_bundle": settings.tf_bundle or "mlflow", "torch_bundle": settings.torch_bundle or "mlflow",
        "parity_key": selection or settings.parity_key or ("-" if settings.tf_bundle else "latest"),
    }
    shown = {"cli_log": slot.cli_log, "bundle": out / "comparison.json", "run_dir": out, "figure": out / "comparison.png"}
    return running_record(job, slot, f"Phase C2 — {settings.title}", env, parameters, shown,
                          guard="NOT RUN (no guard for a comparison)", output_file="comparison.json")


def analysis_dir(slot: hub.HubSlot) -> Path:
    return slot.dir / "analysis"


def plan_comparisons(spec: PhaseConfig, job: JobContext) -> list[Comparison]:
    """The comparisons of this job (module docstring); a failed MLflow lookup becomes one
    comparison in the default slot whose inputs step raises the lookup's error."""
    settings = spec.c2
    if settings.tf_bundle is not None:
        source = BundlePaths(settings.tf_bundle, settings.torch_bundle, settings.parity_key or "")
        return [Comparison(comparison_slot(spec, job, _key_suffix(spec)), source, settings.parity_key or "")]
    try:
        tracker = tracking.Tracker(tracking.absolute_uri(spec.tracking.uri, job.launch_dir), spec.tracking.experiment,
                                   spec.tracking.timeout_s)
        tracker.raise_if_failed(NEEDS_MLFLOW)
        where = f"experiment {tracker.experiment_id} at {tracker.uri}"
        pairs, sweep_run_id = select_pairs(tracker.client, tracker.experiment_id, settings.parity_key, where)
    except Exception as exc:  # not swallowed: raised again in the slot's inputs step (blocker)
        return [Comparison(comparison_slot(spec, job, _key_suffix(spec)), LookupFailed(exc), "")]
    if sweep_run_id is None:
        return [Comparison(comparison_slot(spec, job, _key_suffix(spec)), pairs[0], settings.parity_key or "")]
    selection = f"sweep {sweep_run_id}"
    return [Comparison(comparison_slot(spec, job, suffix), pair, selection)
            for pair, suffix in zip(pairs, _sweep_suffixes(spec, pairs))]


def _sweep_suffixes(spec: PhaseConfig, pairs: list[RunPair]) -> list[str]:
    """Each sweep pair's slot suffix: its sweep suffix, or ``key=`` when that is empty or not unique."""
    if spec.hub.slot and len(pairs) == 1:
        return [""]
    suffixes = [pair.sweep_suffix or f"key={pair.parity_key[:12]}" for pair in pairs]
    if len(set(suffixes)) < len(suffixes):
        suffixes = [f"key={pair.parity_key[:12]}" for pair in pairs]
    return suffixes


def run_c2(spec: PhaseConfig, job: JobContext) -> PhaseRecord:
    """Run every planned comparison; the last GREEN record, or PhaseBlocked when any blocked."""
    (job.output_dir / OUTCOME_FILE).unlink(missing_ok=True)  # c2_slot reads this job's record only
    try:
        comparisons = plan_comparisons(spec, job)
    except ValueError as exc:
        raise PhaseConfigError(str(exc)) from exc
    if len(comparisons) == 1:
        return C2Run(spec, job, comparisons[0], job.parent_run_id).execute()
    return run_several(spec, job, comparisons)


def run_several(spec: PhaseConfig, job: JobContext, comparisons: list[Comparison]) -> PhaseRecord:
    """The comparisons as children of one MLflow parent run; each blocks or turns green alone."""
    group = ComparisonGroup(spec, job, comparisons)
    runs, blocked = [], []
    for comparison in comparisons:
        run = C2Run(spec, job, comparison, group.run_id)
        runs.append(run)
        try:
            run.execute()
        except PhaseBlocked as exc:
            blocked.append((run, exc))
    group.end(n_blocked=len(blocked))
    if not blocked:
        return runs[-1].record
    last, error = blocked[-1]
    last.record.save(last.outcome_path)  # the record the post-hook reads matches the job's outcome
    reasons = "; ".join(f"{run.slot.name}: {exc.reason}" for run, exc in blocked)
    print(f"C2: {len(blocked)} of {len(runs)} comparisons blocked ({reasons})\n"
          + "\n".join(f"blocker: {exc.blocker}" for _, exc in blocked), file=sys.stderr, flush=True)
    raise PhaseBlocked(f"{len(blocked)} of {len(runs)} comparisons blocked: {reasons}", error.blocker,
                       announced=True)  # each blocked comparison printed its blocker


class ComparisonGroup:
    """The MLflow parent run of one C2 job's comparisons, so the UI shows them side by side."""

    def __init__(self, spec: PhaseConfig, job: JobContext, comparisons: list[Comparison]):
        uri = tracking.absolute_uri(spec.tracking.uri, job.launch_dir)
        self.tracker = tracking.Tracker(uri, spec.tracking.experiment, spec.tracking.timeout_s)
        base = comparison_slot(spec, job).name
        tags = {"phase": "c2", "phase_variant": spec.c2.variant, "c2": "parent", "status": "RUNNING",
                "n_comparisons": str(len(comparisons)), "selection": comparisons[0].selection,
                "slots": " ".join(c.slot.name for c in comparisons)}
        self.name, self.n = f"{base} ({len(comparisons)} comparisons)", len(comparisons)
        self.run_id = self.tracker.start(self.name, tags, job.parent_run_id)

    def end(self, n_blocked: int) -> None:
        status = "BLOCKED" if n_blocked else "GREEN"
        self.tracker.set_tags({"status": status, "n_blocked": n_blocked})
        self.tracker.describe(f"**{self.name}**: {status} ({n_blocked} of {self.n} comparisons blocked); "
                              "each comparison is a child run with its own verdict and hub section.")
        self.tracker.end(green=not n_blocked)


class C2Run(PhaseRun):
    """One comparison: its inputs, comparison.json/.png, MLflow run and hub entry (or blocker)."""

    def __init__(self, spec: PhaseConfig, job: JobContext, comparison: Comparison, parent_run_id: str | None):
        super().__init__(spec, job, comparison.slot, new_record(spec, job, comparison.slot, {}, comparison.selection))
        self.settings, self.source, self.parent_run_id = spec.c2, comparison.source, parent_run_id

    def _make_dirs(self) -> None:
        analysis_dir(self.slot).mkdir(parents=True, exist_ok=True)
        self.slot.cli_log.parent.mkdir(parents=True, exist_ok=True)

    def _green_text(self) -> str:
        return (f"GREEN: {self.record.title}; verdict GREEN; "
                f"worst relative difference {self.record.parameters.get('worst_rel_diff', '-')}; "
                f"inventory {display_path(self.slot.inventory, self.job.launch_dir)}")

    def _written_folders(self) -> list[Path]:
        return written_folders(self.spec, self.job.launch_dir, self.slot, cache=False)

    def _run(self) -> None:
        self.record.step = "disk pre-flight"
        self._check_disk()
        self.record.step = "tracking"
        uri = tracking.absolute_uri(self.spec.tracking.uri, self.job.launch_dir)
        self.tracker = tracking.Tracker(uri, self.spec.tracking.experiment, self.spec.tracking.timeout_s,
                                        self._tracking_failed)
        self.record.step = "inputs"
        if not isinstance(self.source, BundlePaths):
            self.tracker.raise_if_failed(NEEDS_MLFLOW)
        inputs = self.source.resolve(self.tracker.client, self.job.launch_dir, analysis_dir(self.slot))
        self.record.parity_key = inputs.parity_key or None
        self.record.inputs = {
            "tf_bundle": display_path(inputs.tf_bundle, self.job.launch_dir),
            "torch_bundle": display_path(inputs.torch_bundle, self.job.launch_dir),
            **{name: value for name, value in (("tf_run_id", inputs.tf_run_id), ("torch_run_id", inputs.torch_run_id))
               if value},
        }
        self._start_tracking(uri, inputs)
        self.record.step = "comparison"
        comparison = self._compare(inputs)
        if not comparison.passed:
            failing = ", ".join(f"{s.name} (ratio {s.ratio:.4g})" for s in comparison.failures)
            raise VerdictRed(f"verdict RED (tolerance {self.settings.tolerance:g}): {failing}")
        self.record.step = "hub"
        outcome.mark_green(self.record, self.slot, self.lock_timeout_s)
        self._end_tracking(green=True)
        self.record.save(self.outcome_path)

    def _check_disk(self) -> None:
        """The disk pre-flight (``runners.process.diskfull.JobSpace``, as in C1): comparison.json, its figure and
        the logs in the slot, the run's rows in a SQLite store, against each file system's free space;
        then space set aside for the evidence on the hub's and the store's file systems."""
        out = analysis_dir(self.slot)
        needs = disk_preflight.comparison_outputs(out, self.slot.cli_log.parent, "hub.root")
        self.space.claim(needs + store_disk_needs(self.spec, self.job.launch_dir),
                         [self.slot.dir, *store_folder(self.spec, self.job.launch_dir)], [out])

    def _start_tracking(self, uri: str, inputs: Inputs) -> None:
        tags = {"phase": "c2", "phase_variant": self.settings.variant, "slot": self.slot.name,
                "git_commit": self.record.git_commit, "status": "RUNNING", "parity_key": inputs.parity_key,
                "tf_run_id": inputs.tf_run_id, "torch_run_id": inputs.torch_run_id,
                "tf_bundle": str(inputs.tf_bundle), "torch_bundle": str(inputs.torch_bundle),
                "c1_sweep_run_id": inputs.sweep_run_id}
        run_id = self.tracker.start(self.slot.name, {k: v for k, v in tags.items() if v}, self.parent_run_id)
        found = {"run_id": run_id, "experiment": self.spec.tracking.experiment, "tracking_uri": uri,
                 "ui": self.tracker.run_link()}
        self.record.mlflow = {key: value for key, value in found.items() if value}  # no run when tracking failed
        self._describe_run()
        self.tracker.log_params({"c2.tolerance": self.settings.tolerance, "c2.atol": self.settings.atol,
                                 "c2.phase_atol_rad": self.settings.phase_atol_rad})

    def _compare(self, inputs: Inputs):
        """comparison.json, comparison.png and the MLflow metrics; the BundleComparison."""
        from ptycho.evaluation.bundle import read_bundle_arrays
        from ptycho.evaluation.compare import BundleComparisonError, compare_bundles, comparison_figure

        try:
            comparison = compare_bundles(inputs.tf_bundle, inputs.torch_bundle, tolerance=self.settings.tolerance,
                                         atol=self.settings.atol,
                                         phase_atol_rad=self.settings.phase_atol_rad, labels=LABELS)
        except BundleComparisonError as exc:
            raise C2InputError(str(exc)) from exc
        out = analysis_dir(self.slot)
        folders = [path if path.is_dir() else path.parent for path in (inputs.tf_bundle, inputs.torch_bundle)]
        arrays = [read_bundle_arrays(folder) for folder in folders]
        if any(found is None for found in arrays):  # a bundle from elsewhere: compare the PNGs
            arrays = [None, None]
        result = {**comparison.to_dict(), "tf_bundle": str(inputs.tf_bundle),
                  "torch_bundle": str(inputs.torch_bundle), "tf_run_id": inputs.tf_run_id,
                  "torch_run_id": inputs.torch_run_id, "parity_key": inputs.parity_key,
                  "figure_from": "arrays.npz" if arrays[0] is not None else "rendered PNGs"}
        text = json.dumps(result, indent=2) + "\n"
        hub.atomic_write_text(out / "comparison.json", text)
        self.record.stats_sha1 = hashlib.sha1(text.encode()).hexdigest()  # of comparison.json
        self.record.parameters["verdict"] = comparison.verdict
        staging = out / f".comparison.{os.getpid()}.tmp.png"  # a full disk leaves no half-written figure
        comparison_figure(*folders, staging, labels=LABELS, arrays_a=arrays[0], arrays_b=arrays[1],
                          comparison=comparison)
        os.replace(staging, out / "comparison.png")
        parity = comparison.parity()
        # the parity figures first: MLflow's compare view plots a run's first metric
        self.tracker.log_metrics({"parity.worst_rel_diff": parity["worst_rel_diff"],
                                  "parity.n_outside_tolerance": parity["n_outside_tolerance"],
                                  "parity.n_compared": parity["n_compared"], **comparison.metrics()})
        self.tracker.set_tags({"verdict": comparison.verdict, "n_failures": len(comparison.failures),
                               "parity.worst_statistic": parity["worst_statistic"]})
        self.record.parameters["worst_rel_diff"] = f"{parity['worst_rel_diff']:.3g} ({parity['worst_statistic']})"
        if self.spec.tracking.log_artifacts:
            self.tracker.log_artifacts(out / "comparison.json", "comparison")
            self.tracker.log_artifacts(out / "comparison.png", "comparison")
        return comparison

    def _end_tracking(self, green: bool) -> None:
        tags = {"status": self.record.status, **({"blocker": self.record.blocker} if self.record.blocker else {})}
        self.tracker.set_tags(tags)
        if not green:
            self.tracker.rename(f"{self.slot.name} [{self.record.status}]")
        self._describe_run()
        self.space.end_run(self.tracker, green, {"status": self.record.status, "blocker": self.record.blocker or "-",
                                                 "error": self.record.error or "-"})
        if self.tracker.failure is not None:
            keep_journal(self.tracker, self.record, self.slot, self.outcome_path, self.lock_timeout_s,
                         self.spec.tracking.log_artifacts)

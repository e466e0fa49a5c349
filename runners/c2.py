"""Phase C2: compare a TensorFlow and a PyTorch debug bundle (``python -m runners.phase c2=tf_vs_torch``).

Inputs: ``c2.tf_bundle`` and ``c2.torch_bundle`` (a bundle folder or a bare stats.json), or
else MLflow: the latest FINISHED C1 runs tagged ``status=GREEN``, ``guard_status=GREEN`` and
``backend=tensorflow`` / ``backend=pytorch`` that share a ``parity_key`` tag (``c2.parity_key``
picks one; default: the key whose newer backend run is the most recent). A run's bundle is
``<param hub.root>/<tag slot>/analysis/forward_parity_debug_<param backend.tag>`` from the
launch folder, else its ``bundle/`` artifact. The comparison itself is ``ptycho.compare``.

Outputs in the slot ``<variant>/phase_c2`` (``__key=<parity key[:12]>`` with c2.parity_key):
``analysis/comparison.json`` and ``analysis/comparison.png``, an MLflow run (metrics
``<statistic>.ratio``/``.diff``, tags ``verdict``, ``tf_run_id``, ``torch_run_id``,
``parity_key``), and the inventory section. A RED verdict or a missing input goes through
the blocker path of C1 (exit status 1).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from runners import hub, outcome, tracking
from runners.envinfo import git_commit, library_versions, project_root
from runners.evidence import OUTCOME_FILE, PhaseRecord
from runners.job import JobContext
from runners.outcome import PhaseBlocked, PhaseConfigError, display_path
from runners.schema import PhaseConfig
from runners.tee import FdTee

log = logging.getLogger(__name__)
GUARD_NAME = "c2_compare"
LABELS = ("tensorflow", "pytorch")


class C2InputError(ValueError):
    """A bundle or MLflow run needed for the comparison is missing or mismatched."""


class VerdictRed(RuntimeError):
    """The comparison ran and at least one statistic is outside the tolerance."""


@dataclass(frozen=True)
class Inputs:
    tf_bundle: Path
    torch_bundle: Path
    tf_run_id: str = ""
    torch_run_id: str = ""
    parity_key: str = ""


def c2_slot(spec: PhaseConfig, job: JobContext) -> hub.HubSlot:
    settings = spec.c2
    stem = f"phase_{spec.phase.value}"
    if spec.hub.slot:
        name = spec.hub.slot
    else:
        suffix = f"__key={settings.parity_key[:12]}" if settings.parity_key else ""
        name = f"{settings.variant}/{stem}{suffix}"
    return hub.resolve_slot(
        job.launch_dir / spec.hub.root, name, tag=settings.variant, phase_stem=f"{stem}_{settings.variant}",
        variant=settings.variant, guard_name=GUARD_NAME,
    )


def analysis_dir(slot: hub.HubSlot) -> Path:
    return slot.dir / "analysis"


def new_record(spec: PhaseConfig, job: JobContext, slot: hub.HubSlot, env: dict[str, str]) -> PhaseRecord:
    settings = spec.c2
    out = analysis_dir(slot)
    return PhaseRecord(
        slot=slot.name,
        title="Phase C2 — TF vs PyTorch comparison",
        utc_time=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        command=job.command, env=env, versions=library_versions(), git_commit=git_commit(project_root()),
        parameters={
            "tolerance": settings.tolerance, "atol": settings.atol,
            "tf_bundle": settings.tf_bundle or "mlflow", "torch_bundle": settings.torch_bundle or "mlflow",
            "parity_key": settings.parity_key or "latest",
        },
        paths={
            "cli_log": display_path(slot.cli_log, job.launch_dir),
            "bundle": display_path(out / "comparison.json", job.launch_dir),
            "run_dir": display_path(out, job.launch_dir),
            "figure": display_path(out / "comparison.png", job.launch_dir),
        },
        guard="NOT RUN (no guard for a comparison)",
    )


def run_c2(spec: PhaseConfig, job: JobContext) -> PhaseRecord:
    """Compare, write the hub and MLflow; the GREEN record, or PhaseBlocked (RED or missing input)."""
    try:
        slot = c2_slot(spec, job)
    except ValueError as exc:
        raise PhaseConfigError(str(exc)) from exc
    return C2Run(spec, job, slot).execute()


class C2Run:
    def __init__(self, spec: PhaseConfig, job: JobContext, slot: hub.HubSlot):
        self.spec, self.job, self.slot, self.settings = spec, job, slot, spec.c2
        self.record = new_record(spec, job, slot, {})
        self.outcome_path = job.output_dir / OUTCOME_FILE
        self.tracker: tracking.Tracker | None = None

    def execute(self) -> PhaseRecord:
        analysis_dir(self.slot).mkdir(parents=True, exist_ok=True)
        self.record.save(self.outcome_path)
        banner = f"# {self.record.title}\n# {self.record.utc_time} pid {os.getpid()}\n# {self.record.command}"
        self.slot.cli_log.parent.mkdir(parents=True, exist_ok=True)
        with FdTee(self.slot.cli_log, banner):
            try:
                self._run()
            except Exception as exc:
                self._fail(exc)
            print(f"GREEN: {self.record.title}; verdict GREEN; "
                  f"inventory {display_path(self.slot.inventory, self.job.launch_dir)}", flush=True)
        return self.record

    def _run(self) -> None:
        from ptycho.compare import BundleComparisonError, compare_bundles, comparison_figure

        self.record.step = "tracking"
        uri = tracking.absolute_uri(self.spec.tracking.uri, self.job.launch_dir)
        self.tracker = tracking.Tracker(uri, self.spec.tracking.experiment)
        self.record.step = "inputs"
        inputs = self._inputs()
        self.record.parity_key = inputs.parity_key or None
        self.record.dataset = {"tf_bundle": display_path(inputs.tf_bundle, self.job.launch_dir),
                               "torch_bundle": display_path(inputs.torch_bundle, self.job.launch_dir)}
        tags = {"phase": "c2", "phase_variant": self.settings.variant, "slot": self.slot.name,
                "git_commit": self.record.git_commit, "status": "RUNNING", "parity_key": inputs.parity_key,
                "tf_run_id": inputs.tf_run_id, "torch_run_id": inputs.torch_run_id,
                "tf_bundle": str(inputs.tf_bundle), "torch_bundle": str(inputs.torch_bundle)}
        run_id = self.tracker.start(self.slot.name, tags, self.job.parent_run_id)
        self.record.mlflow = {"run_id": run_id, "experiment": self.spec.tracking.experiment, "tracking_uri": uri}
        self.tracker.log_params({"c2.tolerance": self.settings.tolerance, "c2.atol": self.settings.atol})
        self.record.step = "comparison"
        try:
            comparison = compare_bundles(inputs.tf_bundle, inputs.torch_bundle, tolerance=self.settings.tolerance,
                                         atol=self.settings.atol, labels=LABELS)
        except BundleComparisonError as exc:
            raise C2InputError(str(exc)) from exc
        out = analysis_dir(self.slot)
        result = {**comparison.to_dict(), "tf_bundle": str(inputs.tf_bundle),
                  "torch_bundle": str(inputs.torch_bundle), "tf_run_id": inputs.tf_run_id,
                  "torch_run_id": inputs.torch_run_id, "parity_key": inputs.parity_key}
        text = json.dumps(result, indent=2) + "\n"
        hub.atomic_write_text(out / "comparison.json", text)
        self.record.stats_sha1 = hashlib.sha1(text.encode()).hexdigest()  # of comparison.json
        self.record.parameters["verdict"] = comparison.verdict
        figure_a = inputs.tf_bundle if inputs.tf_bundle.is_dir() else inputs.tf_bundle.parent
        figure_b = inputs.torch_bundle if inputs.torch_bundle.is_dir() else inputs.torch_bundle.parent
        comparison_figure(figure_a, figure_b, out / "comparison.png", labels=LABELS, comparison=comparison)
        self.tracker.log_metrics(comparison.metrics())
        self.tracker.set_tags({"verdict": comparison.verdict, "n_failures": len(comparison.failures)})
        if self.spec.tracking.log_artifacts:
            self.tracker.log_artifacts(out / "comparison.json", "comparison")
            self.tracker.log_artifacts(out / "comparison.png", "comparison")
        if not comparison.passed:
            failing = ", ".join(f"{s.name} (ratio {s.ratio:.4g})" for s in comparison.failures)
            raise VerdictRed(f"verdict RED (tolerance {self.settings.tolerance:g}): {failing}")
        self.record.step = "hub"
        if self.spec.tracking.log_artifacts:
            self.tracker.log_artifacts(self.slot.cli_log, "logs")
        outcome.mark_green(self.record, self.slot, self.spec.hub.lock_timeout_s)
        self._end_tracking(green=True)
        self.record.save(self.outcome_path)

    def _inputs(self) -> Inputs:
        settings, launch = self.settings, self.job.launch_dir
        if settings.tf_bundle is not None:
            paths = [launch / settings.tf_bundle, launch / settings.torch_bundle]
            for key, path in zip(("c2.tf_bundle", "c2.torch_bundle"), paths):
                if not (path / "stats.json").is_file() and not (path.is_file() and path.name.endswith(".json")):
                    raise C2InputError(f"{key}: {path} is neither a bundle folder with stats.json nor a stats.json")
            return Inputs(*paths, parity_key=settings.parity_key or "")
        return find_runs(self.tracker, settings.parity_key, launch, analysis_dir(self.slot))

    def _end_tracking(self, green: bool) -> None:
        self.tracker.set_tags({"status": self.record.status, "blocker": self.record.blocker or ""})
        self.tracker.end(green)

    def _fail(self, error: Exception) -> None:
        log.error("%s failed at step %r: %s", self.record.title, self.record.step, error)
        outcome.block(self.record, self.slot, error, self.job.launch_dir, self.spec.hub.lock_timeout_s)
        self.record.save(self.outcome_path)
        if self.tracker is not None and self.tracker.run_id is not None:
            try:
                if self.spec.tracking.log_artifacts:
                    self.tracker.log_artifacts(self.slot.cli_log, "logs")
                self._end_tracking(green=False)
            except Exception:
                log.exception("could not close the MLflow run %s as FAILED", self.tracker.run_id)
        print(f"BLOCKED: {self.record.title}; {self.record.error}; blocker {self.record.blocker}", flush=True)
        raise PhaseBlocked(self.record.error, self.record.blocker) from error


def find_runs(tracker: tracking.Tracker, parity_key: str | None, launch_dir: Path, download_dir: Path) -> Inputs:
    """The latest green TF and PyTorch C1 runs sharing a parity key, and their bundles."""
    client = tracker.client
    latest: dict[str, dict[str, object]] = {}  # parity key -> backend -> newest run
    for backend in LABELS:
        query = (f"attributes.status = 'FINISHED' and tags.status = 'GREEN' and tags.guard_status = 'GREEN' "
                 f"and tags.backend = '{backend}'")
        if parity_key:
            query += f" and tags.parity_key = '{parity_key}'"
        runs = client.search_runs([tracker.experiment_id], query, order_by=["attributes.start_time DESC"],
                                  max_results=1000)
        for run in runs:
            key = run.data.tags.get("parity_key")
            if key:
                latest.setdefault(key, {}).setdefault(backend, run)
    complete = {key: pair for key, pair in latest.items() if len(pair) == 2}
    where = f"experiment {tracker.experiment_id} at {tracker.uri}"
    if not complete:
        have = {backend for pair in latest.values() for backend in pair}
        missing = [b for b in LABELS if b not in have] or list(LABELS)
        which = f" with parity_key {parity_key}" if parity_key else ""
        raise C2InputError(
            f"c2: no FINISHED green {' and '.join(missing)} C1 run{which} sharing a parity key with the other "
            f"backend in {where} (found keys: {sorted(latest) or 'none'}); run c1 for both backends or pass "
            "c2.tf_bundle= and c2.torch_bundle="
        )
    key = max(complete, key=lambda k: max(r.info.start_time for r in complete[k].values()))
    tf_run, torch_run = complete[key]["tensorflow"], complete[key]["pytorch"]
    bundles = [_run_bundle(client, run, launch_dir, download_dir / f"bundle_{backend}")
               for backend, run in zip(LABELS, (tf_run, torch_run))]
    return Inputs(*bundles, tf_run_id=tf_run.info.run_id, torch_run_id=torch_run.info.run_id, parity_key=key)


def _run_bundle(client, run, launch_dir: Path, download_dir: Path) -> Path:
    params, tags = run.data.params, run.data.tags
    root, slot, tag = params.get("hub.root"), tags.get("slot"), params.get("backend.tag")
    if root and slot and tag:
        path = launch_dir / root / slot / "analysis" / f"forward_parity_debug_{tag}"
        if (path / "stats.json").is_file():
            return path
    try:
        download_dir.mkdir(parents=True, exist_ok=True)
        local = Path(client.download_artifacts(run.info.run_id, "bundle", str(download_dir)))
        if (local / "stats.json").is_file():
            return local
    except Exception as exc:  # no artifact store or no bundle/ artifact: reported below
        log.info("run %s: no bundle artifact (%s)", run.info.run_id, exc)
    raise C2InputError(
        f"c2: the bundle of run {run.info.run_id} (backend {tags.get('backend')}, slot {slot}) is missing: "
        f"no stats.json under hub.root/slot ({root}/{slot}) nor in its bundle/ artifact"
    )

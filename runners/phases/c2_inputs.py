"""Phase C2's inputs: which TensorFlow and PyTorch bundles to compare, and where they are.

Either two bundle paths (``c2.tf_bundle`` / ``c2.torch_bundle``), or C1 runs found in MLflow:
for every ``parity_key`` tag, the newest FINISHED run of each backend tagged ``status=GREEN``
and ``guard_status=GREEN``. Keys with both backends are *complete*; :func:`select_pairs` picks

* with ``c2.parity_key=K``: the pair of K;
* otherwise the pair of the newest complete key (the key whose newer run started last) and,
  when its TF and PyTorch runs are children of the same sweep parent run (``mlflow.parentRunId``
  pointing at a run tagged ``sweep=parent``), every complete key whose pair belongs to that
  parent too: one comparison per point of the sweep (gridsize=1, gridsize=2...).

A run's bundle is ``<param hub.root>/<tag slot>/analysis/forward_parity_debug_<param backend.tag>``
from the launch folder, else its ``bundle/`` MLflow artifact (downloaded).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
LABELS = ("tensorflow", "pytorch")
PARENT_TAG = "mlflow.parentRunId"


class C2InputError(ValueError):
    """A bundle or MLflow run needed for the comparison is missing or mismatched."""


@dataclass(frozen=True)
class Inputs:
    """The two bundles of one comparison (folders or stats.json) and the runs they came from."""

    tf_bundle: Path
    torch_bundle: Path
    tf_run_id: str = ""
    torch_run_id: str = ""
    parity_key: str = ""
    sweep_run_id: str = ""


@dataclass(frozen=True)
class BundlePaths:
    """``c2.tf_bundle`` and ``c2.torch_bundle``, relative to the launch folder."""

    tf_bundle: str
    torch_bundle: str
    parity_key: str = ""

    def resolve(self, client, launch_dir: Path, download_dir: Path) -> Inputs:
        paths = [launch_dir / self.tf_bundle, launch_dir / self.torch_bundle]
        for key, path in zip(("c2.tf_bundle", "c2.torch_bundle"), paths):
            if not (path / "stats.json").is_file() and not (path.is_file() and path.name.endswith(".json")):
                raise C2InputError(f"{key}: {path} is neither a bundle folder with stats.json nor a stats.json")
        return Inputs(*paths, parity_key=self.parity_key)


@dataclass(frozen=True)
class LookupFailed:
    """The MLflow lookup failed; resolving raises its error again, inside the comparison's slot."""

    error: Exception

    def resolve(self, client, launch_dir: Path, download_dir: Path) -> Inputs:
        raise self.error


@dataclass(frozen=True)
class RunPair:
    """The newest green TF and PyTorch C1 runs (mlflow ``Run`` objects) of one parity key."""

    parity_key: str
    tf_run: object
    torch_run: object

    @property
    def start_time(self) -> int:
        return max(self.tf_run.info.start_time, self.torch_run.info.start_time)

    @property
    def common_parent(self) -> str | None:
        """The parent run id both runs share, or None."""
        parents = {run.data.tags.get(PARENT_TAG) for run in (self.tf_run, self.torch_run)}
        return parents.pop() if len(parents) == 1 else None

    @property
    def sweep_suffix(self) -> str:
        """The TF slot's sweep suffix without its ``backend=`` part (``gridsize=1``), or ''."""
        name = self.tf_run.data.tags.get("slot", "").rsplit("/", 1)[-1]
        swept = name.partition("__")[2].split(",")
        return ",".join(item for item in swept if item and not item.startswith("backend="))

    def resolve(self, client, launch_dir: Path, download_dir: Path) -> Inputs:
        bundles = [run_bundle(client, run, launch_dir, download_dir / f"bundle_{backend}")
                   for backend, run in zip(LABELS, (self.tf_run, self.torch_run))]
        return Inputs(*bundles, tf_run_id=self.tf_run.info.run_id, torch_run_id=self.torch_run.info.run_id,
                      parity_key=self.parity_key, sweep_run_id=self.common_parent or "")


def latest_green_runs(client, experiment_id: str, parity_key: str | None) -> dict[str, dict[str, object]]:
    """parity key -> backend -> the newest FINISHED green C1 run of that backend."""
    latest: dict[str, dict[str, object]] = {}
    for backend in LABELS:
        query = (f"attributes.status = 'FINISHED' and tags.status = 'GREEN' and tags.guard_status = 'GREEN' "
                 f"and tags.backend = '{backend}'")
        if parity_key:
            query += f" and tags.parity_key = '{parity_key}'"
        runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                                  max_results=1000)
        for run in runs:
            key = run.data.tags.get("parity_key")
            if key:
                latest.setdefault(key, {}).setdefault(backend, run)
    return latest


def select_pairs(
    client, experiment_id: str, parity_key: str | None, where: str
) -> tuple[list[RunPair], str | None]:
    """The pairs to compare (module docstring), sorted by TF slot, and the sweep parent run id they
    share (None for the single newest or explicit pair); C2InputError when there is no pair."""
    latest = latest_green_runs(client, experiment_id, parity_key)
    complete = [RunPair(key, pair["tensorflow"], pair["pytorch"]) for key, pair in latest.items() if len(pair) == 2]
    if not complete:
        everything = latest_green_runs(client, experiment_id, None) if parity_key else latest
        raise _no_pair_error(latest, parity_key, where, sorted(k for k, pair in everything.items() if len(pair) == 2))
    newest = max(complete, key=lambda pair: pair.start_time)
    parent = newest.common_parent
    if parity_key or parent is None or not _is_sweep_parent(client, parent):
        return [newest], None
    siblings = [pair for pair in complete if pair.common_parent == parent]
    return sorted(siblings, key=lambda pair: pair.tf_run.data.tags.get("slot", pair.parity_key)), parent


def _is_sweep_parent(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id).data.tags.get("sweep") == "parent"
    except MlflowException as exc:  # the parent was deleted: compare the newest pair alone
        log.warning("c2: parent run %s of the newest pair cannot be read (%s); not a sweep", run_id, exc)
        return False


def _no_pair_error(latest: dict[str, dict[str, object]], parity_key: str | None, where: str,
                   complete_keys: list[str]) -> C2InputError:
    have = {backend for pair in latest.values() for backend in pair}
    missing = [b for b in LABELS if b not in have] or list(LABELS)
    which = f" with parity_key {parity_key}" if parity_key else ""
    return C2InputError(
        f"c2: no FINISHED green {' and '.join(missing)} C1 run{which} sharing a parity key with the other "
        f"backend in {where} (found keys: {sorted(latest) or 'none'}; keys with both backends: "
        f"{complete_keys or 'none'}); run c1 for both backends or pass c2.tf_bundle= and c2.torch_bundle="
    )


def run_bundle(client, run, launch_dir: Path, download_dir: Path) -> Path:
    """The bundle folder of a C1 run: in the hub when still there, else its downloaded artifact."""
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

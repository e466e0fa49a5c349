"""Trained networks in the runner: C1 publishes its network (the card's provenance, the MLflow artifact
folder ``network/``), and the reconstruct phase finds one by MLflow run id, hub slot or folder.

The network card and its files are the core's (``ptycho.network``: ``network.json``, ``probe.npy``,
the weights, beside ``model_spec.json`` and ``history.json`` in the slot's run folder). C1 adds a
``provenance`` section (code state, git commit, slot, MLflow run, dataset sha1s) and logs the folder's
network files to its MLflow run under ``network/``, so a run found in the UI can be applied by its id.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from ptycho.network import CARD_FILE, PROBE_FILE
from ptycho.pipeline import HISTORY_FILE, MODEL_SPEC_FILE
from runners import tracking
from runners.evidence import PhaseRecord, hub
from runners.evidence.envinfo import code_state, project_root

ARTIFACT_FOLDER = "network"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")
KEY = "reconstruct.network"


class NetworkNotFound(ValueError):
    """A ``reconstruct.network`` (or ``c3.network``) that names no network (the message says what was tried)."""


def publish_network(tracker: tracking.Tracker | None, slot: hub.HubSlot, record: PhaseRecord,
                    log_artifacts: bool) -> None:
    """Complete the network card in the slot's run folder with its provenance (the code's state, the
    MLflow run, the data) and log the network files to the MLflow run under ``network/`` (weights,
    card, probe, model_spec.json, history.json)."""
    from ptycho.network import update_card

    run_dir, run_id = slot.run_dir, record.mlflow.get("run_id")
    update_card(run_dir, {"provenance": {
        "code_state": code_state(project_root(), slot.root), "git_commit": record.git_commit, "slot": record.slot,
        "mlflow_run_id": run_id or "-", "tracking_uri": record.mlflow.get("tracking_uri", "-"),
        "dataset": {key: value for key, value in record.dataset.items() if key in ("name", "train_sha1", "test_sha1")},
        "parity_key": record.parity_key or "-",
    }})
    if tracker is None or not log_artifacts:
        return
    weights = run_dir / json.loads((run_dir / CARD_FILE).read_text(encoding="utf-8"))["weights"]
    for path in (run_dir / CARD_FILE, run_dir / PROBE_FILE, weights, run_dir / MODEL_SPEC_FILE,
                 run_dir / HISTORY_FILE):
        if path.is_file():
            tracker.log_artifacts(path, ARTIFACT_FOLDER)


def find_network(reference: str, *, launch_dir: Path, hub_root: Path, tracking_uri: str, download_to: Path,
                 key: str = KEY) -> Path:
    """The folder of the network ``reference`` names: a folder (a run folder with network.json, a slot
    folder holding one run folder, or the card itself), a hub slot under ``hub_root``, or an MLflow
    run id in ``tracking_uri`` (its ``network/`` artifacts downloaded under ``download_to``).
    NetworkNotFound naming ``key`` (the setting that gave ``reference``) and what was looked at."""
    given = launch_dir / reference
    for candidate in (given, hub_root / reference):
        folder = _network_folder(candidate, key)
        if folder is not None:
            return folder
    if RUN_ID.match(reference):
        return _download(reference, tracking_uri, download_to, key)
    raise NetworkNotFound(
        f"{key}: {reference!r} names no network: no {CARD_FILE} in the folder {given} nor in the hub slot "
        f"{hub_root / reference} (or one run folder below it), and it is no MLflow run id (32 hex digits)")


def _network_folder(path: Path, key: str) -> Path | None:
    """``path`` when it holds a card, its parent when it is the card, its one run folder holding one."""
    if path.is_file() and path.name == CARD_FILE:
        return path.parent
    if not path.is_dir():
        return None
    if (path / CARD_FILE).is_file():
        return path
    found = sorted(card.parent for card in path.glob(f"run_*/{CARD_FILE}"))
    if len(found) > 1:
        raise NetworkNotFound(f"{key}: the slot {path} holds several networks ({', '.join(p.name for p in found)}); "
                              "name the run folder")
    return found[0] if found else None


def _download(run_id: str, tracking_uri: str, download_to: Path, key: str) -> Path:
    """The ``network/`` artifacts of MLflow run ``run_id``, downloaded; NetworkNotFound when there are none."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        client.get_run(run_id)
    except MlflowException as exc:
        raise NetworkNotFound(f"{key}: no MLflow run {run_id} in {tracking_uri} ({str(exc).splitlines()[0]})") from exc
    logged = {item.path for item in client.list_artifacts(run_id, ARTIFACT_FOLDER)}
    if f"{ARTIFACT_FOLDER}/{CARD_FILE}" not in logged:
        raise NetworkNotFound(f"{key}: MLflow run {run_id} has no {ARTIFACT_FOLDER}/{CARD_FILE} artifact (not a C1 "
                              "run of this version, or its artifacts were not logged: tracking.log_artifacts=false)")
    folder = download_to / run_id
    if not (folder / ARTIFACT_FOLDER / CARD_FILE).is_file():  # the job's post-hook asks again
        folder.mkdir(parents=True, exist_ok=True)
        client.download_artifacts(run_id, ARTIFACT_FOLDER, str(folder))
    return folder / ARTIFACT_FOLDER

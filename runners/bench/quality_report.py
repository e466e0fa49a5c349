"""The quality study's records and what it writes of them: quality.json, the summaries and quality.md.

A run's record (one trained seed of one (dataset, gridsize, loss, overlap) cell) holds its metrics
(:data:`METRICS`, the MAE of every way of setting the phase offsets, the ratios to the floor), its
times, its run folder and its MLflow run id; the study's document holds the settings, every run, the
references and the summaries (``runners.bench.quality``'s docstring).
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from ptycho.spec import ModelSpec
from ptycho.stitching import PHASE_OFFSETS

METRICS = ("amp_mae", "phase_mae", "amp_ssim", "phase_ssim", "frc50", "amp_psnr")
LOWER_IS_BETTER = {"amp_mae", "phase_mae"}  # SSIM, FRC50 (cycles/px) and PSNR (dB): higher is better
TIMES = ("train_s", "inference_stitching_s")
AMPLITUDE_ONLY = {"lines": "amplitude only (true phase is 0): judge amp_* metrics"}
DEFAULT_LOSS, DEFAULT_OVERLAP = "poisson_nll", ModelSpec.overlap
NO_OVERLAP = "-"  # a gridsize-1 run's overlap: it has no group to average
NO_RUN = "-"  # the MLflow cell of a row when the study was not tracked (or tracking failed)
TABLE_COLUMNS = (("amp_mae", 4), ("phase_mae", 4), ("amp_ssim", 3), ("phase_ssim", 3), ("frc50", 3),
                 ("amp_psnr", 2), ("train_s", 1), ("inference_stitching_s", 1), ("amp_mae_to_floor", 2),
                 ("phase_mae_to_floor", 2))
# amp / phase MAE of the same patches with each way of setting their phase offsets
OFFSET_COLUMNS = tuple(f"offsets_{mode}" for mode in PHASE_OFFSETS)
TABLE_HEADER = ("dataset", "gridsize", "row", "loss", "overlap", "seed", "amp_mae", "phase_mae (rad)", "amp_ssim",
                "phase_ssim", "frc50 (cyc/px)", "amp_psnr (dB)", "train s", "infer+stitch s", "amp_mae / floor",
                "phase_mae / floor",
                *(f"offsets {mode}: amp / phase" for mode in PHASE_OFFSETS), "iterative ref.", "note", "mlflow run")
EVERY_WAY = tuple(f"{name}_{label}" for label in OFFSET_COLUMNS for name in ("amp_mae", "phase_mae"))


def study_cells(gridsizes, losses, overlaps) -> list[tuple[int, str, str]]:
    """The study's (gridsize, loss, overlap) cells in run order: every loss at every gridsize, every
    overlap only at gridsize > 1 (gridsize 1's is NO_OVERLAP)."""
    return [(gridsize, loss, overlap) for gridsize in gridsizes for loss in losses
            for overlap in (overlaps if gridsize > 1 else [NO_OVERLAP])]


def run_name(dataset: str, gridsize: int, loss: str, overlap: str, seed: int) -> str:
    """A run's folder under runs/ (and its MLflow run's name): the loss and overlap named only where they
    are not the defaults, so the default study keeps its folder names."""
    parts = [dataset, f"gs{gridsize}"]
    parts += [loss] if loss != DEFAULT_LOSS else []
    parts += [overlap] if overlap not in (DEFAULT_OVERLAP, NO_OVERLAP) else []
    return "_".join([*parts, f"seed{seed}"])


def cell_of(record: dict) -> tuple[str, str]:
    """(loss, overlap) of a run or summary (DEFAULT_LOSS and the gridsize's default overlap for a record
    written before they were recorded)."""
    default_overlap = NO_OVERLAP if record["gridsize"] == 1 else DEFAULT_OVERLAP
    return record.get("loss", DEFAULT_LOSS), record.get("overlap", default_overlap)


def cell_label(gridsize: int, loss: str, overlap: str) -> str:
    return f"gridsize {gridsize}, {loss}" + ("" if overlap == NO_OVERLAP else f", {overlap} overlap")


def ratio(value: float, floor: float) -> float | None:
    """value / floor, or None where the floor is 0 (the lines object's phase)."""
    return value / floor if floor > 0 else None


def summarise(runs: list[dict], floor: dict) -> dict:
    """Median and worst over the seeds of each metric, train seconds, ratios to the floor."""
    summary = {"n_seeds": len(runs)}
    for key in (*METRICS, *TIMES):
        values = [run[key] for run in runs]
        worst = max(values) if key in LOWER_IS_BETTER or key in TIMES else min(values)
        summary[key] = {"median": statistics.median(values), "worst": worst}
    for key in ("amp_mae", "phase_mae"):
        summary[f"{key}_to_floor"] = {stat: ratio(summary[key][stat], floor[key]) for stat in ("median", "worst")}
    return summary


def median_run(runs: list[dict]) -> dict:
    """The run with the median amp_mae (the lower middle one for an even count)."""
    ranked = sorted(runs, key=lambda run: run["amp_mae"])
    return ranked[(len(ranked) - 1) // 2]


def write_document(out: Path, document: dict, complete: bool) -> None:
    """quality.json, atomically (a temporary file, then a rename), with ``complete`` false until
    the last run: a study that is stopped (a time limit, Ctrl-C) keeps every finished run."""
    path = out / "quality.json"
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps({**document, "complete": complete}, indent=2, default=str) + "\n",
                         encoding="utf-8")
    os.replace(temporary, path)


def print_run(run: dict) -> None:
    loss, overlap = cell_of(run)
    print(f"{run['dataset']:9s} gridsize={run['gridsize']} seed={run['seed']}: amp_mae={run['amp_mae']:.4f} "
          f"phase_mae={run['phase_mae']:.4f} amp_psnr={run['amp_psnr']:.2f} dB "
          f"amp/floor={_cell(run['amp_mae_to_floor'], 2)} "
          f"phase/floor={_cell(run['phase_mae_to_floor'], 2)} train {run['train_s']:.1f} s, "
          f"inference+stitching {run['inference_stitching_s']:.1f} s (loss {loss}, overlap {overlap})", flush=True)


def iterative_cell(summary: dict, runs: list[dict], reference) -> str:
    """The summary row's comparison with the iterative reference (``runners.bench.quality``'s docstring)."""
    if not isinstance(reference, dict):
        return reference
    inference = statistics.median(run["inference_stitching_s"] for run in runs)
    times = {key: _cell(ratio(summary[key]["median"], reference[key]), 1) for key in ("amp_mae", "phase_mae")}
    return (f"PINN / iterative: amp_mae {times['amp_mae']}x, phase_mae {times['phase_mae']}x; "
            f"inference {inference:.1f} s vs {reference['seconds']:.1f} s")


def table_row(dataset: str, gridsize: int, label: str, seed, values: dict, iterative: str = "",
              loss: str = "-", overlap: str = "-", mlflow_run: str | None = None) -> str:
    cells = [dataset, str(gridsize), label, loss, overlap, str(seed)]
    cells += [_cell(values.get(key), digits) if key in values else "-" for key, digits in TABLE_COLUMNS]
    cells += [f"{values[f'amp_mae_{label}']:.4f} / {values[f'phase_mae_{label}']:.4f}"
              if f"amp_mae_{label}" in values else "-" for label in OFFSET_COLUMNS]
    cells += [iterative, AMPLITUDE_ONLY.get(dataset, ""), mlflow_run or NO_RUN]
    return "| " + " | ".join(cells) + " |"


def write_table(path: Path, document: dict) -> None:
    """quality.md: per (dataset, gridsize) the floor, the ceiling and the iterative, then per (loss, overlap)
    one row per run and the summary; each row names the MLflow run that holds its numbers (the study's
    run for the references and summaries, the run's own for a PINN row)."""
    study_run = document.get("mlflow", {}).get("study_run_id")
    lines = [
        "# Reconstruction quality: PINN against the constant-object floor and the true-patch ceiling", "",
        _settings_paragraph(document), "",
        "| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER),
    ]
    for entry in document["references"]:
        dataset, gridsize = entry["dataset"], entry["gridsize"]
        floor = entry["floor"]
        iterative = entry["iterative"]
        for name in ("floor", "ceiling", "iterative"):
            if not isinstance(entry[name], dict):
                lines.append(table_row(dataset, gridsize, name, "-", {}, iterative=entry[name], mlflow_run=study_run))
                continue
            values = {**entry[name], "amp_mae_to_floor": ratio(entry[name]["amp_mae"], floor["amp_mae"]),
                      "phase_mae_to_floor": ratio(entry[name]["phase_mae"], floor["phase_mae"])}
            if name == "iterative":
                values["train_s"] = entry[name]["seconds"]
            lines.append(table_row(dataset, gridsize, name, "-", values, mlflow_run=study_run))
        for summary in document["summaries"]:
            if (summary["dataset"], summary["gridsize"]) != (dataset, gridsize):
                continue
            cell = cell_of(summary)
            runs = [run for run in document["runs"]
                    if (run["dataset"], run["gridsize"]) == (dataset, gridsize) and cell_of(run) == cell]
            lines += [table_row(dataset, gridsize, "PINN", run["seed"], run, loss=cell[0], overlap=cell[1],
                                mlflow_run=run.get("mlflow_run_id")) for run in runs]
            lines.append(table_row(dataset, gridsize, f"summary of {summary['n_seeds']} seeds", "-", summary,
                                   iterative=iterative_cell(summary, runs, iterative), loss=cell[0], overlap=cell[1],
                                   mlflow_run=study_run))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _settings_paragraph(document: dict) -> str:
    settings = document["settings"]
    mlflow = document.get("mlflow") or {}
    tracked = (f" MLflow: experiment {mlflow['experiment']} of {mlflow['uri']}; the references and summaries are "
               f"in the study's run {mlflow.get('study_run_id') or NO_RUN}, each PINN row in its own run (its "
               "\"mlflow run\" cell)." if mlflow.get("uri") else " Not tracked in MLflow.")
    return (
        f"Backend {settings['backend']} on {settings['compute'].get('device', 'cpu')}, "
        f"loss {' / '.join(_as_list(settings['loss']))}, "
        f"learning rate {settings['learning_rate']:g}, "
        f"epochs {settings['epochs']}, {_groups_text(settings['n_groups'])}, batch "
        f"{settings['batch_size']}, overlap at gridsize > 1 "
        f"{' / '.join(_as_list(settings.get('overlap', DEFAULT_OVERLAP)))}, "
        f"{settings['n_images']} simulated positions (a quarter test), threads "
        f"{settings['compute']['threads']}. Metrics on the stitched test reconstruction after the global "
        "amplitude scale and phase offset fit (ptycho.evaluation.quality); amp_psnr: 20 log10(the truth's peak "
        "amplitude / amplitude RMSE). Summary cells: median / worst over seeds. "
        "floor: every patch the constant a0, phase 0; ceiling: the true patches, stitched alike. "
        f"iterative: cdtools L-BFGS, {settings['iterative_epochs']} epochs, probe known, the same test positions "
        f"on the same canvas convention (its train s: the reconstruction's seconds).{tracked}")


def _cell(value, digits: int) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, dict):
        return f"{_cell(value['median'], digits)} / {_cell(value['worst'], digits)}"
    return f"{value:.{digits}f}"


def _groups_text(n_groups: int | None) -> str:
    return "a group seeded at every training position" if n_groups is None else f"{n_groups} groups"


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]

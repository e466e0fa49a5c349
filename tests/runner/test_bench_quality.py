"""In-process smoke run of the reconstruction-quality study (runners.bench.quality) at a tiny budget."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from ptycho.evaluation import plots
from runners.bench import quality as bench_quality
from runners.bench import quality_figures, quality_tracking

from ..png_checks import assert_cells_not_blank, assert_figure, colour_fraction, read_png

pytestmark = [pytest.mark.torch, pytest.mark.slow]  # the quality study's command


def test_quality_study_writes_table_json_and_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default store, sqlite:///mlflow.db, and its mlruns/ are the launch folder's
    out = tmp_path / "quality"
    status = bench_quality.main(["--datasets", "simulated", "--gridsizes", "1", "--seeds", "1", "--epochs", "1",
                                 "--n-images", "64", "--backend", "pytorch", "--threads", "1",
                                 "--iterative-epochs", "2", "--learning-rate", "2e-4", "--out", str(out)])
    assert status == 0
    for name in ("quality.json", "quality.md"):
        assert (out / name).stat().st_size > 0, name
    # Truth | reconstruction | error, amplitude and phase rows (plots.save_truth_comparison: 13 in
    # by 4 in per row), for the PINN and the iterative reference; quality.png stacks the two
    # with a 40 px title band each, at their own size.
    parts = [assert_figure(out / name, (13.0, 8.0), plots.DPI)
             for name in ("quality_simulated.png", "quality_simulated_iterative.png")]
    for part in parts:
        assert_cells_not_blank(part, 2, 3)
    stacked = read_png(out / "quality.png")
    assert stacked.shape[:2] == (sum(part.shape[0] + 40 for part in parts), max(part.shape[1] for part in parts))
    top = 0
    for part in parts:  # each band shows its part (measured: 0.92 of the part's coloured share), not a title alone
        band = stacked[top:top + part.shape[0] + 40]
        assert colour_fraction(band) > 0.75 * colour_fraction(part), (colour_fraction(band), colour_fraction(part))
        top += part.shape[0] + 40

    document = json.loads((out / "quality.json").read_text())
    assert document["complete"] is True and document["settings"]["device"] == "cpu"
    assert document["settings"]["stitch_from"] == "canvas"
    assert document["settings"]["learning_rate"] == 2e-4
    (reference,) = document["references"]
    assert reference["ceiling"]["amp_mae"] < reference["floor"]["amp_mae"]
    iterative = reference["iterative"]  # cdtools (extra `iterative`, in the install line): numbers, not n/a
    assert iterative["amp_mae"] < 0.5 * reference["floor"]["amp_mae"] and iterative["epochs"] == 2
    (run,) = document["runs"]
    assert (run["dataset"], run["gridsize"], run["seed"]) == ("simulated", 1, 0)
    assert run["n_groups_train"] == 48  # the default: a group seeded at every one of the 48 training positions
    history = json.loads((Path(run["run_dir"]) / "history.json").read_text())
    assert history["learning_rate"] == [pytest.approx(2e-4)]  # the run trained at the chosen rate
    assert run["amp_mae_to_floor"] == pytest.approx(run["amp_mae"] / reference["floor"]["amp_mae"])
    # the default stitching anchors the offsets to the centre-of-mass phase; the other ways are reported beside it
    assert document["settings"]["phase_offsets"] == "com"
    assert (run["amp_mae_offsets_com"], run["phase_mae_offsets_com"]) == (run["amp_mae"], run["phase_mae"])
    assert all(run[f"{name}_offsets_{mode}"] > 0 for name in ("amp_mae", "phase_mae") for mode in ("sync", "none"))

    rows = [line.split(" | ")[2] for line in (out / "quality.md").read_text().splitlines()
            if line.startswith("| simulated |")]
    assert rows.count("floor") == 1 and rows.count("ceiling") == 1 and rows.count("PINN") == 1
    assert rows.count("iterative") == 1
    pinn = next(line for line in (out / "quality.md").read_text().splitlines() if "| PINN |" in line)
    assert f"{run['amp_mae_offsets_sync']:.4f} / {run['phase_mae_offsets_sync']:.4f}" in pinn
    assert "PINN / iterative: amp_mae " in (out / "quality.md").read_text()
    assert ("Backend pytorch on cpu, loss poisson_nll, learning rate 0.0002, epochs 1, a group seeded at every "
            "training position, batch 16," in (out / "quality.md").read_text())
    assert "simulated gridsize=1 seed=0: amp_mae=" in capsys.readouterr().out
    _assert_study_is_in_mlflow(tmp_path / "mlflow.db", document, out)


def _assert_study_is_in_mlflow(store, document: dict, out: Path) -> None:
    """The study's run holds its settings, references, summaries and files; each table row names its run."""
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name(quality_tracking.EXPERIMENT)
    study_id = document["mlflow"]["study_run_id"]
    assert document["mlflow"] == {"uri": f"sqlite:///{store}", "experiment": "quality-study",
                                  "study_run_id": study_id, "failure": None}
    study = client.get_run(study_id)
    assert study.info.experiment_id == experiment.experiment_id and study.info.status == "FINISHED"
    assert (study.info.run_name, study.data.tags["role"], study.data.params["epochs"]) == (
        "quality study", "study", "1")
    (reference,) = document["references"]
    assert study.data.metrics["reference.simulated_gs1.floor.amp_mae"] == pytest.approx(reference["floor"]["amp_mae"])
    (summary,) = document["summaries"]
    assert study.data.metrics["summary.simulated_gs1_poisson_nll.amp_mae.median"] == pytest.approx(
        summary["amp_mae"]["median"])
    files = {item.path for item in client.list_artifacts(study_id, "quality")}
    assert {"quality/quality.md", "quality/quality.json", "quality/quality.png", "quality/quality_zoom.png"} <= files

    for run in document["runs"]:
        logged = client.get_run(run["mlflow_run_id"])
        assert logged.data.tags["mlflow.parentRunId"] == study_id and logged.info.status == "FINISHED"
        assert logged.info.run_name == Path(run["run_dir"]).parent.name
        assert logged.data.metrics["quality.amp_mae"] == pytest.approx(run["amp_mae"])
        assert logged.data.metrics["quality.amp_mae_to_floor"] == pytest.approx(run["amp_mae_to_floor"])
        assert (logged.data.params["seed"], logged.data.params["loss"]) == (str(run["seed"]), run["loss"])
        assert [item.path for item in client.list_artifacts(logged.info.run_id)] == ["bundle"]
        assert len(client.get_metric_history(logged.info.run_id, "loss")) == 1  # one epoch's history

    table = (out / "quality.md").read_text()
    header = _cells(next(line for line in table.splitlines() if line.startswith("| dataset |")))
    rows = [_cells(line) for line in table.splitlines() if line.startswith("| simulated |")]
    assert header[-1] == "mlflow run"
    assert [row[-1] for row in rows] == [study_id] * 3 + [run["mlflow_run_id"] for run in document["runs"]] + [study_id]
    assert f"the references and summaries are in the study's run {study_id}" in table


def test_a_study_cut_short_keeps_its_finished_runs(tmp_path, monkeypatch):
    """Stopped (Ctrl-C, a job's time limit) during its second run, the study has written its first,
    which is in MLflow too, and its MLflow run ends FAILED."""
    real_run_one, calls = bench_quality.run_one, []

    def second_run_interrupted(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_one(*args)

    monkeypatch.setattr(bench_quality, "run_one", second_run_interrupted)
    out = tmp_path / "quality"
    store = tmp_path / "mlflow.db"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        bench_quality.main(["--datasets", "simulated", "--gridsizes", "1", "--seeds", "2", "--epochs", "1",
                            "--n-groups", "8", "--n-images", "64", "--threads", "1", "--iterative-epochs", "1",
                            "--out", str(out), "--tracking-uri", f"sqlite:///{store}"])
    document = json.loads((out / "quality.json").read_text())
    assert document["complete"] is False and [run["seed"] for run in document["runs"]] == [0]
    assert document["runs"][0]["amp_mae"] > 0 and not (out / "quality.md").exists()
    assert sorted(p.name for p in out.iterdir()) == ["quality.json", "runs"]  # no temporary file left
    client = MlflowClient(f"sqlite:///{store}")
    assert client.get_run(document["mlflow"]["study_run_id"]).info.status == "FAILED"
    assert client.get_run(document["runs"][0]["mlflow_run_id"]).data.metrics["quality.amp_mae"] > 0


def test_rejects_more_groups_than_training_positions(capsys):
    with pytest.raises(SystemExit):
        bench_quality.parse_args(["--n-images", "64", "--n-groups", "100"])
    assert "--n-groups 100 exceeds the 48 training positions" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-1e-4", "nan", "inf", "fast"])
def test_rejects_a_learning_rate_that_is_not_a_positive_number(capsys, value):
    with pytest.raises(SystemExit):
        bench_quality.parse_args(["--learning-rate", value])
    assert "--learning-rate" in capsys.readouterr().err


def test_rejects_an_unknown_stitch_source(capsys):
    with pytest.raises(SystemExit):
        bench_quality.parse_args(["--stitch-from", "group"])
    assert "--stitch-from: invalid choice: 'group'" in capsys.readouterr().err
    assert bench_quality.parse_args(["--stitch-from", "patches"]).stitch_from == "patches"


# --- the ablation (issue 22): several losses and overlaps in one study; no training below ---

ABLATION_CELLS = [(1, "poisson_nll", "-"), (1, "diffraction_mae", "-"),
                  (2, "poisson_nll", "weighted"), (2, "poisson_nll", "uniform"),
                  (2, "diffraction_mae", "weighted"), (2, "diffraction_mae", "uniform")]


def test_loss_and_overlap_take_several_values_and_default_to_the_runners():
    default = bench_quality.parse_args([])
    assert (default.loss, default.overlap, default.gridsizes, default.ablation) == (
        ["poisson_nll"], ["weighted"], [1, 2], False)
    args = bench_quality.parse_args(["--loss", "diffraction_mae", "poisson_nll", "diffraction_mae",
                                     "--overlap", "uniform", "weighted"])
    assert (args.loss, args.overlap) == (["diffraction_mae", "poisson_nll"], ["uniform", "weighted"])


def test_ablation_sets_gridsizes_losses_and_overlaps_and_keeps_the_rest():
    args = bench_quality.parse_args(["--ablation", "--datasets", "lines", "--seeds", "3", "--epochs", "4"])
    assert (args.gridsizes, args.loss, args.overlap) == (
        [1, 2], ["poisson_nll", "diffraction_mae"], ["weighted", "uniform"])
    assert (args.datasets, args.seeds, args.epochs, args.ablation) == (["lines"], 3, 4, True)
    assert bench_quality.study_cells(args.gridsizes, args.loss, args.overlap) == ABLATION_CELLS


@pytest.mark.parametrize("argv, message", [
    (["--loss", "mse"], "argument --loss: invalid choice: 'mse'"),
    (["--loss", "poisson_nll", "l2"], "argument --loss: invalid choice: 'l2'"),
    (["--overlap", "max"], "argument --overlap: invalid choice: 'max'"),
    (["--overlap"], "argument --overlap: expected at least one argument"),
    (["--ablation", "--loss", "poisson_nll"], "--ablation sets --gridsizes, --loss and --overlap itself; drop --loss"),
    (["--ablation", "--gridsizes", "2", "--overlap", "uniform"], "drop --gridsizes --overlap or --ablation"),
])
def test_rejects_bad_losses_overlaps_and_ablation_clashes(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        bench_quality.parse_args(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_runs_keep_their_folder_names_at_the_defaults():
    assert bench_quality.run_name("simulated", 1, "poisson_nll", "-", 0) == "simulated_gs1_seed0"
    assert bench_quality.run_name("simulated", 2, "poisson_nll", "weighted", 4) == "simulated_gs2_seed4"
    long_name = bench_quality.run_name("lines", 2, "diffraction_mae", "uniform", 1)
    assert long_name == "lines_gs2_diffraction_mae_uniform_seed1"
    assert bench_quality.run_name("lines", 1, "diffraction_mae", "-", 1) == "lines_gs1_diffraction_mae_seed1"


def _fake_stitched(test, seed: int, noise: float):
    """The test object itself as a stitched canvas (centred on it), noisy, its outer 20 px uncovered."""
    from ptycho import stitching

    truth = np.asarray(test.object_guess)
    rng = np.random.default_rng(seed)
    canvas = (truth * (1 + noise * rng.standard_normal(truth.shape))).astype(np.complex64)
    covered = np.zeros(truth.shape, bool)
    covered[20:-20, 20:-20] = True
    return stitching.Stitched(canvas, covered, np.zeros((1, 2)), np.array([truth.shape[1] / 2, truth.shape[0] / 2]), 32)


@pytest.fixture
def untrained_study(monkeypatch):
    """bench_quality.main with run_one and the iterative reference replaced: each 'run' saves a noisy copy
    of the truth as its reconstruction (noise growing with the seed) and returns the record run_one would."""
    from ptycho import stitching
    from ptycho.pipeline import RECONSTRUCTION_FILE

    calls = []

    def fake_run_one(run_phase_job, train, test, dataset, gridsize, seed, args, floor, loss, overlap):
        calls.append((dataset, gridsize, loss, overlap, seed))
        run_dir = args.out / "runs" / bench_quality.run_name(dataset, gridsize, loss, overlap, seed) / "run"
        run_dir.mkdir(parents=True)
        stitched = _fake_stitched(test, len(calls), 0.02 * (seed + 1))
        np.savez(run_dir / RECONSTRUCTION_FILE, canvas=stitched.canvas, covered=stitched.covered,
                 offsets_xy=stitched.offsets_xy, centre_xy=stitched.centre_xy, crop=stitched.crop)
        quality = stitching.stitched_quality(quality_figures.load_stitched(run_dir), test.object_guess)
        return {"dataset": dataset, "gridsize": gridsize, "loss": loss, "overlap": overlap, "seed": seed,
                **{key: quality[key] for key in bench_quality.METRICS},
                "amp_mae_to_floor": bench_quality.ratio(quality["amp_mae"], floor["amp_mae"]),
                "phase_mae_to_floor": bench_quality.ratio(quality["phase_mae"], floor["phase_mae"]),
                "n_groups_train": 8, "train_s": 1.0 + seed, "inference_stitching_s": 0.5, "run_dir": str(run_dir)}

    def fake_iterative(test, epochs, threads, device="cpu"):
        stitched = _fake_stitched(test, 99, 0.01)
        quality = stitching.stitched_quality(stitched, test.object_guess)
        return {**{key: quality[key] for key in bench_quality.METRICS}, "seconds": 3.0, "engine": "lbfgs",
                "epochs": epochs, "library": "fake"}, stitched

    monkeypatch.setattr(bench_quality, "run_one", fake_run_one)
    monkeypatch.setattr(bench_quality, "iterative_reference", fake_iterative)
    return calls


def _shades(image: np.ndarray) -> int:
    """How many colours the colour-mapped pixels show (a panel of one value: one or two)."""
    channels = image.astype(np.int16)
    coloured = image[channels.max(axis=-1) - channels.min(axis=-1) > 40]
    return len(np.unique(coloured, axis=0))


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip()[1:-1].split("|")]


def test_the_ablation_runs_every_cell_and_reports_each(tmp_path, untrained_study, capsys):
    out = tmp_path / "ablation"
    assert bench_quality.main(["--ablation", "--seeds", "2", "--n-images", "64", "--threads", "1",
                               "--out", str(out), "--no-tracking"]) == 0
    expected = [(dataset, *cell[:2], cell[2], seed) for dataset in ("simulated", "lines")
                for cell in ABLATION_CELLS for seed in (0, 1)]
    assert untrained_study == expected  # dataset x gridsize x loss x overlap x seed, in that order

    document = json.loads((out / "quality.json").read_text())
    assert document["complete"] is True and document["settings"]["ablation"] is True
    assert document["mlflow"] == {} and all(run["mlflow_run_id"] is None for run in document["runs"])
    assert document["settings"]["cells"] == [list(cell) for cell in ABLATION_CELLS]
    assert [(r["dataset"], r["gridsize"], r["loss"], r["overlap"], r["seed"]) for r in document["runs"]] == expected
    summaries = [(s["dataset"], s["gridsize"], s["loss"], s["overlap"], s["n_seeds"]) for s in document["summaries"]]
    assert summaries == [(dataset, *cell, 2) for dataset in ("simulated", "lines") for cell in ABLATION_CELLS]
    for reference in document["references"]:  # floor, ceiling and iterative carry the PSNR too
        assert all(math.isfinite(reference[name]["amp_psnr"]) for name in ("floor", "ceiling", "iterative"))
        assert reference["floor"]["amp_psnr"] < reference["ceiling"]["amp_psnr"]

    lines = (out / "quality.md").read_text().splitlines()
    header = _cells(next(line for line in lines if line.startswith("| dataset |")))
    assert header[:6] == ["dataset", "gridsize", "row", "loss", "overlap", "seed"]
    assert {"amp_psnr (dB)", "train s", "infer+stitch s", "frc50 (cyc/px)", "amp_ssim"} <= set(header)
    rows = [_cells(line) for line in lines if line.startswith(("| simulated |", "| lines |"))]
    assert all(len(row) == len(header) for row in rows)
    psnr = header.index("amp_psnr (dB)")
    for dataset in ("simulated", "lines"):
        for gridsize, loss, overlap in ABLATION_CELLS:
            cell = [row for row in rows if (row[0], row[1], row[3], row[4]) == (dataset, str(gridsize), loss, overlap)]
            assert [row[2] for row in cell] == ["PINN", "PINN", "summary of 2 seeds"], (dataset, gridsize, loss,
                                                                                       overlap)
            run = next(r for r in document["runs"] if (r["dataset"], r["gridsize"], r["loss"], r["overlap"],
                                                       r["seed"]) == (dataset, gridsize, loss, overlap, 0))
            assert cell[0][psnr] == f"{run['amp_psnr']:.2f}"
        for gridsize in (1, 2):
            references = [row for row in rows if row[:2] == [dataset, str(gridsize)] and row[3] == "-"]
            assert [row[2] for row in references] == ["floor", "ceiling", "iterative"]
            assert all(float(row[psnr]) > 0 for row in references)
    assert "loss poisson_nll / diffraction_mae, learning rate" in (out / "quality.md").read_text()
    assert {row[-1] for row in rows} == {"-"} and "Not tracked in MLflow." in (out / "quality.md").read_text()
    assert "(loss diffraction_mae, overlap uniform)" in capsys.readouterr().out

    # quality_zoom.png: per dataset truth | 6 cells | iterative, each panel a colour map
    n_cols = len(ABLATION_CELLS) + 2
    width = n_cols * quality_figures.ZOOM_PANEL_IN + quality_figures.ZOOM_BAR_IN
    zoom = assert_figure(out / "quality_zoom.png", (width, 2 * quality_figures.ZOOM_ROW_IN + 0.5), plots.DPI)
    panels = zoom[:, : int(n_cols * quality_figures.ZOOM_PANEL_IN * plots.DPI)]
    top = int(0.5 * plots.DPI)  # the title band
    band = (zoom.shape[0] - top) // 2
    for row in range(2):
        for col in range(n_cols):
            panel = panels[top + row * band: top + (row + 1) * band,
                           col * panels.shape[1] // n_cols: (col + 1) * panels.shape[1] // n_cols]
            assert colour_fraction(panel) > 0.2 and _shades(panel) > 50, (row, col, colour_fraction(panel))
    assert (out / "quality.png").is_file()  # the stacked figure still comes, from the first gridsize-2 cell


def test_the_zoom_crops_the_canvas_centre_pixel_for_pixel(tmp_path):
    """64 x 64 object pixels at the centre of the test canvas, truth and PINN the same pixels of the object
    (the PINN here the truth itself, scaled: the global fit undoes it); drawn as blocks, not a blur."""
    from ptycho.pipeline import RECONSTRUCTION_FILE
    from ptycho.data.simulate import SimulationSpec, simulate_dataset

    _, test = simulate_dataset(SimulationSpec(object_kind="lines", seed=0, n_images=64))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # the canvas: object rows 12..151, columns 20..159 (its pixel (70, 70) is object pixel x 90, y 82)
    canvas = 3 * test.object_guess[12:152, 20:160]
    np.savez(run_dir / RECONSTRUCTION_FILE, canvas=canvas, covered=np.ones(canvas.shape, bool),
             offsets_xy=np.zeros((1, 2)), centre_xy=np.array([90.2, 81.7]), crop=np.int64(32))
    runs = [{"dataset": "lines", "gridsize": 1, "loss": "poisson_nll", "overlap": "-", "seed": 0,
             "amp_mae": 0.0, "run_dir": str(run_dir)}]
    y0, x0, panels = quality_figures.zoom_panels(runs, test, None)
    assert (y0, x0) == (82 - 32, 90 - 32) and [title for title, _ in panels][::2] == ["truth", "iterative: n/a"]
    (_, truth), (_, pinn) = panels[:2]
    np.testing.assert_array_equal(truth, np.abs(test.object_guess[50:114, 58:122]))
    np.testing.assert_allclose(pinn, truth, rtol=1e-5)

    path = quality_figures.write_zoom_figure(tmp_path, runs, {"lines": test}, {"lines": None})
    image = assert_figure(path, (3 * quality_figures.ZOOM_PANEL_IN + quality_figures.ZOOM_BAR_IN,
                                 quality_figures.ZOOM_ROW_IN + 0.5), plots.DPI)
    third = int(quality_figures.ZOOM_PANEL_IN * plots.DPI)
    left, middle, right = (image[:, k * third:(k + 1) * third] for k in range(3))
    assert colour_fraction(left) > 0.3 and colour_fraction(middle) > 0.3 and colour_fraction(right) < 0.05  # n/a: text
    coloured = (left.astype(int).max(axis=-1) - left.astype(int).min(axis=-1)) > 40
    rows = left[coloured.any(axis=1)][:, coloured.any(axis=0)]
    changes = np.count_nonzero(np.any(np.diff(rows.astype(int), axis=1) != 0, axis=-1), axis=1)
    assert np.median(changes) <= 64 + 2  # at most one colour change per object pixel along a row: no interpolation

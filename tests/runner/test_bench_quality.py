"""In-process smoke run of the reconstruction-quality study (runners.bench_quality) at a tiny budget."""
import json
from pathlib import Path

import pytest

from ptycho import plots
from runners import bench_quality

from ..png_checks import assert_cells_not_blank, assert_figure, colour_fraction, read_png

pytestmark = [pytest.mark.torch, pytest.mark.slow]  # the quality study's command


def test_quality_study_writes_table_json_and_figure(tmp_path, capsys):
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


def test_a_study_cut_short_keeps_its_finished_runs(tmp_path, monkeypatch):
    """Stopped (Ctrl-C, a job's time limit) during its second run, the study has written its first."""
    real_run_one, calls = bench_quality.run_one, []

    def second_run_interrupted(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_one(*args)

    monkeypatch.setattr(bench_quality, "run_one", second_run_interrupted)
    out = tmp_path / "quality"
    with pytest.raises(KeyboardInterrupt):
        bench_quality.main(["--datasets", "simulated", "--gridsizes", "1", "--seeds", "2", "--epochs", "1",
                            "--n-groups", "8", "--n-images", "64", "--threads", "1", "--iterative-epochs", "1",
                            "--out", str(out)])
    document = json.loads((out / "quality.json").read_text())
    assert document["complete"] is False and [run["seed"] for run in document["runs"]] == [0]
    assert document["runs"][0]["amp_mae"] > 0 and not (out / "quality.md").exists()
    assert sorted(p.name for p in out.iterdir()) == ["quality.json", "runs"]  # no temporary file left


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

"""runners.bench.pinn_iterative: its --help, and a tiny study (a network trained for one epoch) writing its files."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from runners.bench import pinn_iterative

REPO = Path(__file__).resolve().parents[2]


def test_help_names_the_three_methods_and_the_network_option():
    done = subprocess.run([sys.executable, "-m", "runners.bench.pinn_iterative", "--help"], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
    assert done.returncode == 0, done.stdout
    assert "--network" in done.stdout and "--iterations" in done.stdout and "PINN then iterative" in done.stdout


@pytest.mark.slow
def test_a_tiny_study_writes_its_table_figure_and_rows(tmp_path):
    out = tmp_path / "out"
    code = pinn_iterative.main(["--n-images", "32", "--train-images", "32", "--epochs", "1", "--iterations", "2", "1",
                                "--threads", "2", "--out", str(out)])
    assert code == 0
    study = json.loads((out / "pinn_iterative.json").read_text())
    assert [(row["method"], row["K"]) for row in study["rows"]] == [
        ("pinn", "-"), ("iterative", 1), ("iterative", 2), ("pinn+iterative", 1), ("pinn+iterative", 2)]
    pinn = study["rows"][0]["seconds"]
    assert all(row["seconds"] > pinn for row in study["rows"][3:])  # the network's time is in PINN + iterative's
    assert all(0 < row["amp_mae_to_floor"] and 0 < row["frc50"] <= 0.5 for row in study["rows"])
    table = (out / "pinn_iterative.md").read_text()
    assert "| pinn+iterative | 2 |" in table and "Converged reference: iterative K=2" in table
    assert (out / "pinn_iterative.png").stat().st_size > 10_000

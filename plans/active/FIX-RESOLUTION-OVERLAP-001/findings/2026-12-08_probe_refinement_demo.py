"""Probe refinement demonstration (issue 23 item 3): data simulated with probe_kind='defocus'; the network is
handed the true probe (known), or the default probe at the true probe's total energy, held fixed or refined.

    python plans/active/FIX-RESOLUTION-OVERLAP-001/findings/2026-12-08_probe_refinement_demo.py OUT_DIR CASE [--epochs E] [--factor K]    CASE: known | fixed | refined

Prints one JSON line: the quality (amp/phase MAE to the constant-object floor, FRC50), the final NLL over its
floor on the training groups, the probe error to the true probe (after a global complex factor), seconds.
"""
import argparse, dataclasses, json, time
from pathlib import Path

import numpy as np

from ptycho.determinism import configure_torch
from ptycho.data.phantoms import make_probe_of_kind
from ptycho.data.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import GroupingSpec, ModelSpec, TrainSpec


def probe_error(probe, truth):
    probe, truth = probe.astype(np.complex128), truth.astype(np.complex128)
    c = np.vdot(probe, truth) / np.vdot(probe, probe)
    return float(np.linalg.norm(c * probe - truth) / np.linalg.norm(truth))


parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("case", choices=("known", "fixed", "refined"))
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--factor", type=float, default=50.0)
parser.add_argument("--n-images", type=int, default=512)
parser.add_argument("--n-groups", type=int, default=256)
args = parser.parse_args()
configure_torch(1)
from ptycho.torch import workflow  # noqa: E402  (after the thread settings)
from ptycho import network  # noqa: E402

train, test = simulate_dataset(SimulationSpec(n_images=args.n_images, seed=0, probe_kind="defocus"))
truth = np.asarray(train.probe)
if args.case != "known":
    default = make_probe_of_kind(train.N, "default").astype(np.complex128)
    handed = (default * np.sqrt(np.sum(np.abs(truth) ** 2) / np.sum(np.abs(default) ** 2))).astype(np.complex64)
    train, test = dataclasses.replace(train, probe=handed), dataclasses.replace(test, probe=handed)
class Floors:
    def on_fit_data(self, info):
        self.info = info


floors = Floors()
start = time.perf_counter()
result = workflow.run_phase_job(
    train, test, grouping=GroupingSpec(gridsize=2, neighbor_count=7, n_groups=args.n_groups, seed=0),
    model_spec=ModelSpec(gridsize=2, refine_probe=args.case == "refined", probe_learning_rate_factor=args.factor),
    train_spec=TrainSpec(max_epochs=args.epochs, batch_size=16, seed=0),
    run_dir=args.out / args.case / "run", bundle_dir=args.out / args.case / "bundle", nphotons=1e9,
    callbacks=[floors])
probe = network.load_network(args.out / args.case / "run").probe
q = result.quality
print(json.dumps({"case": args.case, "epochs": args.epochs, "factor": args.factor,
                  "amp_mae_to_floor": q["amp_mae_to_floor"], "phase_mae_to_floor": q["phase_mae_to_floor"],
                  "frc50": q["frc50"], "nll_excess": result.history["poisson_nll"][-1] - floors.info["nll_floor"],
                  "val_nll_excess": result.history["val_poisson_nll"][-1] - floors.info["val_nll_floor"],
                  "probe_error_start": probe_error(np.asarray(train.probe), truth),
                  "probe_error_end": probe_error(probe, truth), "seconds": round(time.perf_counter() - start, 1)}))

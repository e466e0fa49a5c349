# Issue 22 supervised-fit probe (2026-12-08), ran on commit a9753ad; not maintained, not imported by the package.
import numpy as np
from ptycho.data.simulate import SimulationSpec, simulate_dataset
train, test = simulate_dataset(SimulationSpec(n_images=512, object_kind="lines", seed=0, nphotons=1e9))
Y = np.abs(train.Y).astype(np.float64); a0 = 0.724011619272946
N = 64; c = slice(16, 48)
m = np.ones((N, N), bool); m[c, c] = False
e = (Y - a0) ** 2
print("MSE const a0: total", e.mean(), "centre", e[:, c, c].mean(), "ring", e[:, m].mean(),
      "centre share of total loss", e[:, c, c].sum() / e.sum())
# MAE floor in centre
print("MAE const a0 centre", np.abs(Y[:, c, c] - a0).mean(), "median-const", np.abs(Y[:, c, c] - np.median(Y[:, c, c])).mean())

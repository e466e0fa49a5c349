# A record of a probe run, kept as it ran at commit 0039f0f (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 0039f0f
"""Round 10 (issue 8, not a project tool): the probe's share of the first moments from a deconvolved |O|^2.

The probe's share of moment k is sum |P(r-s_k)|^2 grad(arg P)(r-s_k) |O(r)|^2 / T_k: linear in |O|^2, with
T_k = sum |P(r-s_k)|^2 |O(r)|^2 the pattern's measured total. Round 9 took it to first order (b0 + K grad log T).
Hypothesis: |O|^2 deconvolved from the totals T (least squares on a bilinear grid, gradient penalty) gives the
share to higher order, closer to the truth-amplitude oracle (0.08x the floor on the truth's patches, first order
0.15x). Oracle checks on the truth's patches with their own offsets removed, anchored to each integrated phase.
Usage: python <this file> [kind] [n_images]
"""
import json, sys
import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg
sys.path.insert(0, "/work/main")
from ptycho import com_phase, stitching
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.torch.inference import stitch_patches

kind = sys.argv[1] if len(sys.argv) > 1 else "mixed"
n_img = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
train, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0, n_images=n_img))
N, probe = test.N, test.probe.astype(np.complex128)
xy = np.stack([test.xcoords, test.ycoords], axis=1).astype(np.float64)
first, total = com_phase.moments(test.diffraction)
step = com_phase._median_spacing(xy)
lit = total > 0
# |P|^2 grad arg P = Im(conj(P) grad P) (no division by |P|)
k = 2 * np.pi * np.fft.fftfreq(N)  # rad/px, the moments' frequencies (-N/2 .. N/2-1) in FFT order
spectrum = np.fft.fft2(probe)
dPx = np.fft.ifft2(1j * k[None, :] * spectrum)  # spectral derivatives: the first moment's own definition
dPy = np.fft.ifft2(1j * k[:, None] * spectrum)
kernels = [np.abs(probe) ** 2, np.imag(np.conj(probe) * dPx), np.imag(np.conj(probe) * dPy)]


def operators(spacing):
    """Sparse (n, G) maps of a bilinear |O|^2 grid to T and the two numerators; grid origin, shape."""
    grid = np.arange(N) - N / 2
    lo = xy.min(0) + grid[0] - spacing
    shape = (int(np.ceil((xy[:, 1].max() + N / 2 - lo[1]) / spacing)) + 2,
             int(np.ceil((xy[:, 0].max() + N / 2 - lo[0]) / spacing)) + 2)
    gx, gy = np.meshgrid(grid, grid)
    mats = [[], [], []]
    rows_all, cols_all, w_all = [], [], []
    for k, (x, y) in enumerate(xy):
        u = (x + gx - lo[0]) / spacing
        v = (y + gy - lo[1]) / spacing
        i0, j0 = np.floor(v).astype(int), np.floor(u).astype(int)
        fv, fu = v - i0, u - j0
        for di, dj, w in ((0, 0, (1 - fv) * (1 - fu)), (0, 1, (1 - fv) * fu), (1, 0, fv * (1 - fu)), (1, 1, fv * fu)):
            rows_all.append(np.full(N * N, k)); cols_all.append(((i0 + di) * shape[1] + j0 + dj).ravel())
            w_all.append(w.ravel())
    rows, cols, w = np.concatenate(rows_all), np.concatenate(cols_all), np.concatenate(w_all)
    out = []
    for kernel in kernels:
        kw = np.tile(kernel.ravel(), 4 * len(xy)) * w
        out.append(sparse.csr_matrix((kw, (rows, cols)), shape=(len(xy), shape[0] * shape[1])))
    return out, shape


def gradient_penalty(shape):
    n = shape[0] * shape[1]
    index = np.arange(n).reshape(shape)
    blocks = []
    for a, b in ((index[:, :-1], index[:, 1:]), (index[:-1, :], index[1:, :])):
        m = a.size
        blocks.append(sparse.csr_matrix((np.r_[-np.ones(m), np.ones(m)], (np.r_[np.arange(m), np.arange(m)],
                                                                             np.r_[a.ravel(), b.ravel()])), shape=(m, n)))
    return sparse.vstack(blocks)


def share_from_deconvolution(spacing, lam):
    (MT, MX, MY), shape = operators(spacing)
    scale = np.median(total)
    D = gradient_penalty(shape)
    norm = kernels[0].sum()  # a ~ |O|^2 relative to the median pattern's
    A = sparse.vstack([MT[lit] / norm, np.sqrt(lam) * D])
    rhs = np.r_[total[lit] / scale, np.zeros(D.shape[0])]
    a = sparse_linalg.lsqr(A, rhs, atol=1e-10, btol=1e-10, iter_lim=20000)[0]
    predicted = MT @ a
    share_px = np.stack([MX @ a, MY @ a], 1) / np.where(predicted > 0, predicted, 1)[:, None]  # rad/px
    fit = float(np.sqrt(np.mean((predicted[lit] / norm - total[lit] / scale) ** 2)))
    return share_px, fit


def phi_from_share(share_rad_px):
    gradient = 2 * np.pi * first / N - share_rad_px
    return com_phase._integrate(xy, gradient, step, lit)


truth = test.Y
weight = np.abs(probe) ** 2
own = np.angle((truth * weight * np.abs(truth) ** 2).sum(axis=(1, 2)))
oracle = own - own.mean()
with_truth = np.stack([(kernels[1] * np.abs(truth) ** 2).sum((1, 2)), (kernels[2] * np.abs(truth) ** 2).sum((1, 2))], 1) \
    / (kernels[0] * np.abs(truth) ** 2).sum((1, 2))[:, None]
cases = {"first order (com_phase)": com_phase.integrated_com_phase(test.diffraction, probe, test.xcoords, test.ycoords).phi,
         "truth amplitude": phi_from_share(with_truth)}
for spacing in (4, 8):
    for lam in (1e-4, 1e-3, 1e-2):
        share, fit = share_from_deconvolution(spacing, lam)
        cases[f"deconv spacing {spacing} lam {lam:g} (T rms {fit:.3g})"] = phi_from_share(share)

groups = stitching.inference_groups(test, 1, 7, 0)
order = groups.nn_indices[:, 0]
centred = truth * np.exp(-1j * own)[:, None, None]
floor = stitching.stitched_quality(stitch_patches(np.full((len(order), N, N, 1), 0.75, np.complex64), groups),
                                   test.object_guess)
print(json.dumps({"floor": {k: round(floor[k], 4) for k in ("amp_mae", "phase_mae")}}))
for label, phi in cases.items():
    p = centred * np.exp(1j * phi)[:, None, None]
    q = stitching.stitched_quality(stitch_patches(p[order][:, :, :, None].astype(np.complex64), groups), test.object_guess)
    phi0 = phi - phi.mean()
    print(json.dumps({"case": label, "rms rad": round(float(np.sqrt(np.mean((phi0 - oracle) ** 2))), 4),
                      "phase_mae": round(q["phase_mae"], 4), "amp_mae": round(q["amp_mae"], 4),
                      "phase/floor": round(q["phase_mae"] / floor["phase_mae"], 3) if floor["phase_mae"] else None}),
          flush=True)

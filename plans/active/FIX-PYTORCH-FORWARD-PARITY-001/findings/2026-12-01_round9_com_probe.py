# A record of a probe run, kept as it ran at commit 4f7f8fe (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 4f7f8fe
"""Round 9 (issue 8, not a project tool): do the diffraction patterns' centres of mass fix the patches' phase offsets?

The first moment of |FFT2(P O)|^2 is the |P O|^2-weighted mean gradient of the exit wave's phase (exact for a thin
object), so the scan's centre-of-mass field, integrated over the scan positions, gives the object's large-scale phase
that each group's data leave free. Oracle checks on the truth's patches (no network): the ceiling, the patches with
their own weighted mean phase removed (free offsets), and the same patches anchored to the integrated CoM phase.
Usage: python <this file> [dataset kind: mixed|lines] [n_images]
"""
import json, sys
import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg
from scipy.spatial import Delaunay
sys.path.insert(0, "/work/main")
from ptycho import stitching
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.torch.inference import stitch_patches

kind = sys.argv[1] if len(sys.argv) > 1 else "mixed"
n_img = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
train, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0, n_images=n_img))
N = test.N
probe = test.probe
weight = np.abs(probe) ** 2  # (N, N)
freq = np.arange(N) - N // 2


def centre_of_mass(intensity):
    """(n, 2) [kx, ky] first moment of (n, N, N) fftshifted intensities, frequency pixels."""
    total = intensity.sum(axis=(1, 2))
    return np.stack([(intensity * freq[None, None, :]).sum(axis=(1, 2)) / total,
                     (intensity * freq[None, :, None]).sum(axis=(1, 2)) / total], axis=1)


def far_field(exit_wave):
    return np.abs(np.fft.fftshift(np.fft.fft2(exit_wave), axes=(-2, -1))) ** 2


def integrate(xy, gradient):
    """Least-squares potential Phi at scattered points whose gradient is ``gradient`` (n, 2) rad/px."""
    edges = set()
    for simplex in Delaunay(xy).simplices:
        for a in range(3):
            k, l = sorted((simplex[a], simplex[(a + 1) % 3]))
            edges.add((k, l))
    edges = np.array(sorted(edges))
    length = np.linalg.norm(xy[edges[:, 1]] - xy[edges[:, 0]], axis=1)
    edges = edges[length <= 2 * np.median(length)]  # the hull's long edges span far more than one gradient
    k, l = edges[:, 0], edges[:, 1]
    rhs = 0.5 * ((gradient[k] + gradient[l]) * (xy[l] - xy[k])).sum(axis=1)
    m = len(edges)
    A = sparse.csr_matrix((np.r_[-np.ones(m), np.ones(m)], (np.r_[np.arange(m), np.arange(m)], np.r_[k, l])),
                          shape=(m, len(xy)))
    phi = sparse_linalg.lsqr(A, rhs, atol=1e-12, btol=1e-12, iter_lim=20000)[0]
    return phi - phi.mean()


def weighted_mean_phase(patches, w):
    return np.angle((patches * w).sum(axis=(1, 2)))


xy = np.stack([test.xcoords, test.ycoords], axis=1)
truth = test.Y  # (n, N, N) the truth's patches
measured = centre_of_mass(test.diffraction.astype(np.float64) ** 2)
probe_only = centre_of_mass(far_field(probe[None]))[0]
# the probe's own phase gradient weighted by |P|^2 |O|^2: its share of the first moment depends on |O|
with_truth_amp = centre_of_mass(far_field(probe[None] * np.abs(truth)))
out = {}
for label, reference in (("probe only", probe_only[None]), ("probe x |O| (truth amplitude)", with_truth_amp)):
    gradient = 2 * np.pi * (measured - reference) / N
    phi = integrate(xy, gradient)
    oracle = weighted_mean_phase(truth, weight * np.abs(truth) ** 2)
    oracle = oracle - oracle.mean()
    out[label] = {"corr(phi, oracle weighted mean phase)": round(float(np.corrcoef(phi, oracle)[0, 1]), 4),
                  "rms(phi - oracle) rad": round(float(np.sqrt(np.mean((phi - oracle) ** 2))), 4),
                  "oracle std rad": round(float(oracle.std()), 4)}
    out[label + " phi"] = phi

groups = stitching.inference_groups(test, 1, 7, 0)
order = groups.nn_indices[:, 0]  # group b is position order[b]
patches = truth[order][:, :, :, None]
own = weighted_mean_phase(truth, weight * np.abs(truth) ** 2)  # what the CoM integrates
centred = truth * np.exp(-1j * own)[:, None, None]
rng = np.random.default_rng(0)
cases = {
    "truth patches (ceiling)": truth,
    "own weighted mean phase removed": centred,
    "... anchored to integrated CoM (probe only)": centred * np.exp(1j * out["probe only phi"])[:, None, None],
    "... anchored to integrated CoM (probe x |O|)": centred * np.exp(1j * out["probe x |O| (truth amplitude) phi"])[:, None, None],
}
floor = stitching.stitched_quality(stitch_patches(np.full(patches.shape, 0.75, np.complex64), groups), test.object_guess)
print(json.dumps({"floor": {k: round(floor[k], 4) for k in ("amp_mae", "phase_mae")}}))
for label, p in cases.items():
    q = stitching.stitched_quality(stitch_patches(p[order][:, :, :, None].astype(np.complex64), groups), test.object_guess)
    print(json.dumps({"case": label, "amp/floor": round(q["amp_mae"] / floor["amp_mae"], 3),
                      "phase/floor": round(q["phase_mae"] / floor["phase_mae"], 3)}), flush=True)
for label in ("probe only", "probe x |O| (truth amplitude)"):
    print(json.dumps({"integration": label, **out[label]}))

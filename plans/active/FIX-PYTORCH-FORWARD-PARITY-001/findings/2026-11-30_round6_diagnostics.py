# A record of a probe run, kept as it ran at commit b29a4a4 (2026-11-30); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe b29a4a4
"""Round-6 diagnostics (issue 8) of a saved PyTorch run (``<run>/run/model.pt`` and ``model_spec.json``,
as runners.bench_quality or the round-6 probe write them). Not a project tool.

    PYTHONPATH=. python <this file> split <run> [mixed|lines]   # quality on the train positions vs the test positions
    PYTHONPATH=. python <this file> scales <run>                # test phase error below / above a Gaussian scale
    PYTHONPATH=. python <this file> patches <run> [mixed|lines] # per-patch errors, centre vs illuminated ring
    PYTHONPATH=. python <this file> dpc [mixed|lines]           # the phase from the patterns' centres of mass (no network)

Every comparison is against the constant patch a0 (the floor) treated the same way.
"""
import json
import sys

import numpy as np
from scipy import ndimage

from ptycho import determinism, stitching

determinism.configure_torch(2)
from ptycho.batches import group_data  # noqa: E402
from ptycho.simulate import SimulationSpec, simulate_dataset  # noqa: E402
from ptycho.spec import ModelSpec  # noqa: E402
from ptycho.torch.inference import predict_patches, stitch_patches  # noqa: E402
from ptycho.torch.model import load_model  # noqa: E402


def load(run, kind):
    train, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0))
    spec = ModelSpec(**json.load(open(f"{run}/run/model_spec.json")))
    return train, test, spec, load_model(spec, train.probe, f"{run}/run/model.pt")


def predicted(model, spec, data, with_object=False):
    groups = stitching.inference_groups(data, spec.gridsize, 7, 0)
    grouped = group_data(data, groups, spec.intensity_scale, with_object=with_object)
    return groups, grouped, predict_patches(model, grouped.inputs(), 16)


def split(run, kind="mixed"):
    train, test, spec, model = load(run, kind)
    for name, data in (("train", train), ("test", test)):
        groups, _, patches = predicted(model, spec, data)
        q = stitching.stitched_quality(stitch_patches(patches, groups), data.object_guess)
        constant = np.full(patches.shape, spec.initial_amplitude, np.complex64)
        f = stitching.stitched_quality(stitch_patches(constant, groups), data.object_guess)
        print(f"{name}: amp {q['amp_mae']:.4f} ({q['amp_mae'] / f['amp_mae']:.2f}x floor {f['amp_mae']:.4f})  "
              f"phase {q['phase_mae']:.4f} ({q['phase_mae'] / max(f['phase_mae'], 1e-9):.2f}x floor {f['phase_mae']:.4f})")


def scales(run, kind="mixed"):
    _, test, spec, model = load(run, kind)
    groups, grouped, patches = predicted(model, spec, test, with_object=True)
    constant = np.full(patches.shape, spec.initial_amplitude, np.complex64)
    for label, candidate in (("pinn", patches), ("truth", grouped.object), ("const", constant)):
        stitched = stitch_patches(candidate, groups)
        truth, inside = stitching.ground_truth_window(test.object_guess, stitched)
        mask = stitched.covered & inside
        offset = np.angle(np.sum((stitched.canvas * np.conj(truth))[mask]))
        phase, true_phase = np.angle(stitched.canvas * np.exp(-1j * offset)), np.angle(truth)
        weight = mask.astype(float)
        out = [label]
        for sigma in (8, 16, 32):
            def low(a):
                return ndimage.gaussian_filter(a * weight, sigma) / np.maximum(ndimage.gaussian_filter(weight, sigma), 1e-6)
            e_low = np.abs(low(phase) - low(true_phase))[mask].mean()
            e_high = np.abs((phase - low(phase)) - (true_phase - low(true_phase)))[mask].mean()
            out.append(f"sigma {sigma}: above {e_low:.3f} below {e_high:.3f}")
        print(" | ".join(out))


def patches(run, kind="mixed"):
    _, test, spec, model = load(run, kind)
    _, grouped, predicted_patches = predicted(model, spec, test, with_object=True)
    N = spec.N
    y, x = np.mgrid[:N, :N] - N // 2
    centre = (np.abs(x) < N // 4) & (np.abs(y) < N // 4)
    ring = (~centre) & (np.hypot(x, y) < 5 * N / 16)  # the probe's support outside the centre
    lit = centre | ring
    p = np.moveaxis(predicted_patches, -1, 1).reshape(-1, N, N)
    t = np.moveaxis(grouped.object, -1, 1).reshape(-1, N, N)
    const = np.full_like(t, spec.initial_amplitude)
    for label, candidate in (("pinn", p), ("const", const)):
        offset = np.angle(np.sum((candidate * np.conj(t))[:, lit], axis=1))  # oracle phase offset per patch
        aligned = candidate * np.exp(-1j * offset)[:, None, None]
        scale = np.sum(np.abs(aligned)[:, lit] * np.abs(t)[:, lit]) / np.sum(np.abs(aligned)[:, lit] ** 2)
        parts = [label]
        for name, region in (("centre", centre), ("ring", ring)):
            amp = np.abs(scale * np.abs(aligned) - np.abs(t))[:, region].mean()
            phase = np.abs(np.angle(aligned * np.conj(t)))[:, region].mean()
            parts.append(f"{name}: amp {amp:.4f} phase {phase:.4f}")
        print(" | ".join(parts))


def dpc(kind="mixed"):
    """Centre of mass of each pattern (less the probe's own) as the probe-weighted phase gradient,
    2 pi shift / N rad per px, integrated by least squares over each position's 6 nearest
    neighbours; compared, up to a constant, with the true probe-weighted phase at each position."""
    from scipy import sparse
    from scipy.sparse.linalg import lsqr
    from scipy.spatial import cKDTree
    from ptycho.simulate import extract_patches

    for name, data in zip(("train", "test"), simulate_dataset(SimulationSpec(object_kind=kind, seed=0))):
        intensity = np.asarray(data.diffraction, np.float64) ** 2
        n, N, _ = intensity.shape
        k = np.arange(N) - N // 2
        total = intensity.sum(axis=(1, 2))
        probe_far = np.abs(np.fft.fftshift(np.fft.fft2(data.probe))) ** 2
        gx = 2 * np.pi / N * ((intensity * k).sum(axis=(1, 2)) / total - (probe_far * k).sum() / probe_far.sum())
        gy = 2 * np.pi / N * ((intensity * k[:, None]).sum(axis=(1, 2)) / total
                              - (probe_far * k[:, None]).sum() / probe_far.sum())
        x, y = np.asarray(data.xcoords, float), np.asarray(data.ycoords, float)
        weight = np.abs(data.probe) ** 2
        true_phase = np.angle((extract_patches(data.object_guess, x, y, N) * weight).sum(axis=(1, 2)))
        _, neighbours = cKDTree(np.c_[x, y]).query(np.c_[x, y], 7)
        pairs = sorted({(min(i, j), max(i, j)) for i in range(n) for j in neighbours[i, 1:]})
        rows = np.repeat(np.arange(len(pairs)), 2)
        cols = np.array(pairs).ravel()
        A = sparse.csr_matrix((np.tile([-1.0, 1.0], len(pairs)), (rows, cols)), shape=(len(pairs), n))
        i, j = np.array(pairs).T
        rhs = 0.5 * (gx[i] + gx[j]) * (x[j] - x[i]) + 0.5 * (gy[i] + gy[j]) * (y[j] - y[i])
        phase = lsqr(A, rhs)[0]
        offset = np.angle(np.mean(np.exp(1j * (true_phase - phase))))
        error = np.abs(np.angle(np.exp(1j * (phase + offset - true_phase)))).mean()
        spread = np.abs(np.angle(np.exp(1j * (true_phase - np.angle(np.mean(np.exp(1j * true_phase))))))).mean()
        slope, intercept = np.polyfit(phase, true_phase, 1)
        print(f"{name}: true phase spread {spread:.3f} rad; centre-of-mass phase error {error:.3f}, "
              f"correlation {np.corrcoef(phase, true_phase)[0, 1]:.3f}; at its best scale {slope:.3f}: "
              f"{np.abs(slope * phase + intercept - true_phase).mean():.3f}")


if __name__ == "__main__":
    {"split": split, "scales": scales, "patches": patches, "dpc": dpc}[sys.argv[1]](*sys.argv[2:])

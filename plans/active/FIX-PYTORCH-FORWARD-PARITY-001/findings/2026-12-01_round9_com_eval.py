# A record of a probe run, kept as it ran at commit 67090ee (2026-12-01); not maintained since and not imported by the
# package: the modules it imports have moved or changed. To rerun it: git worktree add ../probe 67090ee
"""Round 9 (issue 8, not a project tool): a trained network's patches anchored to the integrated centre-of-mass phase.

Each patch's phase offset (free in its group's data) is set so that its |P|^2 |z|^2-weighted mean phase equals the
potential integrated from the diffraction patterns' first moments, the probe's own share of each moment removed with
the patch's amplitude (round9_com_probe.py: with the true amplitude this takes the truth's patches from 0.68x to 0.08x
the phase floor). Usage: python <this file> <run dir> [kind] [n_images]
"""
import json, sys
import numpy as np
from scipy import sparse
from scipy.sparse import linalg as sparse_linalg
from scipy.spatial import Delaunay
sys.path.insert(0, "/work/main")
from ptycho import determinism, stitching
determinism.configure_torch(2)
from ptycho.batches import group_data
from ptycho.simulate import SimulationSpec, simulate_dataset
from ptycho.spec import ModelSpec
from ptycho.torch.inference import diffracted_patches, predict_patches, stitch_patches
from ptycho.torch.model import load_model

run = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "mixed"
n_img = int(sys.argv[3]) if len(sys.argv) > 3 else 2048
train, test = simulate_dataset(SimulationSpec(object_kind=kind, seed=0, n_images=n_img))
spec = ModelSpec(**json.load(open(f"{run}/model_spec.json")))
model = load_model(spec, train.probe, f"{run}/model.pt")
N, probe = test.N, test.probe.astype(np.complex128)
weight = np.abs(probe) ** 2
freq = np.arange(N) - N // 2


def centre_of_mass(intensity):
    total = intensity.sum(axis=(1, 2))
    return np.stack([(intensity * freq[None, None, :]).sum(axis=(1, 2)) / total,
                     (intensity * freq[None, :, None]).sum(axis=(1, 2)) / total], axis=1)


def far_field(exit_wave):
    return np.abs(np.fft.fftshift(np.fft.fft2(exit_wave), axes=(-2, -1))) ** 2


def integrate(xy, gradient):
    edges = set()
    for simplex in Delaunay(xy).simplices:
        for a in range(3):
            edges.add(tuple(sorted((simplex[a], simplex[(a + 1) % 3]))))
    edges = np.array(sorted(edges))
    length = np.linalg.norm(xy[edges[:, 1]] - xy[edges[:, 0]], axis=1)
    edges = edges[length <= 2 * np.median(length)]
    k, l = edges[:, 0], edges[:, 1]
    rhs = 0.5 * ((gradient[k] + gradient[l]) * (xy[l] - xy[k])).sum(axis=1)
    m = len(edges)
    A = sparse.csr_matrix((np.r_[-np.ones(m), np.ones(m)], (np.r_[np.arange(m), np.arange(m)], np.r_[k, l])),
                          shape=(m, len(xy)))
    return sparse_linalg.lsqr(A, rhs, atol=1e-12, btol=1e-12, iter_lim=20000)[0]


def probe_share_from_total_intensity(radius_steps=1.2):
    """(n, 2) the probe's share of each first moment, from the measured total intensities alone.

    To first order in a log-linear |O|^2 = a exp(h.r) under the probe, the share is b0 + K h, where b0 is the probe's
    own moment, K its response to h (computed here by a finite difference), and h = grad log T, T(s) = sum |P|^2 |O|^2
    the pattern's total intensity, estimated by a least-squares plane through log T of the neighbours within
    radius_steps scan steps."""
    from scipy.spatial import cKDTree
    b0 = centre_of_mass(far_field(probe[None]))[0]
    grid = np.arange(N) - N // 2
    X, Y = np.meshgrid(grid, grid)
    eps = 1e-3
    K = np.stack([(centre_of_mass(far_field(probe[None] * np.exp(0.5 * eps * R)[None]))[0] - b0) / eps
                  for R in (X, Y)], axis=1)
    xy = np.stack([test.xcoords, test.ycoords], axis=1)
    log_total = np.log((test.diffraction.astype(np.float64) ** 2).sum(axis=(1, 2)))
    tree = cKDTree(xy)
    step = np.median(tree.query(xy, 2)[0][:, 1])
    h = np.zeros((len(xy), 2))
    for k, near in enumerate(tree.query_ball_point(xy, radius_steps * step)):
        d = xy[near] - xy[k]
        h[k] = np.linalg.lstsq(np.c_[np.ones(len(near)), d], log_total[near], rcond=None)[0][1:]
    return b0[None] + h @ K.T


LAST = {}


def anchored(patches, nn_indices, amplitude_from):
    """patches (B, N, N, C) with each patch's offset set from the integrated CoM phase."""
    B, _, _, C = patches.shape
    flat = np.transpose(patches, (0, 3, 1, 2)).reshape(B * C, N, N).astype(np.complex128)
    position = nn_indices.reshape(-1)
    count = np.zeros(test.n_images)
    np.add.at(count, position, 1)
    used = count > 0
    if isinstance(amplitude_from, str):
        reference = probe_share_from_total_intensity()
    else:
        amp = np.abs(np.transpose(amplitude_from, (0, 3, 1, 2)).reshape(B * C, N, N))
        reference = np.zeros((test.n_images, 2))
        np.add.at(reference, position, centre_of_mass(far_field(probe[None] * amp)))
        reference[used] /= count[used, None]
    measured = centre_of_mass(test.diffraction.astype(np.float64) ** 2)
    xy = np.stack([test.xcoords, test.ycoords], axis=1)
    phi = np.zeros(test.n_images)
    phi[used] = integrate(xy[used], 2 * np.pi * (measured[used] - reference[used]) / N)
    LAST["phi"] = phi
    mode = __import__("os").environ.get("OWN", "complex_PO")
    if mode == "complex_PO":
        own = np.angle((flat * weight * np.abs(flat) ** 2).sum(axis=(1, 2)))
    else:  # linear |P|^2-weighted mean of the phase about its complex mean: what the integrated potential is
        w = np.broadcast_to(weight, flat.shape) if mode == "linear_P" else weight * np.abs(flat) ** 2
        centre = np.angle((flat * w).sum(axis=(1, 2)))
        own = centre + (np.angle(flat * np.exp(-1j * centre)[:, None, None]) * w).sum(axis=(1, 2)) / w.sum(axis=(1, 2))
    flat = flat * np.exp(1j * (phi[position] - own))[:, None, None]
    return np.transpose(flat.reshape(B, C, N, N), (0, 2, 3, 1)).astype(np.complex64)


def stitched_amplitude(patches):
    """(B, N, N, C) amplitude under each patch cut from the stitched canvas (the patch's own where uncovered)."""
    from scipy import ndimage
    st = stitch_patches(patches, groups)
    M = st.canvas.shape[0]
    B, _, _, C = patches.shape
    pos = stitching.flat_offsets(groups.coords_nn)  # (B*C, 2) absolute [x, y]
    grid = np.arange(N) - N / 2
    rows = pos[:, 1, None, None] - st.centre_xy[1] + M / 2 + grid[None, :, None] + 0 * grid[None, None, :]
    cols = pos[:, 0, None, None] - st.centre_xy[0] + M / 2 + grid[None, None, :] + 0 * grid[None, :, None]
    amp = ndimage.map_coordinates(np.abs(st.canvas), [rows, cols], order=1, cval=0.0)
    cov = ndimage.map_coordinates(st.covered.astype(float), [rows, cols], order=1, cval=0.0) > 0.999
    own = np.abs(np.transpose(patches, (0, 3, 1, 2)).reshape(B * C, N, N))
    amp = np.where(cov, amp, own)
    return np.transpose(amp.reshape(B, C, N, N), (0, 2, 3, 1))


groups = stitching.inference_groups(test, spec.gridsize, 7, 0)
g = group_data(test, groups, spec.intensity_scale)
raw = predict_patches(model, g.inputs(), 16)
canvas = diffracted_patches(model, raw, g.coords_relative)
const = np.full(raw.shape, spec.initial_amplitude, np.complex64)
floor = stitching.stitched_quality(stitch_patches(const, groups), test.object_guess)
truth = test.Y[groups.nn_indices][:, :, :, :].transpose(0, 2, 3, 1)  # (B, N, N, C)


def report(label, patches, sync=False):
    q = stitching.stitched_quality(stitch_patches(patches, groups, phase_offsets="sync" if sync else "none"), test.object_guess)
    print(json.dumps({"case": label, "amp/floor": round(q["amp_mae"] / floor["amp_mae"], 3),
                      "phase/floor": round(q["phase_mae"] / floor["phase_mae"], 3)}), flush=True)


def lowfreq_corrected(patches, sigma_steps):
    """Anchored, stitched, then the canvas phase's |P|^2-weighted mean at each position pulled onto phi (the residual
    interpolated by Gaussian kernel smoothing of width sigma_steps scan steps)."""
    from scipy import ndimage
    p = anchored(patches, groups.nn_indices, "total")
    st = stitch_patches(p, groups)
    M = st.canvas.shape[0]
    xy = np.stack([test.xcoords, test.ycoords], axis=1)
    phi = LAST["phi"]
    centre = st.centre_xy
    grid = np.arange(N) - N / 2
    rows = xy[:, 1, None, None] - centre[1] + M / 2 + grid[None, :, None] + 0 * grid[None, None, :]
    cols = xy[:, 0, None, None] - centre[0] + M / 2 + grid[None, None, :] + 0 * grid[None, :, None]
    win = ndimage.map_coordinates(st.canvas.real, [rows, cols], order=1) + 1j * ndimage.map_coordinates(st.canvas.imag, [rows, cols], order=1)
    cov = ndimage.map_coordinates(st.covered.astype(float), [rows, cols], order=1)
    w = weight[None] * np.abs(win) ** 2 * cov
    mean_phase = np.angle((win * w).sum(axis=(1, 2)))
    resid = np.angle(np.exp(1j * (phi - mean_phase)))
    resid -= np.median(resid)
    r = np.arange(M) - M / 2
    cy, cx = r[:, None] + centre[1], r[None, :] + centre[0]
    step = 10.67
    acc = np.zeros((M, M)); wsum = np.zeros((M, M))
    for k in range(len(xy)):  # Gaussian kernel smoothing of the residual onto the canvas
        g = np.exp(-((cx - xy[k, 0]) ** 2 + (cy - xy[k, 1]) ** 2) / (2 * (sigma_steps * step) ** 2))
        acc += g * resid[k]; wsum += g
    correction = acc / np.maximum(wsum, 1e-12)
    from dataclasses import replace
    return replace(st, canvas=(st.canvas * np.exp(1j * correction)).astype(np.complex64))


def report_stitched(label, st):
    q = stitching.stitched_quality(st, test.object_guess)
    print(json.dumps({"case": label, "amp/floor": round(q["amp_mae"] / floor["amp_mae"], 3),
                      "phase/floor": round(q["phase_mae"] / floor["phase_mae"], 3)}), flush=True)


if "LOWFREQ" in __import__("os").environ:
    report("diffracted CoM-anchored", anchored(canvas, groups.nn_indices, "total"))
    for sig in (0.5, 1.0, 2.0):
        report_stitched(f"... + low-frequency correction sigma {sig} steps", lowfreq_corrected(canvas, sig))
    sys.exit()
if "QUICK" in __import__("os").environ:  # the study's stitching (diffracted patches) only
    report("diffracted as is", canvas)
    report("diffracted CoM-anchored, probe share from total intensities", anchored(canvas, groups.nn_indices, "total"))
    report("diffracted CoM-anchored, true amplitude (oracle)", anchored(canvas, groups.nn_indices, truth))
    sys.exit()
for name, p in (("decoder", raw), ("diffracted", canvas)):
    report(f"{name} as is", p)
    report(f"{name} synchronised", p, sync=True)
    report(f"{name} CoM-anchored, own amplitude", anchored(p, groups.nn_indices, p))
    report(f"{name} CoM-anchored, true amplitude (oracle)", anchored(p, groups.nn_indices, truth))
    report(f"{name} CoM-anchored, stitched amplitude", anchored(p, groups.nn_indices, stitched_amplitude(p)))
    report(f"{name} CoM-anchored, probe share from total intensities", anchored(p, groups.nn_indices, "total"))
    break
for sigma in (1, 2, 4):
    from scipy import ndimage
    blurred = ndimage.gaussian_filter(np.abs(truth), (0, sigma, sigma, 0))
    report(f"decoder CoM-anchored, truth amplitude blurred sigma {sigma}", anchored(raw, groups.nn_indices, blurred))
report("decoder CoM-anchored, stitched truth amplitude", anchored(raw, groups.nn_indices, stitched_amplitude(truth.astype(np.complex64))))
report("truth CoM-anchored, network amplitude", anchored(truth, groups.nn_indices, canvas))

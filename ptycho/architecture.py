"""The PINN's architecture as plain numbers, shared by the Keras model and its PyTorch twin.

Both backends build their layers from :func:`filter_ladder` and start from the same numbers,
:func:`initial_weights`, so a TF run and a PyTorch run of the same spec begin identically
(Phase C2 compares them). Nothing here imports TensorFlow or PyTorch.

Filter ladders (s = n_filters_scale). As in the reference, the encoder always pools down to
an 8 x 8 bottleneck and the decoder always ends at N/2 with 32s channels, so larger N gets
one more block per doubling, each with half the filters of the next:

    N     encoder filters              decoder filters             outer-ring up-block
    64    32s 64s 128s                 64s 32s                     32s
    128   16s 32s 64s 128s             128s 64s 32s                16s
    256   8s 16s 32s 64s 128s          256s 128s 64s 32s           8s

Convolution layer paths (the Keras names below the model, ``/``-separated; torch module
paths use ``.``), in forward order: ``encoder/block{k}/conv{0,1}``, then for each of
``amplitude_decoder`` and ``phase_decoder``: ``block{k}/conv{0,1}``, ``head/centre_conv``,
``head/outer_block/conv{0,1}``, ``head/outer_conv``. Every convolution is 3 x 3.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import optimize

from ptycho.data.contract import SUPPORTED_N

OUTER_CHANNELS = 4  # decoder channels reserved for the outer-ring branch (reference c_outer)
BOTTLENECK_PX = 8
KERNEL_PX = 3
DECODERS = ("amplitude_decoder", "phase_decoder")
OUTPUT_CONVS = ("head/centre_conv", "head/outer_conv")  # no ReLU after them
AMPLITUDE_START_RANGE = (0.05, 0.95)  # a0 the sigmoid centre can start at (logit stays within +-3)
AMPLITUDE_OUTSIDE_START = 0.5  # where the sigmoid starts when the data's amplitude lies outside that range
RING_WEIGHT = 0.01  # weight of a patch's outer ring in the group's overlap average (overlap_weights)
PROBE_FIELD = "probe_field"  # the weight of a refined probe (ModelSpec.refine_probe; probe_field_start)
OVERLAP_MODES = ("weighted", "uniform")  # ModelSpec.overlap: how a group's patches are averaged


def filter_ladder(N: int, n_filters_scale: int) -> dict[str, tuple[int, ...] | int]:
    """Filters per block for patch side N: {'encoder': (...), 'decoder': (...), 'outer': int}."""
    if N not in SUPPORTED_N:
        raise ValueError(f"filter_ladder: N must be one of {SUPPORTED_N}; got {N}")
    doublings = int(round(math.log2(N // BOTTLENECK_PX)))  # 3, 4, 5 pooling blocks
    s = n_filters_scale
    encoder = tuple(128 * s // 2 ** (doublings - 1 - k) for k in range(doublings))
    decoder = tuple(32 * s * 2 ** (doublings - 2 - k) for k in range(doublings - 1))
    return {"encoder": encoder, "decoder": decoder, "outer": 32 * s * 64 // N}


def conv_layers(N: int, gridsize: int, n_filters_scale: int) -> dict[str, tuple[int, int]]:
    """{layer path: (input channels, filters)} of every 3 x 3 convolution, in forward order."""
    ladder = filter_ladder(N, n_filters_scale)
    layers: dict[str, tuple[int, int]] = {}
    _two_conv_blocks(layers, "encoder", gridsize**2, ladder["encoder"])
    for decoder in DECODERS:
        width = _two_conv_blocks(layers, decoder, ladder["encoder"][-1], ladder["decoder"])
        layers[f"{decoder}/head/centre_conv"] = (width - OUTER_CHANNELS, gridsize**2)
        _two_conv_blocks(layers, f"{decoder}/head/outer_block", OUTER_CHANNELS, (ladder["outer"],), "")
        layers[f"{decoder}/head/outer_conv"] = (ladder["outer"], gridsize**2)
    return layers


def _two_conv_blocks(layers, prefix, width, filters, block="block{k}/") -> int:
    """Add blocks of two convolutions under ``prefix``; returns the last block's width."""
    for k, f in enumerate(filters):
        name = f"{prefix}/{block.format(k=k)}"
        layers[f"{name}conv0"], layers[f"{name}conv1"] = (width, f), (f, f)
        width = f
    return width


def initial_weights(N: int, gridsize: int, n_filters_scale: int, seed: int,
                    initial_amplitude: float = 0.5) -> dict[str, dict[str, np.ndarray]]:
    """{layer path: {'kernel': (3, 3, in, out) float32 HWIO, 'bias': (out,) float32}}.

    Kernels of the ReLU layers are He normal, N(0, 2 / (9 * in)). With Keras' default
    (Glorot) every ReLU layer halved the signal's power, so the bottleneck's pre-activations
    started about 100x smaller than an Adam step, and within the first epoch 53-60% of the
    bottleneck channels were dead for every input: the collapse of issue 8 (He with the
    encoder input at unit RMS and lr 1e-4: 0-2% dead).

    The output convolutions (``OUTPUT_CONVS``, before the sigmoid, tanh and swish heads) start
    at zero, and their biases at :func:`amplitude_head_biases` (amplitude) or zero (phase): the
    network starts from the constant object a0 = ``initial_amplitude`` that the data implies,
    at the constant-object NLL, whatever its input; the kernels still receive gradients. Random
    output kernels put the outer ring's phase at several radians (wrapping across +-pi) and
    its amplitude far from a0, whose canvas average pulled every neighbour's centre away: the
    first NLL was far above the constant object's, and TF and PyTorch drifted apart (25% in
    patch_phase.mean after 4 steps; zero kernels: 1e-5). One numpy generator seeded with
    ``seed`` draws the kernels in forward order, so the numbers depend on the seed, the
    architecture and a0 alone, never on the backend.
    """
    generator = np.random.default_rng(seed)
    biases = amplitude_head_biases(initial_amplitude)
    weights = {}
    for path, (fan_in, filters) in conv_layers(N, gridsize, n_filters_scale).items():
        shape = (KERNEL_PX, KERNEL_PX, fan_in, filters)
        kernel = generator.normal(0.0, math.sqrt(2.0 / (KERNEL_PX * KERNEL_PX * fan_in)), shape)
        if path.endswith(OUTPUT_CONVS):
            kernel = np.zeros(shape)  # drawn all the same, so the other layers' numbers do not move
        bias = np.full(filters, biases.get(path, 0.0), np.float32)
        weights[path] = {"kernel": kernel.astype(np.float32), "bias": bias}
    return weights


def amplitude_head_biases(initial_amplitude: float) -> dict[str, float]:
    """{layer path: bias} so that the amplitude head outputs a0 = ``initial_amplitude`` for a zero
    input: logit(a0) before the centre's sigmoid, swish^-1(a0) before the outer ring's swish.

    a0 must lie in [AMPLITUDE_START_RANGE]; an object outside it is still reachable, because
    exp(log_scale) trains and carries the global amplitude (quality is judged after a global fit).
    """
    low, high = AMPLITUDE_START_RANGE
    if not (isinstance(initial_amplitude, (int, float)) and low <= initial_amplitude <= high):
        raise ValueError(f"initial_amplitude: expected a number in [{low}, {high}]; got {initial_amplitude!r}")
    a0 = float(initial_amplitude)
    swish_inverse = optimize.brentq(lambda z: z / (1.0 + math.exp(-z)) - a0, 0.0, 10.0, xtol=1e-12)
    return {"amplitude_decoder/head/centre_conv": math.log(a0 / (1.0 - a0)),
            "amplitude_decoder/head/outer_conv": swish_inverse}


def implied_amplitude(diffraction: np.ndarray, probe: np.ndarray) -> float:
    """The constant object amplitude the data implies (Parseval: mean_n sum A**2 = a0**2 sum |P|**2).
    diffraction (n, N, N) amplitudes A_file; probe (N, N) complex."""
    energy = float(np.mean(np.sum(np.square(np.asarray(diffraction, np.float64)), axis=(-2, -1))))
    probe_energy = float(np.sum(np.abs(np.asarray(probe)) ** 2))
    if not (np.isfinite(energy) and np.isfinite(probe_energy) and energy > 0 and probe_energy > 0):
        raise ValueError("implied_amplitude: the diffraction and the probe must carry finite, "
                         f"non-zero energy; got {energy} and {probe_energy}")
    return math.sqrt(energy / probe_energy)


def initial_amplitude_from_data(diffraction: np.ndarray, probe: np.ndarray) -> float:
    """:func:`implied_amplitude` clipped to AMPLITUDE_START_RANGE."""
    low, high = AMPLITUDE_START_RANGE
    return float(np.clip(implied_amplitude(diffraction, probe), low, high))


def amplitude_start(diffraction: np.ndarray, probe: np.ndarray) -> tuple[float, float]:
    """(initial_amplitude a0, amplitude_scale f) of ``ModelSpec`` for these data: the network's object
    amplitude is f * sigmoid(...), and it starts at f * a0 = the amplitude the data imply.

    f = 1 while the implied amplitude lies in AMPLITUDE_START_RANGE (the sigmoid's own range); outside
    it the sigmoid starts at AMPLITUDE_OUTSIDE_START and f carries the rest. Without f, exp(log_scale)
    had to learn the factor at Adam's pace, about lr = 1e-4 in log per step: data whose probe is
    normalised otherwise, or whose object is brighter than 1 (amplitude 0.3-9.4), gave a network
    stuck far from the data's energy and a reconstruction worse than a constant (issue 22).
    """
    implied = implied_amplitude(diffraction, probe)
    low, high = AMPLITUDE_START_RANGE
    if low <= implied <= high:
        return implied, 1.0
    return AMPLITUDE_OUTSIDE_START, implied / AMPLITUDE_OUTSIDE_START


def border_mask(N: int) -> np.ndarray:
    """(N, N) float32: 0 inside the central N/2 x N/2 square, 1 outside (the outer ring)."""
    mask = np.ones((N, N), np.float32)
    mask[N // 4: N - N // 4, N // 4: N - N // 4] = 0.0
    return mask


def overlap_weights(N: int) -> np.ndarray:
    """(N, N) float32 weights of a patch's pixels in its group's overlap average (``ModelSpec.overlap``
    'weighted'): 1 on the central N/2 x N/2 square that the decoders' main branch draws at full
    resolution, RING_WEIGHT on the outer ring that the 4-channel side branch draws.

    With equal weights (the 'uniform' overlap average) the ring of every neighbour enters the object
    each pattern sees at the same weight as that pattern's own centre: at gridsize 2 the true
    centres with a flat ring score 220x the loss of the true patches, and the readout's amplitude
    error is 6x the true patches'; the ring decides what the loss sees. Weighted, a neighbour's ring
    counts only where no centre covers the pixel (docs/resolution.md).
    """
    return (RING_WEIGHT + (1.0 - RING_WEIGHT) * (1.0 - border_mask(N))).astype(np.float32)


def prepare_probe(probe: np.ndarray, N: int, probe_mask: bool) -> np.ndarray:
    """Check the probe ((N, N) complex, finite) and apply the optional disk mask (radius N/4).

    Returns (N, N) complex64. The probe is otherwise used as given by the data, because the
    dataset intensity scale was computed with it.
    """
    probe = np.asarray(probe)
    if probe.shape != (N, N):
        raise ValueError(f"probe must be (N, N) = ({N}, {N}); got shape {probe.shape}")
    if not np.iscomplexobj(probe):
        raise ValueError(f"probe must be complex (amplitude and phase); got dtype {probe.dtype}")
    if not np.all(np.isfinite(probe)):
        raise ValueError("probe contains NaN or Inf")
    if probe_mask:
        probe = probe * probe_disk(N)
    return probe.astype(np.complex64)


def probe_disk(N: int) -> np.ndarray:
    """(N, N) float32 of ``ModelSpec.probe_mask``: 1 within radius N/4 of pixel (N/2, N/2), 0 beyond."""
    grid = np.arange(N) - N / 2
    return (np.hypot(grid[None, :], grid[:, None]) < N / 4).astype(np.float32)


def probe_field_start(probe: np.ndarray, learning_rate_factor: float) -> np.ndarray:
    """The trainable field of a refined probe (``ModelSpec.refine_probe``) at the start: (N, N, 2) float32,
    [real, imag] of P / (k * max|P|) for the prepared probe P and k = ``probe_learning_rate_factor``.

    The model's probe is :func:`probe_from_field`, the field rescaled to the given probe's total energy, so
    the field's norm is free: the field's pixels start at most 1/k, an Adam step moves one by about the
    learning rate, hence the probe by about learning_rate * k of its peak.
    """
    peak = float(np.max(np.abs(probe)))
    if peak == 0:
        raise ValueError("refine_probe: the probe is zero everywhere; there is nothing to refine")
    scaled = np.asarray(probe, np.complex128) / (learning_rate_factor * peak)
    return np.stack([scaled.real, scaled.imag], axis=-1).astype(np.float32)


def probe_from_field(field: np.ndarray, energy: float, support: np.ndarray | None = None) -> np.ndarray:
    """(N, N) complex64 probe of a trainable field (N, N, 2) [real, imag], times ``support`` (the probe_mask
    disk or None), rescaled to total energy sum |P|**2 = ``energy`` (the given probe's): the oracle of both
    backends' ``probe`` (docs/design.md §4: the energy is fixed, so the intensity scale cannot trade off
    against the probe's norm)."""
    field = np.asarray(field, np.float64)
    probe = field[..., 0] + 1j * field[..., 1]
    if support is not None:
        probe = probe * support
    return (probe * np.sqrt(energy / np.sum(np.abs(probe) ** 2))).astype(np.complex64)

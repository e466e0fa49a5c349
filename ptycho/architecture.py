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

from ptycho.data import SUPPORTED_N

OUTER_CHANNELS = 4  # decoder channels reserved for the outer-ring branch (reference c_outer)
BOTTLENECK_PX = 8
KERNEL_PX = 3
DECODERS = ("amplitude_decoder", "phase_decoder")


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


def initial_weights(N: int, gridsize: int, n_filters_scale: int, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """{layer path: {'kernel': (3, 3, in, out) float32 HWIO, 'bias': (out,) float32}}.

    Kernels are Glorot uniform, U(-l, l) with l = sqrt(6 / (9 * (in + out))), Keras' default
    for Conv2D; biases are zero. One numpy generator seeded with ``seed`` draws the kernels in
    forward order, so the numbers depend on the seed and the architecture alone, never on the
    backend.
    """
    generator = np.random.default_rng(seed)
    weights = {}
    for path, (fan_in, filters) in conv_layers(N, gridsize, n_filters_scale).items():
        limit = math.sqrt(6.0 / (KERNEL_PX * KERNEL_PX * (fan_in + filters)))
        kernel = generator.uniform(-limit, limit, (KERNEL_PX, KERNEL_PX, fan_in, filters))
        weights[path] = {"kernel": kernel.astype(np.float32), "bias": np.zeros(filters, np.float32)}
    return weights


def border_mask(N: int) -> np.ndarray:
    """(N, N) float32: 0 inside the central N/2 x N/2 square, 1 outside (the outer ring)."""
    mask = np.ones((N, N), np.float32)
    mask[N // 4: N - N // 4, N // 4: N - N // 4] = 0.0
    return mask


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
        grid = np.arange(N) - N / 2
        probe = probe * (np.hypot(grid[None, :], grid[:, None]) < N / 4)
    return probe.astype(np.complex64)

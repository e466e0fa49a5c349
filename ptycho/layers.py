"""Convolutional layers of the PINN: encoder, amplitude/phase decoders and their ladders.

The layer structure follows the reference PtychoPINN (REFERENCE.md, "Architecture"):

* encoder: blocks of [3x3 conv + ReLU, 3x3 conv + ReLU, 2x2 max-pool];
* decoder: blocks of [3x3 conv + ReLU, 3x3 conv + ReLU, 2x2 nearest upsampling] up to
  (N/2, N/2, 32s), then :class:`DecoderHead` (the reference's "decoder_last").

Filter ladders (s = n_filters_scale). As in the reference, the encoder always pools down to
an 8 x 8 bottleneck (N/8 at N = 64) and the decoder always ends at N/2 with 32s channels, so
larger N gets one more block per doubling, each with half the filters of the next:

    N     encoder filters              decoder filters             outer-ring up-block
    64    32s 64s 128s                 64s 32s                     32s
    128   16s 32s 64s 128s             128s 64s 32s                16s
    256   8s 16s 32s 64s 128s          256s 128s 64s 32s           8s

Every layer has a stable name, so each weight has a stable path for a port to map one to
one, e.g. ``ptycho_pinn/encoder/block0/conv0/kernel`` or
``ptycho_pinn/phase_decoder/head/outer_conv/bias``. Kernels are (3, 3, in, out), 'same'
padding, Glorot-uniform initialised from a per-layer seed. Layers build their weights from
shapes alone (``build``), without a forward pass.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from ptycho.data import SUPPORTED_N

OUTER_CHANNELS = 4  # decoder channels reserved for the outer-ring branch (reference c_outer)
BOTTLENECK_PX = 8


def filter_ladder(N: int, n_filters_scale: int) -> dict[str, tuple[int, ...] | int]:
    """Filters per block for patch side N: {'encoder': (...), 'decoder': (...), 'outer': int}."""
    if N not in SUPPORTED_N:
        raise ValueError(f"filter_ladder: N must be one of {SUPPORTED_N}; got {N}")
    doublings = int(round(math.log2(N // BOTTLENECK_PX)))  # 3, 4, 5 pooling blocks
    s = n_filters_scale
    encoder = tuple(128 * s // 2 ** (doublings - 1 - k) for k in range(doublings))
    decoder = tuple(32 * s * 2 ** (doublings - 2 - k) for k in range(doublings - 1))
    return {"encoder": encoder, "decoder": decoder, "outer": 32 * s * 64 // N}


def _conv(filters, name, seed, activation=None):
    return keras.layers.Conv2D(
        filters, 3, padding="same", activation=activation, name=name,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
    )


class _TwoConvBlock(keras.layers.Layer):
    """Two 3x3 convs + ReLU, then a resampling layer; weights are built from shapes alone."""

    def __init__(self, filters: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv0 = _conv(filters, "conv0", seed, "relu")
        self.conv1 = _conv(filters, "conv1", seed + 1, "relu")

    def build(self, input_shape):
        self.conv0.build(input_shape)
        self.conv1.build((*input_shape[:-1], self.filters))


class ConvPoolBlock(_TwoConvBlock):
    """[3x3 conv + ReLU, 3x3 conv + ReLU, 2x2 max-pool]: (B, H, W, c) -> (B, H/2, W/2, filters)."""

    def __init__(self, filters: int, seed: int, **kwargs):
        super().__init__(filters, seed, **kwargs)
        self.pool = keras.layers.MaxPooling2D(2, name="pool")

    def call(self, x):
        return self.pool(self.conv1(self.conv0(x)))

    def output_shape_for(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, height // 2, width // 2, self.filters)


class ConvUpBlock(_TwoConvBlock):
    """[3x3 conv + ReLU, 3x3 conv + ReLU, 2x nearest upsampling]: (B, H, W, c) -> (B, 2H, 2W, filters)."""

    def __init__(self, filters: int, seed: int, **kwargs):
        super().__init__(filters, seed, **kwargs)
        self.upsample = keras.layers.UpSampling2D(2, name="upsample")

    def call(self, x):
        return self.upsample(self.conv1(self.conv0(x)))

    def output_shape_for(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, 2 * height, 2 * width, self.filters)


def _build_chain(blocks, input_shape):
    """Build blocks in sequence from shapes; returns the last output shape."""
    for block in blocks:
        block.build(input_shape)
        input_shape = block.output_shape_for(input_shape)
    return input_shape


class Encoder(keras.layers.Layer):
    """(B, N, N, C) float32 -> (B, 8, 8, filters[-1]) float32."""

    def __init__(self, filters: tuple[int, ...], seed: int, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [
            ConvPoolBlock(f, seed + 2 * k, name=f"block{k}") for k, f in enumerate(filters)
        ]

    def build(self, input_shape):
        _build_chain(self.blocks, input_shape)

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class DecoderHead(keras.layers.Layer):
    """The reference's decoder_last: (B, N/2, N/2, 32s) -> (B, N, N, C) float32.

    The first 32s - 4 channels give the centre: 3x3 conv to C channels, ``activation``,
    zero-padded by N/4 on each side. The last 4 channels give the outer ring: up-block
    (``outer_filters``) to N x N, 3x3 conv to C channels, swish, multiplied by a border
    mask (1 outside the central N/2 x N/2 square, 0 inside) and added to the centre.
    """

    def __init__(self, N: int, channels: int, outer_filters: int, activation, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.N = N
        self.activation = activation
        self.centre_conv = _conv(channels, "centre_conv", seed)
        self.outer_block = ConvUpBlock(outer_filters, seed + 1, name="outer_block")
        self.outer_conv = _conv(channels, "outer_conv", seed + 3)
        self.border_mask = tf.constant(border_mask(N)[None, :, :, None])

    def build(self, input_shape):
        *leading, channels = input_shape
        self.centre_conv.build((*leading, channels - OUTER_CHANNELS))
        self.outer_block.build((*leading, OUTER_CHANNELS))
        self.outer_conv.build(self.outer_block.output_shape_for((*leading, OUTER_CHANNELS)))

    def call(self, x):
        quarter = self.N // 4
        centre = self.activation(self.centre_conv(x[..., :-OUTER_CHANNELS]))
        centre = tf.pad(centre, [[0, 0], [quarter, quarter], [quarter, quarter], [0, 0]])
        outer = keras.activations.silu(self.outer_conv(self.outer_block(x[..., -OUTER_CHANNELS:])))
        return centre + outer * self.border_mask


class Decoder(keras.layers.Layer):
    """(B, 8, 8, c) -> (B, N, N, C): up-blocks to (N/2, N/2, 32s), then :class:`DecoderHead`."""

    def __init__(self, N, channels, filters, outer_filters, activation, seed, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [
            ConvUpBlock(f, seed + 2 * k, name=f"block{k}") for k, f in enumerate(filters)
        ]
        self.head = DecoderHead(
            N, channels, outer_filters, activation, seed + 2 * len(filters), name="head"
        )

    def build(self, input_shape):
        self.head.build(_build_chain(self.blocks, input_shape))

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def amplitude_activation(x):
    """Amplitude head activation: sigmoid, values in (0, 1)."""
    return tf.sigmoid(x)


def phase_activation(x):
    """Phase head activation: pi * tanh, values in (-pi, pi) radians."""
    return math.pi * tf.tanh(x)


def border_mask(N: int) -> np.ndarray:
    """(N, N) float32: 0 inside the central N/2 x N/2 square, 1 outside."""
    mask = np.ones((N, N), np.float32)
    mask[N // 4: N - N // 4, N // 4: N - N // 4] = 0.0
    return mask

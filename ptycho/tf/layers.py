"""Convolutional layers of the PINN: encoder, amplitude/phase decoders and their ladders.

The layer structure follows the reference PtychoPINN (REFERENCE.md, "Architecture"):

* encoder: blocks of [3x3 conv + ReLU, 3x3 conv + ReLU, 2x2 max-pool];
* decoder: blocks of [3x3 conv + ReLU, 3x3 conv + ReLU, 2x2 nearest upsampling] up to
  (N/2, N/2, 32s), then :class:`DecoderHead` (the reference's "decoder_last").

The filter ladders and the initial weights are in :mod:`ptycho.architecture`.

Every layer has a stable name, so each weight has a stable path for a port to map one to
one, e.g. ``ptycho_pinn/encoder/block0/conv0/kernel`` or
``ptycho_pinn/phase_decoder/head/outer_conv/bias``. Kernels are (3, 3, in, out), 'same'
padding. Layers build their weights from shapes alone (``build``), without a forward pass;
``ptycho.tf.model.build_model`` then sets them to ``architecture.initial_weights``.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf

from ptycho.architecture import OUTER_CHANNELS, border_mask


def _conv(filters, name, activation=None):
    # Zeros only until build_model loads architecture.initial_weights (shared with PyTorch).
    return keras.layers.Conv2D(filters, 3, padding="same", activation=activation, name=name,
                               kernel_initializer="zeros")


class _TwoConvBlock(keras.layers.Layer):
    """Two 3x3 convs + ReLU, then a resampling layer; weights are built from shapes alone."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.conv0 = _conv(filters, "conv0", "relu")
        self.conv1 = _conv(filters, "conv1", "relu")

    def build(self, input_shape):
        self.conv0.build(input_shape)
        self.conv1.build((*input_shape[:-1], self.filters))


class ConvPoolBlock(_TwoConvBlock):
    """[3x3 conv + ReLU, 3x3 conv + ReLU, 2x2 max-pool]: (B, H, W, c) -> (B, H/2, W/2, filters)."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(filters, **kwargs)
        self.pool = keras.layers.MaxPooling2D(2, name="pool")

    def call(self, x):
        return self.pool(self.conv1(self.conv0(x)))

    def output_shape_for(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, height // 2, width // 2, self.filters)


class ConvUpBlock(_TwoConvBlock):
    """[3x3 conv + ReLU, 3x3 conv + ReLU, 2x nearest upsampling]: (B, H, W, c) -> (B, 2H, 2W, filters)."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(filters, **kwargs)
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

    def __init__(self, filters: tuple[int, ...], **kwargs):
        super().__init__(**kwargs)
        self.blocks = [ConvPoolBlock(f, name=f"block{k}") for k, f in enumerate(filters)]

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

    def __init__(self, N: int, channels: int, outer_filters: int, activation, **kwargs):
        super().__init__(**kwargs)
        self.N = N
        self.activation = activation
        self.centre_conv = _conv(channels, "centre_conv")
        self.outer_block = ConvUpBlock(outer_filters, name="outer_block")
        self.outer_conv = _conv(channels, "outer_conv")
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

    def __init__(self, N, channels, filters, outer_filters, activation, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [ConvUpBlock(f, name=f"block{k}") for k, f in enumerate(filters)]
        self.head = DecoderHead(N, channels, outer_filters, activation, name="head")

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

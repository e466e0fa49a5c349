"""The PINN in PyTorch: the same layers, in the same order, as ``ptycho.tf.model``/``ptycho.tf.layers``.

``build_model(spec, probe, device)`` takes a ``ptycho.spec.ModelSpec`` (shared with the TensorFlow
side), the probe and where to compute (``ptycho.torch.device``; the CPU by default).
Forward pass, inputs ``diffraction`` (B, N, N, C) float32 = s * A_file and
``coords_relative`` (B, 1, 2, C) float32 pixels, channels last as in TensorFlow:

    x      = X / exp(log_scale) / r               log_scale: Parameter, init log(s);
                                                  r = spec.encoder_input_rms (unit-RMS input)
    amp    = f * amplitude_decoder(encoder(x))    (B, N, N, C), sigmoid centre; f = spec.amplitude_scale
    phase  = phase_decoder(encoder(x))            (B, N, N, C) rad, pi*tanh centre
    object = amp * exp(i phase)                   (B, N, N, C) complex64    -> "object"
    if object_big and C > 1:
        object = overlap_patches(object, coords_relative, overlap_weights(N))   spec.overlap 'weighted'
        or, 'uniform': canvas = reassemble_patches(object, coords_relative, canvas_size)  (B, M, M, 1)
                       object = extract_patches_at_offsets(canvas, coords_relative, N)
    A_pred = pad_and_diffract(object * probe) * exp(log_scale)            -> "amplitude"
    I_pred = A_pred**2                                                     -> "intensity"

The probe is the given one, a buffer, or with ``spec.refine_probe`` a Parameter ``probe_field`` (N, N, 2)
[real, imag] that starts at the given probe and is rescaled to its total energy at every call
(``architecture.probe_from_field``), as on the TensorFlow side.

Convolutions run channels first (B, c, H, W). Modules are named as the Keras layers are, so
a torch module path is the Keras layer path with '.' for '/' (``encoder.block0.conv0`` <->
``ptycho_pinn/encoder/block0/conv0``); :mod:`ptycho.torch.weights` maps weights by it.
Weights start from ``ptycho.architecture.initial_weights`` of the spec, the very numbers the
Keras model starts from, so both backends begin a run of the same spec identically.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ptycho import architecture
from ptycho.architecture import OUTER_CHANNELS, border_mask, prepare_probe
from ptycho.spec import ModelSpec
from ptycho.torch import ops, reassembly
from ptycho.torch.device import resolve_device

OUTPUT_KEYS = ("object", "amplitude", "intensity")


def conv3x3(in_channels: int, filters: int) -> nn.Conv2d:
    """3x3 convolution with Keras' 'same' padding (1 pixel each side at stride 1)."""
    return nn.Conv2d(in_channels, filters, 3, padding=1)


class ConvPoolBlock(nn.Module):
    """[3x3 conv + ReLU, 3x3 conv + ReLU, 2x2 max-pool]: (B, c, H, W) -> (B, filters, H/2, W/2)."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        self.conv0 = conv3x3(in_channels, filters)
        self.conv1 = conv3x3(filters, filters)

    def forward(self, x):
        return F.max_pool2d(F.relu(self.conv1(F.relu(self.conv0(x)))), 2)


class ConvUpBlock(nn.Module):
    """[3x3 conv + ReLU, 3x3 conv + ReLU, 2x nearest upsampling]: (B, c, H, W) -> (B, filters, 2H, 2W)."""

    def __init__(self, in_channels: int, filters: int):
        super().__init__()
        self.conv0 = conv3x3(in_channels, filters)
        self.conv1 = conv3x3(filters, filters)

    def forward(self, x):
        return F.interpolate(F.relu(self.conv1(F.relu(self.conv0(x)))), scale_factor=2,
                             mode="nearest")


class Encoder(nn.Module):
    """(B, C, N, N) -> (B, filters[-1], 8, 8); children block0, block1, ..."""

    def __init__(self, channels: int, filters: tuple[int, ...]):
        super().__init__()
        widths = (channels, *filters)
        for k, f in enumerate(filters):
            self.add_module(f"block{k}", ConvPoolBlock(widths[k], f))

    def forward(self, x):
        for block in self.children():
            x = block(x)
        return x


class DecoderHead(nn.Module):
    """(B, 32s, N/2, N/2) -> (B, C, N, N): activated centre padded by N/4, plus the outer ring.

    The first 32s - 4 channels give the centre (3x3 conv to C channels, ``activation``);
    the last 4 the outer ring (up-block, 3x3 conv, swish, times :func:`border_mask`).
    """

    def __init__(self, N, in_channels, channels, outer_filters, activation):
        super().__init__()
        self.quarter = N // 4
        self.activation = activation
        self.centre_conv = conv3x3(in_channels - OUTER_CHANNELS, channels)
        self.outer_block = ConvUpBlock(OUTER_CHANNELS, outer_filters)
        self.outer_conv = conv3x3(outer_filters, channels)
        self.register_buffer("border_mask", torch.from_numpy(border_mask(N)), persistent=False)

    def forward(self, x):
        q = self.quarter
        centre = F.pad(self.activation(self.centre_conv(x[:, :-OUTER_CHANNELS])), (q, q, q, q))
        outer = F.silu(self.outer_conv(self.outer_block(x[:, -OUTER_CHANNELS:])))
        return centre + outer * self.border_mask


class Decoder(nn.Module):
    """(B, c, 8, 8) -> (B, C, N, N): up-blocks block0, block1, ... to (32s, N/2, N/2), then
    :class:`DecoderHead` ``head`` (registered last, so children() is the forward order)."""

    def __init__(self, N, in_channels, channels, filters, outer_filters, activation):
        super().__init__()
        widths = (in_channels, *filters)
        for k, f in enumerate(filters):
            self.add_module(f"block{k}", ConvUpBlock(widths[k], f))
        self.head = DecoderHead(N, filters[-1], channels, outer_filters, activation)

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


def amplitude_activation(x):
    """Sigmoid, values in (0, 1)."""
    return torch.sigmoid(x)


def phase_activation(x):
    """pi * tanh, values in (-pi, pi) radians."""
    return math.pi * torch.tanh(x)


class PtychoPINN(nn.Module):
    """The PINN; ``forward(diffraction, coords_relative)`` -> dict of OUTPUT_KEYS (module docstring)."""

    def __init__(self, spec, probe):
        super().__init__()
        self.spec = spec
        self.channels = spec.gridsize**2
        self.reassembles = bool(spec.object_big) and self.channels > 1
        if self.reassembles and spec.canvas_size is None:
            raise ValueError("ModelSpec.canvas_size is required when object_big=True and "
                             "gridsize > 1; compute it from the groups' offsets")
        probe = prepare_probe(probe, spec.N, spec.probe_mask)
        self.probe_energy = float(np.sum(np.abs(probe.astype(np.complex128)) ** 2))
        self.register_buffer("fixed_probe", None if spec.refine_probe else torch.from_numpy(probe)[None, :, :, None],
                             persistent=False)
        field = architecture.probe_field_start(probe, spec.probe_learning_rate_factor) if spec.refine_probe else None
        self.probe_field = None if field is None else nn.Parameter(torch.from_numpy(field))
        self.register_buffer("probe_support", torch.from_numpy(architecture.probe_disk(spec.N))
                             if spec.probe_mask and spec.refine_probe else None, persistent=False)
        weights = architecture.overlap_weights(spec.N) if spec.overlap == "weighted" else None
        self.register_buffer("overlap_weights", None if weights is None else torch.from_numpy(weights),
                             persistent=False)
        log_scale = torch.tensor(math.log(spec.intensity_scale), dtype=torch.float32)
        self.log_scale = nn.Parameter(log_scale, requires_grad=spec.intensity_scale_trainable)
        ladder = architecture.filter_ladder(spec.N, spec.n_filters_scale)
        self.encoder = Encoder(self.channels, ladder["encoder"])
        bottleneck = ladder["encoder"][-1]
        self.amplitude_decoder = Decoder(spec.N, bottleneck, self.channels, ladder["decoder"],
                                         ladder["outer"], amplitude_activation)
        self.phase_decoder = Decoder(spec.N, bottleneck, self.channels, ladder["decoder"],
                                     ladder["outer"], phase_activation)
        self.set_initial_weights()

    def set_initial_weights(self) -> None:
        """Set every convolution to ``architecture.initial_weights`` of the spec (HWIO kernels
        transposed to torch's OIHW), the numbers the Keras model starts from too."""
        spec = self.spec
        initial = architecture.initial_weights(spec.N, spec.gridsize, spec.n_filters_scale, spec.seed,
                                               spec.initial_amplitude)
        with torch.no_grad():
            for path, conv in self.convolutions().items():
                layer = initial[path.replace(".", "/")]
                conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(layer["kernel"].transpose(3, 2, 0, 1))))
                conv.bias.copy_(torch.from_numpy(layer["bias"]))

    def convolutions(self) -> dict[str, nn.Conv2d]:
        """Every convolution by its module path (``encoder.block0.conv0`` ...), in forward order."""
        return {name: m for name, m in self.named_modules() if isinstance(m, nn.Conv2d)}

    def forward(self, diffraction, coords_relative):
        """diffraction (B, N, N, C) float32; coords_relative (B, 1, 2, C) pixels."""
        obj = self.object_patches(diffraction)
        illuminated = self.illuminated_patches(obj, coords_relative) * self.probe
        predicted = ops.pad_and_diffract(illuminated) * torch.exp(self.log_scale)
        return {"object": obj, "amplitude": predicted, "intensity": torch.square(predicted)}

    @property
    def probe(self):
        """The probe the forward model uses, (1, N, N, 1) complex64: the given one, or the refined one at
        the given one's total energy (``architecture.probe_from_field``)."""
        if self.probe_field is None:
            return self.fixed_probe
        field = self.probe_field if self.probe_support is None else self.probe_field * self.probe_support[..., None]
        real, imag = field[..., 0], field[..., 1]
        norm = torch.sqrt(self.probe_energy / torch.sum(torch.square(real) + torch.square(imag)))
        return torch.complex(real * norm, imag * norm)[None, :, :, None]

    @property
    def probe_array(self) -> np.ndarray:
        """The probe the forward model uses now, (N, N) complex64 (the refined one with ``refine_probe``)."""
        with torch.no_grad():
            return self.probe[0, :, :, 0].cpu().numpy().astype(np.complex64)

    def object_patches(self, diffraction):
        """Decoded object patches amp * exp(i phase): (B, N, N, C) complex64 from X (B, N, N, C) float32
        (divided by the intensity scale and the encoder's input RMS first)."""
        scaled = diffraction / (torch.exp(self.log_scale) * self.spec.encoder_input_rms)
        features = self.encoder(scaled.permute(0, 3, 1, 2))
        amplitude = self.amplitude_decoder(features).permute(0, 2, 3, 1) * self.spec.amplitude_scale
        phase = self.phase_decoder(features).permute(0, 2, 3, 1)
        return torch.complex(amplitude * torch.cos(phase), amplitude * torch.sin(phase))

    def illuminated_patches(self, obj, coords_relative):
        """Object patches as the probe sees them, (B, N, N, C) complex64, each the group's overlap
        average in its position's frame when object_big (``ModelSpec.overlap``)."""
        if not self.reassembles:
            return obj
        if self.overlap_weights is not None:
            return reassembly.overlap_patches(obj, coords_relative, self.overlap_weights)
        canvas = self.object_canvas(obj, coords_relative)
        return reassembly.extract_patches_at_offsets(canvas, coords_relative, self.spec.N)

    def object_canvas(self, obj, coords_relative):
        """(B, M, M, 1) complex64: each group's C patches at their offsets, overlap-averaged with the
        weights of ``ModelSpec.overlap``."""
        size = self.spec.canvas_size or self.spec.N
        return reassembly.reassemble_patches(obj, coords_relative, size, weights=self.overlap_weights)

    @property
    def device(self) -> torch.device:
        """Where the model's parameters and buffers are (``build_model``'s ``device``)."""
        return self.log_scale.device

    @property
    def intensity_scale(self) -> float:
        """Current exp(log_scale)."""
        return float(torch.exp(self.log_scale.detach()))


def build_model(spec: ModelSpec, probe, device: str | None = None) -> PtychoPINN:
    """A :class:`PtychoPINN` for ``spec`` and ``probe`` (N, N) on ``device``
    (``ptycho.torch.device.resolve_device``; None: the CPU)."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_model: spec must be a ptycho.spec.ModelSpec; got {type(spec).__name__}")
    return PtychoPINN(spec, probe).to(resolve_device(device))


WEIGHTS_FILE = "model.pt"


def save_weights(model: PtychoPINN, run_dir: str | os.PathLike) -> Path:
    """Write the state dict (weights and log_scale, as CPU tensors whatever the model's device, so
    the file loads anywhere) to ``run_dir/model.pt``; returns the path."""
    path = Path(run_dir) / WEIGHTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({name: value.cpu() for name, value in model.state_dict().items()}, path)
    return path


def load_model(spec, probe, weights_path: str | os.PathLike, device: str | None = None) -> PtychoPINN:
    """Rebuild the model from ``spec`` and ``probe`` on ``device`` and load weights saved by
    :func:`save_weights`."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"load_model: no weights file at {path}")
    model = build_model(spec, probe, device)
    model.load_state_dict(torch.load(path, map_location=model.device, weights_only=True))
    return model

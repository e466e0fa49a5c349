"""The physics-informed network (PtychoPINN): encoder-decoder plus a differentiable forward model.

``build_model(spec, probe)`` returns a :class:`PtychoPINN` (a ``keras.Model``) from explicit
arguments only; no global state, so models of different gridsize coexist in one process.

Forward pass, for inputs ``diffraction`` X (B, N, N, C) float32 = s * A_file and
``coords_relative`` (B, 1, 2, C) float32 pixels (CONTRACTS "Scaling", DESIGN §7):

    x      = X / exp(log_scale)                   log_scale: tracked weight, init log(s)
    amp    = amplitude_decoder(encoder(x))        (B, N, N, C), sigmoid centre
    phase  = phase_decoder(encoder(x))            (B, N, N, C) rad, pi*tanh centre
    object = amp * exp(i phase)                   (B, N, N, C) complex64     -> output "object"
    if object_big and C > 1:                      (identity for a single patch, so skipped)
        canvas = reassemble_patches(object, coords_relative, canvas_size)   (B, M, M, 1)
        object = extract_patches_at_offsets(canvas, coords_relative, N)
    A_pred = pad_and_diffract(object * probe) * exp(log_scale)             -> output "amplitude"
    I_pred = A_pred**2                            photons                   -> output "intensity"

The training step is the model's own (``train_step``/``test_step``); the loss is the callable
given to :meth:`PtychoPINN.compile` (:class:`ptycho.training.PinnLoss`), which returns a dict of
named terms, each tracked as a metric of the same name. ``model.predict`` returns only
{"object": ...}: reading out the object needs the encoder and decoders, not the forward model.

Weights are created from the spec alone (:meth:`PtychoPINN.build`, no forward pass) and have
stable paths such as ``ptycho_pinn/encoder/block0/conv0/kernel`` (ptycho.layers).
"""
from __future__ import annotations

import gc
import math
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ptycho import architecture, layers, tf_helper
from ptycho.architecture import prepare_probe
from ptycho.data import SUPPORTED_N

LOSS_TERMS = ("loss", "poisson_nll", "amplitude_mae", "realspace_mse")
WEIGHTS_FILE = "model.weights.h5"


@dataclass(frozen=True)
class ModelSpec:
    """Settings of the network; arrays (the probe) are passed separately.

    N: patch side (64, 128, 256). gridsize: g, C = g**2 channels. n_filters_scale: s of the
    filter ladder (ptycho.layers). object_big: reassemble the C patches on a canvas and
    re-extract them inside the forward path. canvas_size: side M (pixels) of that canvas;
    required when object_big and C > 1, computed from the groups' offsets by
    :func:`canvas_size_for` (never a fixed guess). probe_mask: multiply the probe by a disk
    of radius N/4. intensity_scale: s, initial exp(log_scale). intensity_scale_trainable:
    whether log_scale trains. use_xla_translate: translation path (None: tf_helper decides;
    the USE_XLA_TRANSLATE environment variable overrides). nll_weight, mae_weight,
    realspace_weight: loss weights (MAE and real-space need ground truth). learning_rate:
    Adam's. seed: of the initial weights (``architecture.initial_weights``, the same numbers
    for both backends).
    """

    N: int = 64
    gridsize: int = 2
    n_filters_scale: int = 2
    object_big: bool = True
    probe_mask: bool = False
    intensity_scale: float = 988.2
    intensity_scale_trainable: bool = True
    use_xla_translate: bool | None = None
    nll_weight: float = 1.0
    mae_weight: float = 0.0
    realspace_weight: float = 0.0
    learning_rate: float = 1e-3
    canvas_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _require(_is_int(self.N) and self.N in SUPPORTED_N, "N", f"one of {SUPPORTED_N}", self.N)
        for name in ("gridsize", "n_filters_scale"):
            _require(_is_int(getattr(self, name)) and getattr(self, name) >= 1, name, "an integer >= 1",
                     getattr(self, name))
        _require(_is_int(self.seed) and self.seed >= 0, "seed", "an integer >= 0", self.seed)
        for name in ("intensity_scale", "learning_rate"):
            value = getattr(self, name)
            _require(_is_number(value) and value > 0, name, "a finite number > 0", value)
        for name in ("nll_weight", "mae_weight", "realspace_weight"):
            value = getattr(self, name)
            _require(_is_number(value) and value >= 0, name, "a finite number >= 0", value)
        _require(self.nll_weight + self.mae_weight + self.realspace_weight > 0, "nll_weight",
                 "at least one loss weight > 0", self.nll_weight)
        for name in ("object_big", "probe_mask", "intensity_scale_trainable"):
            _require(isinstance(getattr(self, name), bool), name, "a bool", getattr(self, name))
        _require(self.use_xla_translate is None or isinstance(self.use_xla_translate, bool),
                 "use_xla_translate", "None or a bool", self.use_xla_translate)
        _require(self.canvas_size is None or (_is_int(self.canvas_size) and self.canvas_size >= self.N),
                 "canvas_size", f"None or an integer >= N={self.N}", self.canvas_size)

    @property
    def channels(self) -> int:
        """C = gridsize**2."""
        return self.gridsize**2

    @property
    def reassembles(self) -> bool:
        """True when the forward path reassembles patches on a canvas (object_big and C > 1)."""
        return self.object_big and self.channels > 1


def canvas_size_for(N: int, *coords_relative: np.ndarray) -> int:
    """Canvas side M holding every group's patches: tf_helper.required_canvas_size of all offsets.

    coords_relative: one or more (B, 1, 2, C) arrays (pixels), e.g. the train and test groups.
    """
    offsets = [np.transpose(np.asarray(c, np.float64)[:, 0], (0, 2, 1)).reshape(-1, 2) for c in coords_relative]
    return tf_helper.required_canvas_size(N, np.concatenate(offsets))


def check_offsets_fit(spec: ModelSpec, coords_relative: np.ndarray) -> None:
    """Raise ValueError when a group's offsets (B, 1, 2, C) would put a patch off the canvas."""
    if not spec.reassembles:
        return
    needed = canvas_size_for(spec.N, coords_relative)
    if needed > spec.canvas_size:
        raise ValueError(
            f"ModelSpec.canvas_size={spec.canvas_size} is too small for these groups: their offsets "
            f"need {needed} px (canvas_size_for(N, coords_relative)); patches would fall off the canvas"
        )


class PtychoPINN(keras.Model):
    """The PINN; call it on {'diffraction', 'coords_relative'} (module docstring for shapes).

    Layers in forward order: ``log_scale`` (weight), ``encoder``, ``amplitude_decoder``,
    ``phase_decoder``; the probe is a constant (1, N, N, 1) complex64.
    """

    def __init__(self, spec: ModelSpec, probe: np.ndarray):
        super().__init__(name="ptycho_pinn")
        if spec.reassembles and spec.canvas_size is None:
            raise ValueError(
                "ModelSpec.canvas_size is required when object_big=True and gridsize > 1; "
                "compute it from the groups with ptycho.model.canvas_size_for(N, coords_relative)"
            )
        self.spec = spec
        self.use_xla = tf_helper.should_use_xla(spec.use_xla_translate)
        self.probe = tf.constant(prepare_probe(probe, spec.N, spec.probe_mask)[None, :, :, None])
        self.log_scale = self.add_weight(
            shape=(), name="log_scale", trainable=spec.intensity_scale_trainable,
            initializer=keras.initializers.Constant(math.log(spec.intensity_scale)),
        )
        ladder = architecture.filter_ladder(spec.N, spec.n_filters_scale)
        self.encoder = layers.Encoder(ladder["encoder"], name="encoder")
        self.amplitude_decoder = layers.Decoder(
            spec.N, spec.channels, ladder["decoder"], ladder["outer"], layers.amplitude_activation,
            name="amplitude_decoder",
        )
        self.phase_decoder = layers.Decoder(
            spec.N, spec.channels, ladder["decoder"], ladder["outer"], layers.phase_activation,
            name="phase_decoder",
        )
        self.pinn_loss = None
        # Metric state must exist before the model is built; compile picks the active ones.
        self._all_trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_TERMS}
        self._active_terms = ()

    def build(self, input_shape=None):
        """Create every weight from the spec alone (no forward pass); ``input_shape`` is ignored."""
        spec = self.spec
        self.encoder.build((None, spec.N, spec.N, spec.channels))
        bottleneck = (None, architecture.BOTTLENECK_PX, architecture.BOTTLENECK_PX,
                      self.encoder.blocks[-1].filters)
        self.amplitude_decoder.build(bottleneck)
        self.phase_decoder.build(bottleneck)

    def call(self, inputs, training=False):
        scale = tf.exp(self.log_scale)
        obj = self.object_patches(inputs["diffraction"])
        illuminated = self.illuminated_patches(obj, inputs["coords_relative"]) * self.probe
        predicted = tf_helper.pad_and_diffract(illuminated) * scale
        return {"object": obj, "amplitude": predicted, "intensity": tf.square(predicted)}

    def object_patches(self, diffraction):
        """Decoded object patches amp * exp(i phase): (B, N, N, C) complex64 from X (B, N, N, C)."""
        features = self.encoder(diffraction / tf.exp(self.log_scale))
        amplitude = self.amplitude_decoder(features)
        phase = self.phase_decoder(features)
        return tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))

    def illuminated_patches(self, obj, coords):
        """Object patches as the probe sees them: (B, N, N, C) complex64, via the canvas when object_big."""
        if not self.spec.reassembles:
            return obj
        canvas = self.object_canvas(obj, coords)
        return tf_helper.extract_patches_at_offsets(canvas, coords, self.spec.N, use_xla=self.use_xla)

    def object_canvas(self, obj, coords):
        """(B, M, M, 1) complex64: each group's C patches shifted to their offsets, overlap-averaged."""
        size = self.spec.canvas_size or self.spec.N
        return tf_helper.reassemble_patches(obj, coords, size, use_xla=self.use_xla)

    def set_initial_weights(self) -> None:
        """Set every convolution to ``architecture.initial_weights`` of the spec (the numbers the
        PyTorch port starts from too) and log_scale to log(intensity_scale)."""
        spec = self.spec
        initial = architecture.initial_weights(spec.N, spec.gridsize, spec.n_filters_scale, spec.seed)
        for variable in self.weights:
            *layer, name = variable.path.split("/")[1:]
            if layer:
                variable.assign(initial["/".join(layer)][name])
        self.log_scale.assign(math.log(spec.intensity_scale))

    def release_traced_functions(self) -> None:
        """Drop the traced train/test/predict functions (rebuilt on next use) and free their graphs."""
        self.train_function = self.test_function = self.predict_function = None
        gc.collect()  # traced functions sit in reference cycles

    @property
    def intensity_scale(self) -> float:
        """Current exp(log_scale)."""
        return float(np.exp(self.log_scale.numpy()))

    def compile(self, optimizer, loss, jit_compile=False, steps_per_execution=1):
        """Attach the optimizer and the loss callable ``loss(targets, outputs) -> {name: scalar}``.

        ``loss.term_names`` lists the names it returns ('loss' first); each is tracked as a
        per-epoch metric of the same name (validation: 'val_' + name). ``jit_compile`` needs
        the XLA translation path (ImageProjectiveTransformV3 cannot be compiled).
        """
        if jit_compile and not self.use_xla:
            raise ValueError("compile: jit_compile=True needs the XLA translation path (use_xla_translate)")
        super().compile(optimizer=optimizer, jit_compile=jit_compile, steps_per_execution=steps_per_execution)
        unknown = set(loss.term_names) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"compile: loss terms {sorted(unknown)} are not among {LOSS_TERMS}")
        self.pinn_loss = loss
        self._active_terms = tuple(loss.term_names)

    @property
    def metrics(self):
        return [self._all_trackers[name] for name in self._active_terms]

    def train_step(self, data):
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            terms = self.pinn_loss(targets, self(inputs, training=True))
        gradients = tape.gradient(terms["loss"], self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self._track(terms)

    def predict_step(self, data):
        """``model.predict`` returns {'object': (B, N, N, C) complex64} only: the forward model is
        not needed to read out the object, so inference skips it."""
        inputs = data[0] if isinstance(data, tuple) else data
        return {"object": self.object_patches(inputs["diffraction"])}

    def test_step(self, data):
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._track(self.pinn_loss(targets, self(inputs, training=False)))

    def _track(self, terms):
        trackers = self.metrics
        for tracker in trackers:
            tracker.update_state(terms[tracker.name])
        return {tracker.name: tracker.result() for tracker in trackers}


def build_model(spec: ModelSpec, probe: np.ndarray) -> PtychoPINN:
    """A built (weights created, not compiled) :class:`PtychoPINN` for ``spec`` and ``probe`` (N, N)."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build_model: spec must be a ModelSpec; got {type(spec).__name__}")
    model = PtychoPINN(spec, probe)
    model.build()
    model.set_initial_weights()
    return model


def save_weights(model: PtychoPINN, run_dir: str | os.PathLike) -> Path:
    """Write the weights to ``run_dir/model.weights.h5``; returns the path."""
    path = Path(run_dir) / WEIGHTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(path)
    return path


def load_model(spec: ModelSpec, probe: np.ndarray, weights_path: str | os.PathLike) -> PtychoPINN:
    """Rebuild the model from ``spec`` and ``probe`` and load weights saved by :func:`save_weights`."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"load_model: no weights file at {path}")
    model = build_model(spec, probe)
    model.load_weights(path)
    return model


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _require(condition: bool, field: str, expected: str, got) -> None:
    if not condition:
        raise ValueError(f"ModelSpec.{field}: expected {expected}; got {got!r}")

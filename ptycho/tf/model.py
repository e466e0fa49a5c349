"""The physics-informed network (PtychoPINN): encoder-decoder plus a differentiable forward model.

``build_model(spec, probe)`` returns a :class:`PtychoPINN` (a ``keras.Model``) from explicit
arguments only; no global state, so models of different gridsize coexist in one process.

Forward pass, for inputs ``diffraction`` X (B, N, N, C) float32 = s * A_file and
``coords_relative`` (B, 1, 2, C) float32 pixels (docs/design.md §4, §5):

    x      = X / exp(log_scale) / r               log_scale: tracked weight, init log(s);
                                                  r = spec.encoder_input_rms (unit-RMS input)
    amp    = f * amplitude_decoder(encoder(x))    (B, N, N, C), sigmoid centre; f = spec.amplitude_scale
    phase  = phase_decoder(encoder(x))            (B, N, N, C) rad, pi*tanh centre
    object = amp * exp(i phase)                   (B, N, N, C) complex64     -> output "object"
    if object_big and C > 1:                      (identity for a single patch, so skipped)
        object = overlap_patches(object, coords_relative, overlap_weights(N))   spec.overlap 'weighted':
                 each position sees its group's patches moved into its frame, centres at weight 1,
                 outer rings at RING_WEIGHT
        or, 'uniform': canvas = reassemble_patches(object, coords_relative, canvas_size)  (B, M, M, 1)
                       object = extract_patches_at_offsets(canvas, coords_relative, N)
    A_pred = pad_and_diffract(object * probe) * exp(log_scale)             -> output "amplitude"
    I_pred = A_pred**2                            photons                   -> output "intensity"

The probe is the given one, a constant, or with ``spec.refine_probe`` a weight ``probe_field`` (N, N, 2)
[real, imag] that starts at the given probe and is rescaled to its total energy at every call
(``architecture.probe_from_field``, the numpy oracle).

The training step is the model's own (``train_step``/``test_step``); the loss is the callable
given to :meth:`PtychoPINN.compile` (:class:`ptycho.tf.training.PinnLoss`), which returns a dict of
named terms, each tracked as a metric of the same name. ``model.predict`` returns only
{"object": ...}: reading out the object needs the encoder and decoders, not the forward model.

Weights are created from the spec alone (:meth:`PtychoPINN.build`, no forward pass) and have
stable paths such as ``ptycho_pinn/encoder/block0/conv0/kernel`` (ptycho.tf.layers).
"""
from __future__ import annotations

import gc
import math
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ptycho import architecture
from ptycho.tf import layers, ops as tf_ops, reassembly as tf_reassembly
from ptycho.architecture import prepare_probe
from ptycho.spec import LOSS_TERMS, ModelSpec

WEIGHTS_FILE = "model.weights.h5"


class PtychoPINN(keras.Model):
    """The PINN; call it on {'diffraction', 'coords_relative'} (module docstring for shapes).

    Layers in forward order: ``log_scale`` (weight), ``encoder``, ``amplitude_decoder``,
    ``phase_decoder``; the probe (1, N, N, 1) complex64 is a constant, or with ``spec.refine_probe``
    made from the weight ``probe_field`` (:attr:`probe`).
    """

    def __init__(self, spec: ModelSpec, probe: np.ndarray):
        super().__init__(name="ptycho_pinn")
        if spec.reassembles and spec.canvas_size is None:
            raise ValueError(
                "ModelSpec.canvas_size is required when object_big=True and gridsize > 1; "
                "compute it from the groups with ptycho.stitching.canvas_size_for(N, coords_relative)"
            )
        self.spec = spec
        self.use_xla = tf_ops.should_use_xla(spec.use_xla_translate)
        self.given_probe = prepare_probe(probe, spec.N, spec.probe_mask)
        self.probe_energy = float(np.sum(np.abs(self.given_probe.astype(np.complex128)) ** 2))
        self.fixed_probe = None if spec.refine_probe else tf.constant(self.given_probe[None, :, :, None])
        self.overlap_weights = (tf.constant(architecture.overlap_weights(spec.N))
                                if spec.overlap == "weighted" else None)
        self.log_scale = self.add_weight(
            shape=(), name="log_scale", trainable=spec.intensity_scale_trainable,
            initializer=keras.initializers.Constant(math.log(spec.intensity_scale)),
        )
        self.probe_field = self.add_weight(
            shape=(spec.N, spec.N, 2), name=architecture.PROBE_FIELD, trainable=True, initializer="zeros",
        ) if spec.refine_probe else None
        self.probe_support = (tf.constant(architecture.probe_disk(spec.N))
                              if spec.probe_mask and spec.refine_probe else None)
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
        predicted = tf_ops.pad_and_diffract(illuminated) * scale
        return {"object": obj, "amplitude": predicted, "intensity": tf.square(predicted)}

    @property
    def probe(self):
        """The probe the forward model uses, (1, N, N, 1) complex64: the given one, or the refined one at
        the given one's total energy (``architecture.probe_from_field``)."""
        if self.probe_field is None:
            return self.fixed_probe
        field = self.probe_field if self.probe_support is None else self.probe_field * self.probe_support[..., None]
        real, imag = field[..., 0], field[..., 1]
        norm = tf.sqrt(self.probe_energy / tf.reduce_sum(tf.square(real) + tf.square(imag)))
        return tf.complex(real * norm, imag * norm)[None, :, :, None]

    @property
    def probe_array(self) -> np.ndarray:
        """The probe the forward model uses now, (N, N) complex64 (the refined one with ``refine_probe``)."""
        return np.asarray(self.probe.numpy()[0, :, :, 0], np.complex64)

    def object_patches(self, diffraction):
        """Decoded object patches amp * exp(i phase): (B, N, N, C) complex64 from X (B, N, N, C)."""
        features = self.encoder(diffraction / (tf.exp(self.log_scale) * self.spec.encoder_input_rms))
        amplitude = self.amplitude_decoder(features) * self.spec.amplitude_scale
        phase = self.phase_decoder(features)
        return tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))

    def illuminated_patches(self, obj, coords):
        """Object patches as the probe sees them: (B, N, N, C) complex64, each the group's overlap
        average in its position's frame when object_big (``ModelSpec.overlap``)."""
        if not self.spec.reassembles:
            return obj
        if self.overlap_weights is not None:
            return tf_reassembly.overlap_patches(obj, coords, self.overlap_weights, use_xla=self.use_xla)
        canvas = self.object_canvas(obj, coords)
        return tf_reassembly.extract_patches_at_offsets(canvas, coords, self.spec.N, use_xla=self.use_xla)

    def object_canvas(self, obj, coords):
        """(B, M, M, 1) complex64: each group's C patches shifted to their offsets, overlap-averaged
        with the weights of ``ModelSpec.overlap``."""
        size = self.spec.canvas_size or self.spec.N
        return tf_reassembly.reassemble_patches(obj, coords, size, use_xla=self.use_xla, weights=self.overlap_weights)

    def set_initial_weights(self) -> None:
        """Set every convolution to ``architecture.initial_weights`` of the spec (the numbers the
        PyTorch port starts from too), log_scale to log(intensity_scale) and a refined probe's field to
        the given probe (``architecture.probe_field_start``)."""
        spec = self.spec
        initial = architecture.initial_weights(spec.N, spec.gridsize, spec.n_filters_scale, spec.seed,
                                               spec.initial_amplitude)
        for variable in self.weights:
            *layer, name = variable.path.split("/")[1:]
            if layer:
                variable.assign(initial["/".join(layer)][name])
        self.log_scale.assign(math.log(spec.intensity_scale))
        if self.probe_field is not None:
            self.probe_field.assign(architecture.probe_field_start(self.given_probe, spec.probe_learning_rate_factor))

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

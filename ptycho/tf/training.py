"""Training of the PINN: grouped inputs, the loss, callbacks and the ``model.fit`` loop.

Grouped inputs and labels, the validation split and the batch order are
:mod:`ptycho.data.batches`' (shared with the PyTorch port).

Loss terms (:class:`PinnLoss`, each tracked per epoch under its name):

    poisson_nll    mean(I_g - I_obs * log(I_g)), I_g = I_pred + INTENSITY_EPSILON > 0
    diffraction_mae  mean | A_pred - sqrt(I_obs) |  over the diffraction amplitudes (the
                   reference's "MAE loss"; no ground truth needed)
    amplitude_mae  mean | |O_pred| - |O_true| |   over the object patches (needs ground truth)
    realspace_mse  mean |O_pred - O_true|**2      over the object patches (needs ground truth)
    loss           nll_weight * poisson_nll + diffraction_mae_weight * diffraction_mae
                   + mae_weight * amplitude_mae + realspace_weight * realspace_mse
                   (terms with weight 0 are not computed)

Optimiser and schedule (ptycho.spec, both backends): Adam; ReduceLROnPlateau on val_loss (x0.5,
patience 5, min 1e-5) when a validation split exists; EarlyStopping (patience 10) on val_loss when
a validation split exists, else on loss.
A non-finite loss raises :class:`NonFiniteLossError` at the batch where it appears.

History: per epoch, every term (``val_`` + term on the validation split), intensity_scale,
learning_rate, epoch_time_s; per step, ``step_loss``: the weighted total of each training
batch in order (:class:`StepLossRecorder`), the values the PyTorch port records.

The train step is never XLA-compiled (``jit_compile=False``), whatever the translation path:
on this project's 2-core CPU, XLA's convolutions made a batch of 16 groups 20 % slower than
oneDNN's (0.55 s vs 0.45 s) and compiling doubled the first step (5.8 s vs 2.8 s); and the
non-XLA translation (``ImageProjectiveTransformV3``) cannot be compiled at all. With XLA
translation on, the translations use the XLA-compatible gather kernels inside the graph.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from ptycho.data import batches
from ptycho.data.batches import GroupedData, split_validation
from ptycho.tf.model import PtychoPINN
from ptycho.spec import (
    EARLY_STOPPING_PATIENCE, INTENSITY_EPSILON, LR_FACTOR, LR_MIN, LR_PATIENCE, LossTerms, NonFiniteLossError,
    TrainSpec, early_stopping_monitor,
)
from ptycho.stitching import check_offsets_fit

def guarded_intensity(intensity):
    """Predicted intensity made strictly positive before any log: ``I + INTENSITY_EPSILON``."""
    return intensity + INTENSITY_EPSILON


def poisson_nll(observed, predicted):
    """Mean Poisson negative log-likelihood (without the log(I_obs!) constant), scalar float32."""
    guarded = guarded_intensity(predicted)
    return tf.reduce_mean(guarded - observed * tf.math.log(guarded))


class PinnLoss(LossTerms):
    """Weighted loss ``loss(targets, outputs) -> {term: scalar}`` (module docstring for terms)."""

    def __call__(self, targets, outputs):
        values = self.terms_of(targets, outputs)
        values["loss"] = tf.add_n([self.weights[name] * value for name, value in values.items()])
        return values

    @staticmethod
    def poisson_nll(targets, outputs):
        return poisson_nll(targets["intensity"], outputs["intensity"])

    @staticmethod
    def diffraction_mae(targets, outputs):
        return tf.reduce_mean(tf.abs(outputs["amplitude"] - tf.sqrt(targets["intensity"])))

    @staticmethod
    def amplitude_mae(targets, outputs):
        return tf.reduce_mean(tf.abs(_safe_abs(outputs["object"]) - tf.abs(targets["object"])))

    @staticmethod
    def realspace_mse(targets, outputs):
        difference = outputs["object"] - targets["object"]
        return tf.reduce_mean(tf.square(tf.math.real(difference)) + tf.square(tf.math.imag(difference)))


class FusedAdam(keras.optimizers.Adam):
    """keras.optimizers.Adam whose per-variable update is one fused kernel (``ResourceApplyAdam``).

    Same rule as Keras' Adam (no amsgrad): m += (1 - b1)(g - m); v += (1 - b2)(g**2 - v);
    w -= lr * sqrt(1 - b2**t) / (1 - b1**t) * m / (sqrt(v) + eps). One op per variable
    instead of about twenty: a smaller training graph (faster tracing, lower first-epoch
    overhead) and fewer passes over the weights each step. Schedules and callbacks that set
    ``learning_rate`` work as with Keras' Adam.
    """

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, variable.dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=tf.pow(tf.cast(self.beta_1, variable.dtype), step),
            beta2_power=tf.pow(tf.cast(self.beta_2, variable.dtype), step),
            lr=tf.cast(learning_rate, variable.dtype), beta1=tf.cast(self.beta_1, variable.dtype),
            beta2=tf.cast(self.beta_2, variable.dtype), epsilon=tf.cast(self.epsilon, variable.dtype),
            grad=tf.cast(gradient, variable.dtype),
        )


def _safe_abs(z):
    """|z| with a finite gradient at z = 0."""
    return tf.sqrt(tf.square(tf.math.real(z)) + tf.square(tf.math.imag(z)) + INTENSITY_EPSILON)


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Raise NonFiniteLossError as soon as a logged loss/metric is NaN or Inf."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        _raise_if_non_finite(logs, f"epoch {self.epoch}, batch {batch}")

    def on_epoch_end(self, epoch, logs=None):
        _raise_if_non_finite(logs, f"end of epoch {epoch}")


def _raise_if_non_finite(logs, where):
    for name, value in (logs or {}).items():
        value = float(np.asarray(value))
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training diverged: {name} = {value} at {where}; the run is stopped "
                "(check the data scaling, the canvas size and the learning rate)"
            )


class EpochRecorder(keras.callbacks.Callback):
    """Per-epoch history: every logged metric plus intensity_scale, learning_rate, epoch_time_s.

    The extra values are also written into ``logs`` so that later callbacks see them.
    """

    def __init__(self):
        super().__init__()
        self.history: dict[str, list[float]] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["intensity_scale"] = self.model.intensity_scale
        logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
        logs["epoch_time_s"] = time.perf_counter() - self._start
        for name, value in logs.items():
            self.history.setdefault(name, []).append(float(np.asarray(value)))


class StepLossRecorder(keras.callbacks.Callback):
    """``step_loss``: the training loss of each batch, in order (one float per step).

    Keras' batch logs hold each metric's running mean over the epoch, and differencing those
    float32 means loses digits at a Poisson NLL of -3e6. So the model is compiled with
    ``recording(loss)``, which also stores each call's total in a variable; it is read after
    every training batch (validation overwrites it only after the epoch's last batch was read).
    """

    def __init__(self):
        super().__init__()
        self.batch_loss = tf.Variable(0.0, trainable=False, name="batch_loss")
        self.step_loss: list[float] = []

    def recording(self, loss: PinnLoss) -> "_RecordingLoss":
        return _RecordingLoss(loss, self.batch_loss)

    def on_train_batch_end(self, batch, logs=None):
        self.step_loss.append(float(self.batch_loss.numpy()))


class _RecordingLoss:
    """``loss`` (every attribute delegated) that also assigns each call's ``loss`` to ``variable``."""

    def __init__(self, loss: PinnLoss, variable: tf.Variable):
        self.loss, self.variable = loss, variable

    def __getattr__(self, name):
        if name in ("loss", "variable"):  # not set yet (copy/pickle): no recursion
            raise AttributeError(name)
        return getattr(self.loss, name)

    def __call__(self, targets, outputs):
        values = self.loss(targets, outputs)
        self.variable.assign(values["loss"])
        return values


def train(model: PtychoPINN, data: GroupedData, spec: TrainSpec,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict[str, list[float]]:
    """Train ``model`` on grouped ``data``; returns the history (name -> list of floats): per
    epoch, plus ``step_loss`` per step (module docstring).

    Seeds Keras (Python, numpy and TF generators) with ``spec.seed`` so that a run repeats
    exactly on CPU. ``callbacks`` run after the built-in ones; an exception raised by any
    of them (e.g. in on_train_begin) propagates before or during training.
    """
    loss = PinnLoss.of(model.spec)
    if loss.needs_ground_truth and data.object is None:
        raise ValueError(
            "train: mae_weight/realspace_weight > 0 need ground-truth object patches, but the "
            "data has none (no Y); set both weights to 0"
        )
    check_offsets_fit(model.spec, data.coords_relative)
    keras.utils.set_random_seed(spec.seed)
    steps = StepLossRecorder()
    model.compile(FusedAdam(model.spec.learning_rate), steps.recording(loss), jit_compile=False)
    model.optimizer.build(model.trainable_variables)
    train_part, val_part = split_validation(data, spec.validation_split)
    recorder = EpochRecorder()
    builtin = [keras.callbacks.EarlyStopping(monitor=early_stopping_monitor(val_part is not None),
                                             patience=EARLY_STOPPING_PATIENCE)]
    if val_part is not None:
        builtin.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=LR_FACTOR, patience=LR_PATIENCE, min_lr=LR_MIN, verbose=0))
    with_object = loss.needs_ground_truth
    model.fit(
        _dataset(train_part, spec.batch_size, with_object, shuffle=(spec.seed, spec.max_epochs)),
        steps_per_epoch=_steps(train_part, spec.batch_size),
        validation_data=None if val_part is None else _dataset(val_part, spec.batch_size, with_object),
        validation_steps=None if val_part is None else _steps(val_part, spec.batch_size),
        epochs=spec.max_epochs,
        callbacks=[*builtin, NonFiniteLossGuard(), recorder, steps, *callbacks],
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=0 if spec.quiet else 1,
    )
    # The traced step functions serve this fit only (the next train() compiles afresh);
    # dropping them returns their graphs' memory before inference.
    model.release_traced_functions()
    return {**recorder.history, "step_loss": steps.step_loss}


def _dataset(data: GroupedData, batch_size: int, with_object: bool, shuffle: tuple[int, int] | None = None):
    """Batches of (inputs, targets); ``shuffle`` = (seed, epochs) or None (one pass, in order).

    Shuffled: ``batches.epoch_order`` for each epoch, the order the PyTorch port uses too, so
    both backends see the same batches. The whole run is one dataset, so Keras keeps one
    iterator for the fit (a fresh iterator per epoch stalled some epoch starts by seconds).
    """
    arrays = (data.inputs(), data.targets() if with_object else {"intensity": data.intensity})
    if shuffle is None:
        return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size).repeat().prefetch(1)
    seed, epochs = shuffle
    orders = np.stack([batches.epoch_order(data.n_groups, seed, epoch) for epoch in range(epochs)])
    tensors = tf.nest.map_structure(tf.constant, arrays)
    return (tf.data.Dataset.from_tensor_slices(orders)
            .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
            .map(lambda index: tf.nest.map_structure(lambda t: tf.gather(t, index), tensors))
            .prefetch(1))


def _steps(data: GroupedData, batch_size: int) -> int:
    return batches.n_batches(data.n_groups, batch_size)

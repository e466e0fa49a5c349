"""Training of the PyTorch PINN: the same data, loss, optimiser, schedule and history as
``ptycho.tf.training``.

* Data: ``ptycho.data.batches.GroupedData``, the TF side's (input ``X = s * A_file`` as
  (B, N, N, C), labels ``X**2``); :func:`batch_tensors` turns a batch into torch tensors on
  the model's device (``model.device``, the CPU unless ``build_model`` was given another).
* Loss (:class:`PinnLoss`), each term tracked per epoch under its TF name:
  ``poisson_nll`` = mean(I_g - I_obs * log(I_g)), I_g = I_pred + INTENSITY_EPSILON;
  ``diffraction_mae`` = mean |A_pred - sqrt(I_obs)| (no ground truth needed);
  ``amplitude_mae``, ``realspace_mse`` (need ground truth); ``loss`` = weighted sum.
* Optimiser: :class:`ptycho.torch.optim.KerasAdam` (Keras' Adam arithmetic, epsilon 1e-7).
  Schedule: ReduceLROnPlateau on val_loss (x0.5, patience 5, min 1e-5) when a validation
  split exists; EarlyStopping (patience 10) on val_loss when a validation split exists, else
  on loss. Validation: the last groups (Keras' rule).
* History per epoch: the loss terms, ``val_<term>``, ``intensity_scale``, ``learning_rate``
  (after the schedule), ``epoch_time_s`` - the names ``ptycho.tf.training.train`` records; per
  step, ``step_loss``: the weighted total of each training batch in order, as the TF side.
* Seeded: ``spec.seed`` drives the shuffling, ``ptycho.data.batches.epoch_order`` (the order the
  TF side uses too); the same seed gives the same losses twice on CPU.
* Callbacks are duck-typed (Keras callbacks work): ``on_train_begin(logs)``,
  ``on_epoch_begin(epoch, logs)``, ``on_train_batch_end(batch, logs)``,
  ``on_epoch_end(epoch, logs)``, ``on_train_end(logs)`` are called when present; an exception in any of them propagates.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import torch

from ptycho.data import batches, normalization
from ptycho.data.batches import GroupedData, split_validation
from ptycho.spec import (
    EARLY_STOPPING_PATIENCE, INTENSITY_EPSILON, LR_FACTOR, LR_MIN, LR_PATIENCE, LossTerms, NonFiniteLossError,
    TrainSpec, early_stopping_monitor,
)
from ptycho.stitching import check_offsets_fit
from ptycho.torch import optim
from ptycho.torch.model import PtychoPINN

def batch_tensors(data: GroupedData, index, device: torch.device | None = None) -> tuple[dict, dict]:
    """(inputs, targets) dicts of torch tensors on ``device`` (None: the CPU) for the groups of
    ``data`` at ``index``."""
    diffraction = data.diffraction[index]
    inputs = {"diffraction": diffraction, "coords_relative": data.coords_relative[index]}
    targets = {"intensity": normalization.intensity_labels(diffraction)}
    if data.object is not None:
        targets["object"] = data.object[index]
    return ({name: torch.from_numpy(value).to(device) for name, value in inputs.items()},
            {name: torch.from_numpy(value).to(device) for name, value in targets.items()})


def poisson_nll(observed, predicted):
    """Mean Poisson negative log-likelihood (without log(I_obs!)), scalar float32."""
    guarded = predicted + INTENSITY_EPSILON
    return torch.mean(guarded - observed * torch.log(guarded))


class PinnLoss(LossTerms):
    """Weighted loss ``loss(targets, outputs) -> {term: scalar}`` (module docstring)."""

    def __call__(self, targets, outputs):
        values = self.terms_of(targets, outputs)
        values["loss"] = sum(self.weights[name] * value for name, value in values.items())
        return values

    @staticmethod
    def poisson_nll(targets, outputs):
        return poisson_nll(targets["intensity"], outputs["intensity"])

    @staticmethod
    def diffraction_mae(targets, outputs):
        return torch.mean(torch.abs(outputs["amplitude"] - torch.sqrt(targets["intensity"])))

    @staticmethod
    def amplitude_mae(targets, outputs):
        z = outputs["object"]
        safe_abs = torch.sqrt(z.real**2 + z.imag**2 + INTENSITY_EPSILON)
        return torch.mean(torch.abs(safe_abs - torch.abs(targets["object"])))

    @staticmethod
    def realspace_mse(targets, outputs):
        difference = outputs["object"] - targets["object"]
        return torch.mean(difference.real**2 + difference.imag**2)


def loss_for(model: PtychoPINN) -> PinnLoss:
    return PinnLoss.of(model.spec)


def make_optimizer(model: PtychoPINN) -> optim.KerasAdam:
    """Keras-arithmetic Adam over the trainable parameters, at ``spec.learning_rate``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    return optim.KerasAdam(trainable, lr=model.spec.learning_rate)


def train_step(model, optimizer, loss, inputs, targets) -> dict[str, float]:
    """One Adam step on one batch; returns the batch's loss terms as floats."""
    model.train()
    terms = loss(targets, model(inputs["diffraction"], inputs["coords_relative"]))
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    optimizer.step()
    return {name: float(value.detach()) for name, value in terms.items()}


def evaluate(model, loss, data: GroupedData, batch_size: int) -> dict[str, float]:
    """Loss terms averaged over the batches of ``data`` (each batch counts once, as Keras)."""
    model.eval()
    sums: dict[str, float] = {}
    n_batches = 0
    with torch.no_grad():
        for begin in range(0, data.n_groups, batch_size):
            inputs, targets = batch_tensors(data, slice(begin, begin + batch_size), model.device)
            terms = loss(targets, model(inputs["diffraction"], inputs["coords_relative"]))
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            n_batches += 1
    return {name: total / n_batches for name, total in sums.items()}


def train(model: PtychoPINN, data: GroupedData, spec: TrainSpec, callbacks: Sequence = ()) -> dict:
    """Train ``model`` on grouped ``data`` for ``spec``.

    Returns the history, name -> list of floats: per epoch, plus ``step_loss`` per step
    (module docstring).
    """
    loss = loss_for(model)
    if loss.needs_ground_truth and data.object is None:
        raise ValueError("train: mae_weight/realspace_weight > 0 need ground-truth object "
                         "patches, but the data has none (no Y); set both weights to 0")
    check_offsets_fit(model.spec, data.coords_relative)
    optimizer = make_optimizer(model)
    train_part, val_part = split_validation(data, spec.validation_split)
    stopper = optim.EarlyStopping(EARLY_STOPPING_PATIENCE)
    plateau = None if val_part is None else optim.ReduceLROnPlateau(LR_FACTOR, LR_PATIENCE, LR_MIN)
    history: dict[str, list[float]] = {}
    step_loss: list[float] = []
    logs: dict[str, float] = {}
    _notify(callbacks, "on_train_begin", logs)
    for epoch in range(spec.max_epochs):
        _notify(callbacks, "on_epoch_begin", epoch, {})
        start = time.perf_counter()
        order = batches.epoch_order(train_part.n_groups, spec.seed, epoch)
        logs = _train_epoch(model, optimizer, loss, train_part, order, spec.batch_size, epoch, step_loss, callbacks)
        if val_part is not None:
            validation = evaluate(model, loss, val_part, spec.batch_size)
            _raise_if_non_finite(validation, f"validation after epoch {epoch}")
            logs.update({f"val_{name}": value for name, value in validation.items()})
            plateau.update(logs["val_loss"], optimizer)
        logs.update(intensity_scale=model.intensity_scale, learning_rate=optimizer.learning_rate,
                    epoch_time_s=time.perf_counter() - start)
        for name, value in logs.items():
            history.setdefault(name, []).append(float(value))
        _notify(callbacks, "on_epoch_end", epoch, logs)
        if stopper.should_stop(epoch, logs[early_stopping_monitor(val_part is not None)]):
            break
    _notify(callbacks, "on_train_end", logs)
    return {**history, "step_loss": step_loss}


def _train_epoch(model, optimizer, loss, data, order, batch_size, epoch, step_loss, callbacks):
    """Epoch-mean loss terms; appends each batch's total to ``step_loss``; ``on_train_batch_end``
    after each batch, with the epoch's running means (as Keras gives)."""
    sums: dict[str, float] = {}
    n_batches = 0
    for begin in range(0, len(order), batch_size):
        inputs, targets = batch_tensors(data, order[begin:begin + batch_size], model.device)
        terms = train_step(model, optimizer, loss, inputs, targets)
        step_loss.append(terms["loss"])
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        n_batches += 1
        means = {name: total / n_batches for name, total in sums.items()}
        _raise_if_non_finite(means, f"epoch {epoch}, batch {n_batches - 1}")
        _notify(callbacks, "on_train_batch_end", n_batches - 1, means)
    return {name: means[name] for name in loss.term_names}


def _raise_if_non_finite(logs, where):
    for name, value in logs.items():
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training diverged: {name} = {value} at {where}; the run is stopped "
                "(check the data scaling, the canvas size and the learning rate)")


def _notify(callbacks, method, *args):
    for callback in callbacks:
        hook = getattr(callback, method, None)
        if hook is not None:
            hook(*args)

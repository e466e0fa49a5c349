"""Keras' optimiser and training schedule, reproduced for the PyTorch port.

* :class:`KerasAdam` - Adam with Keras' update rule, not torch's: Keras adds epsilon
  (default 1e-7, torch's is 1e-8) to the *uncorrected* sqrt(v) and folds both bias
  corrections into the step size,

      alpha_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
      m += (g - m) * (1 - beta1);  v += (g**2 - v) * (1 - beta2)
      w -= alpha_t * m / (sqrt(v) + epsilon)

  which is torch's Adam with an effective epsilon of ``epsilon / sqrt(1 - beta2**t)``,
  i.e. different early in training. Reproducing it keeps loss curves comparable.
* :class:`EarlyStopping`, :class:`ReduceLROnPlateau` - the decisions of the Keras callbacks
  of the same names with the settings ``ptycho.tf.training`` uses (min_delta 0 and 1e-4).
"""
from __future__ import annotations

import math

import numpy as np
import torch

KERAS_EPSILON = 1e-7
PLATEAU_MIN_DELTA = 1e-4  # keras.callbacks.ReduceLROnPlateau default


class KerasAdam(torch.optim.Optimizer):
    """Adam with Keras 3's arithmetic (module docstring); ``lr`` lives in ``param_groups``."""

    def __init__(self, params, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=KERAS_EPSILON):
        if not lr > 0 or not epsilon >= 0:
            raise ValueError(f"KerasAdam: need lr > 0 and epsilon >= 0; got {lr}, {epsilon}")
        super().__init__(params, {"lr": lr, "beta_1": beta_1, "beta_2": beta_2,
                                  "epsilon": epsilon})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta_1, beta_2 = group["beta_1"], group["beta_2"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(param)
                    state["v"] = torch.zeros_like(param)
                state["step"] += 1
                t = state["step"]
                alpha = group["lr"] * math.sqrt(1 - beta_2**t) / (1 - beta_1**t)
                m, v, grad = state["m"], state["v"], param.grad
                m.add_((grad - m) * (1 - beta_1))
                v.add_((grad * grad - v) * (1 - beta_2))
                param.sub_(alpha * m / (v.sqrt() + group["epsilon"]))

    @property
    def learning_rate(self) -> float:
        return float(self.param_groups[0]["lr"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        for group in self.param_groups:
            group["lr"] = float(value)


class EarlyStopping:
    """Stop when ``loss`` has not decreased for ``patience`` epochs (Keras' rule, min_delta 0)."""

    def __init__(self, patience: int):
        self.patience, self.wait, self.best = patience, 0, math.inf

    def should_stop(self, epoch: int, current: float) -> bool:
        self.wait += 1
        if current < self.best:
            self.best, self.wait = current, 0
            return False
        return self.wait >= self.patience and epoch > 0


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without a val_loss
    improvement of more than PLATEAU_MIN_DELTA, never below ``min_lr`` (Keras' rule, no cooldown)."""

    def __init__(self, factor: float, patience: int, min_lr: float):
        self.factor, self.patience, self.min_lr = factor, patience, min_lr
        self.wait, self.best = 0, math.inf

    def update(self, current: float, optimizer: KerasAdam) -> None:
        if current < self.best - PLATEAU_MIN_DELTA:
            self.best, self.wait = current, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            old = optimizer.learning_rate
            if old > np.float32(self.min_lr):
                optimizer.learning_rate = max(old * self.factor, self.min_lr)
                self.wait = 0

"""The runner's training callbacks, shared by every backend's training loop.

They use only ``on_train_begin(logs)``, ``on_epoch_end(epoch, logs)`` and
``on_train_end(logs)``, so a loop that calls those three (the PyTorch trainer) drives them
as well as Keras does. :func:`make_callbacks` derives them from the backend's base class
(``keras.callbacks.Callback`` for TensorFlow, from :func:`keras_base`, imported only then).
"""
from __future__ import annotations

from typing import Callable


class GuardGate:
    """``on_train_begin`` blocks until the guard check finished; ``wait`` raises when it is red."""

    def __init__(self, wait: Callable[[], None]):
        super().__init__()
        self._wait = wait

    def on_train_begin(self, logs=None):
        self._wait()

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass


class EpochLogger:
    """Sends each epoch's metrics to ``log_epoch(epoch, metrics)`` and marks the training timeline."""

    def __init__(self, log_epoch: Callable[[int, dict], None], mark: Callable[[str], None]):
        super().__init__()
        self._log_epoch = log_epoch
        self._mark = mark

    def on_train_begin(self, logs=None):
        self._mark("train_begin")

    def on_epoch_end(self, epoch, logs=None):
        self._log_epoch(int(epoch), {key: float(value) for key, value in (logs or {}).items()})
        if epoch == 0:
            self._mark("first_epoch_end")

    def on_train_end(self, logs=None):
        self._mark("train_end")


def keras_base() -> type:
    """``keras.callbacks.Callback`` (imports Keras, so call it after TensorFlow's XLA env is set)."""
    import keras

    return keras.callbacks.Callback


def make_callbacks(
    base: type, *, wait_for_guard: Callable[[], None], log_epoch: Callable[[int, dict], None],
    mark: Callable[[str], None],
) -> list:
    """[GuardGate, EpochLogger] as subclasses of ``base``; the gate comes first so training waits."""
    return [
        _derive(GuardGate, base)(wait_for_guard),
        _derive(EpochLogger, base)(log_epoch, mark),
    ]


def _derive(cls: type, base: type) -> type:
    if base is object:
        return cls
    return type(cls.__name__, (cls, base), {"__doc__": cls.__doc__, "__module__": cls.__module__})

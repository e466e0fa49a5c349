"""The runner's training callbacks, shared by every backend's training loop.

They use ``on_train_begin(logs)``, ``on_epoch_begin(epoch, logs)``,
``on_train_batch_end(batch, logs)``, ``on_epoch_end(epoch, logs)`` and ``on_train_end(logs)``
(the PyTorch trainer calls them as Keras does) and ``on_fit_data(info)`` (from
``ptycho.pipeline``, before the fit). :func:`make_callbacks` derives them from the backend's base class
(``runners.phases.backends``: ``keras.callbacks.Callback`` for TensorFlow, from :func:`keras_base`,
imported only then; ``object`` for PyTorch).
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
    """Talks about the fit: per epoch, the metrics (with :func:`epoch_metrics`' additions) to
    ``log_epoch`` and one line to ``say``; per batch, a progress bar to ``progress`` (given only
    when a terminal is attached); marks the training timeline."""

    def __init__(self, log_epoch: Callable[[int, dict], None], mark: Callable[[str], None],
                 say: Callable[[str], None], progress: Callable[[str], None] | None = None):
        super().__init__()
        self._log_epoch, self._mark, self._say, self._progress = log_epoch, mark, say, progress
        self._fit: dict = {}
        self._epoch = 0

    def on_fit_data(self, info: dict):
        self._fit = dict(info)

    def on_train_begin(self, logs=None):
        self._mark("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)

    def on_train_batch_end(self, batch, logs=None):
        if self._progress is not None:
            self._progress(progress_bar(self._epoch, int(batch), self._fit))

    def on_epoch_end(self, epoch, logs=None):
        metrics = epoch_metrics(logs or {}, self._fit)
        self._log_epoch(int(epoch), metrics)
        if self._progress is not None:
            self._progress(CLEAR_LINE)
        self._say(epoch_line(int(epoch), metrics, self._fit))
        if epoch == 0:
            self._mark("first_epoch_end")

    def on_train_end(self, logs=None):
        self._mark("train_end")


CLEAR_LINE = "\r\x1b[K"
BAR_WIDTH = 24


def epoch_metrics(logs: dict, fit: dict) -> dict[str, float]:
    """An epoch's logs as floats, plus ``nll_excess``/``val_nll_excess`` (the Poisson NLL per
    pixel above the data's own floor, ``fit``'s ``nll_floor``/``val_nll_floor``: 0 is a perfect
    fit) and ``groups_per_s`` (training groups over the epoch's wall time, validation included)."""
    metrics = {key: float(value) for key, value in logs.items()}
    for prefix in ("", "val_"):
        nll, floor = metrics.get(f"{prefix}poisson_nll"), fit.get(f"{prefix}nll_floor")
        if nll is not None and floor is not None:
            metrics[f"{prefix}nll_excess"] = nll - floor
    seconds, groups = metrics.get("epoch_time_s"), fit.get("n_groups_train")
    if seconds and groups:
        metrics["groups_per_s"] = groups / seconds
    return metrics


def epoch_line(epoch: int, metrics: dict[str, float], fit: dict) -> str:
    """``epoch 3/10: loss ... (NLL +0.41/px over the data's floor); val_loss ...; 12.3 s, 26.0 groups/s``."""
    parts = [f"epoch {epoch + 1}/{fit.get('max_epochs', '?')}:"]
    for prefix in ("", "val_"):
        if f"{prefix}loss" not in metrics:
            continue
        text = f"{prefix}loss {metrics[f'{prefix}loss']:.7g}"
        if f"{prefix}nll_excess" in metrics:
            text += f" (NLL {metrics[f'{prefix}nll_excess']:+.4g}/px over the data's floor)"
        parts.append(text + ";")
    if "epoch_time_s" in metrics:
        parts.append(f"{metrics['epoch_time_s']:.1f} s" + (f", {metrics['groups_per_s']:.1f} groups/s"
                                                            if "groups_per_s" in metrics else ""))
    return " ".join(parts).rstrip(";")


def progress_bar(epoch: int, batch: int, fit: dict) -> str:
    """``\\r  epoch 2/10 [#########---------------]  9/24 batches`` (no newline)."""
    total = fit.get("n_batches") or batch + 1
    done = min(batch + 1, total)
    filled = round(BAR_WIDTH * done / total)
    return (f"\r  epoch {epoch + 1}/{fit.get('max_epochs', '?')} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
            f"{done}/{total} batches")


def keras_base() -> type:
    """``keras.callbacks.Callback`` (imports Keras, so call it after TensorFlow's XLA env is set)."""
    import keras

    return keras.callbacks.Callback


def make_callbacks(
    base: type, *, wait_for_guard: Callable[[], None], log_epoch: Callable[[int, dict], None],
    mark: Callable[[str], None], say: Callable[[str], None], progress: Callable[[str], None] | None = None,
) -> list:
    """[GuardGate, EpochLogger] as subclasses of ``base``; the gate comes first so training waits."""
    return [
        _derive(GuardGate, base)(wait_for_guard),
        _derive(EpochLogger, base)(log_epoch, mark, say, progress),
    ]


def _derive(cls: type, base: type) -> type:
    if base is object:
        return cls
    return type(cls.__name__, (cls, base), {"__doc__": cls.__doc__, "__module__": cls.__module__})

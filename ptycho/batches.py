"""How both backends cut grouped data into epochs and batches (no TensorFlow, no PyTorch).

The validation split and the shuffled order of every epoch are numpy-only and depend on the
seed alone, so the Keras model and its PyTorch twin see the same groups in the same batches:
with the same initial weights (``ptycho.architecture``) their runs stay side by side.
"""
from __future__ import annotations

import math

import numpy as np


def split_validation(data, validation_split: float):
    """(train, validation or None) of grouped ``data`` (anything with ``n_groups`` and ``take``).

    The last ``n - ceil(n * (1 - split))`` groups are held out (Keras' rule); at least one
    group always trains.
    """
    n_train = max(1, min(math.ceil(data.n_groups * (1.0 - validation_split)), data.n_groups))
    if n_train == data.n_groups:
        return data, None
    return data.take(slice(0, n_train)), data.take(slice(n_train, None))


def epoch_order(n_groups: int, seed: int, epoch: int) -> np.ndarray:
    """(n_groups,) int64: the shuffled order of the training groups in ``epoch`` (0-based).

    A fresh permutation per epoch from a generator seeded with (seed, epoch), so any epoch's
    order is known without drawing the ones before it.
    """
    return np.random.default_rng((seed, epoch)).permutation(n_groups)


def n_batches(n_groups: int, batch_size: int) -> int:
    """Batches per epoch; the last batch may be smaller."""
    return math.ceil(n_groups / batch_size)

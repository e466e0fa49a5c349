"""Where the PyTorch port computes: ``cpu`` (the default), ``cuda``, ``cuda:<index>`` or ``auto``.

``auto`` is the first CUDA GPU when this torch build sees one, else the CPU. A GPU that is
asked for by name but missing is an error that says so, never a silent fall-back to the CPU:
a study sized for a GPU would otherwise run for days on the CPU.
Only :func:`resolve_device` imports torch and touches CUDA, so a caller that only checks a
name (a TensorFlow study's arguments) does not load PyTorch.
"""
from __future__ import annotations

import re

DEVICE_NAMES = ("cpu", "cuda", "cuda:<index>", "auto")
_PATTERN = re.compile(r"cpu|auto|cuda(:\d+)?")


def check_device_name(name) -> str:
    """``name`` if it is one of DEVICE_NAMES (the form only; availability is :func:`resolve_device`'s)."""
    if not isinstance(name, str) or not _PATTERN.fullmatch(name):
        raise ValueError(f"device: expected one of {', '.join(DEVICE_NAMES)}; got {name!r}")
    return name


def resolve_device(name: str | None = None):
    """The torch.device for ``name`` (None: ``cpu``); ValueError names a missing GPU."""
    import torch

    name = check_device_name("cpu" if name is None else name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch build ({torch.__version__}) sees no CUDA GPU "
                         "(torch.cuda.is_available() is False); use device 'cpu', or 'auto' to take a "
                         "GPU only where there is one")
    device = torch.device(name)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {name!r}: this machine has {count} CUDA GPU(s), numbered 0..{count - 1}")
    return device

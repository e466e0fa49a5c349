"""Repeatable runs: fixed thread counts and deterministic kernels on either backend.

A CPU kernel that splits a sum over threads adds the partial sums in an order set by the
thread count, and training amplifies the last-bit differences this makes. With the thread
count fixed (never "whatever the machine offers at the moment") and the frameworks' own
determinism switches on, the same job on the same machine gives the same stats.json sha1
whatever else the machine is doing.

Both functions must run before the framework starts its thread pools (its first op). If the
pools already run with other settings, the settings that are in force are returned, so the
caller records the truth. Nothing is imported at module import.
"""
from __future__ import annotations

import os


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a SLURM allocation), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without sched_getaffinity
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | None) -> int:
    """``threads`` when given (an integer >= 1), else :func:`available_cpus`."""
    if threads is None:
        return available_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads: expected None or an integer >= 1; got {threads!r}")
    return threads


def configure_tensorflow(threads: int) -> dict[str, str]:
    """Intra-op pool of ``threads``, one inter-op thread, op determinism on.

    Returns {'threads', 'inter_op_threads', 'op_determinism'} as in force afterwards.
    """
    import tensorflow as tf

    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(threads)
        threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # the runtime is already initialised: keep (and report) its settings
        pass
    tf.config.experimental.enable_op_determinism()
    return {"threads": str(threading.get_intra_op_parallelism_threads() or "default"),
            "inter_op_threads": str(threading.get_inter_op_parallelism_threads() or "default"),
            "op_determinism": "on"}


def configure_torch(threads: int, device: str | None = None) -> dict[str, str]:
    """``threads`` intra-op threads, one inter-op thread, deterministic algorithms on; OpenMP's
    idle threads sleep (``OMP_WAIT_POLICY=PASSIVE`` unless set) when torch is not loaded yet.

    Idle OpenMP threads spin by default: beside another busy process on a 2-core machine the
    spinning threads take the cores the working one needs (``python -m runners.bench.phase
    --load`` measures it). ``device`` (``ptycho.torch.device``; None: the CPU) is checked here,
    before any work. On a CUDA device cuBLAS gets its fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set) and determinism is ``warn_only``: the
    gathers' backward (a multi-dimensional scatter-add) has no deterministic CUDA kernel, and a
    GPU run must not stop on it. Returns {'threads', 'inter_op_threads', 'op_determinism',
    'omp_wait_policy', 'device'} as in force afterwards.
    """
    import sys

    if "torch" not in sys.modules:  # OpenMP reads it once, when torch loads it
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    import torch
    from ptycho.torch.device import resolve_device

    resolved = resolve_device(device)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # set once per process, before any inter-op work
        pass
    on_gpu = resolved.type == "cuda"
    torch.use_deterministic_algorithms(True, warn_only=on_gpu)
    if on_gpu:  # cuBLAS reads it when its first handle is made, after this and before any work
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    return {"threads": str(torch.get_num_threads()), "inter_op_threads": str(torch.get_num_interop_threads()),
            "op_determinism": "warn_only" if on_gpu else "on",
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"), "device": str(resolved)}

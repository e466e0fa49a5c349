"""``python -m runners.phase`` with a full disk patched in, for tests/runner/test_disk_full.py.

    python tests/runner/filling_phase.py <step> <folder> <phase arguments...>

Right before the job writes at ``step``, the file system of ``folder`` is filled (a file of zeros
written there until the disk says ENOSPC), as another process on a shared disk would:
``data`` the simulated dataset's first file, ``weights`` the model's weights, ``bundle`` the
debug bundle's figures, ``inventory`` the GREEN section (C1, C2 and C3); ``guard log`` C1's guard
log, ``comparison`` Phase C2's comparison figure. In-process tests call :func:`install`.
"""
import dataclasses
import errno
import os
import runpy
import sys
from pathlib import Path

STEPS = ("data", "weights", "bundle", "inventory")
FILLER = "filler"

FILL_LIMIT_BYTES = 1 << 30  # 1 GiB: the tests mount file systems of a few MB


def fill(folder: Path) -> None:
    """Write zeros into ``folder/filler`` until the file system is full (down to its last 4 KiB page).

    Refuses a file system larger than FILL_LIMIT_BYTES: filling the machine's own disk (a mount that
    failed or went away) takes every other process on it down too."""
    stat = os.statvfs(folder)
    if stat.f_blocks * stat.f_frsize > FILL_LIMIT_BYTES:
        raise RuntimeError(f"fill: {folder} is on a file system of {stat.f_blocks * stat.f_frsize / 1e9:.1f} GB, "
                           f"not a small test file system (at most {FILL_LIMIT_BYTES / 1e6:.0f} MB): refusing to fill it")
    fd = os.open(Path(folder) / FILLER, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            block = b"\0" * size
            while True:
                try:
                    os.write(fd, block)
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    break
    finally:
        os.close(fd)


def _filling_first(function, folder: Path, once: bool = False):
    """``function`` that fills ``folder``'s file system first (``once``: at its first call only, as
    another process would; a job that writes again after making room finds that room)."""
    calls = []

    def filled(*args, **kwargs):
        if not (once and calls):
            fill(folder)
        calls.append(1)
        return function(*args, **kwargs)

    filled.fills = folder
    return filled


def install(step: str, folder: Path, patch=setattr) -> None:
    """Fill ``folder``'s file system right before the job writes at ``step`` (module docstring);
    ``patch`` sets the attributes (pytest's ``monkeypatch.setattr`` undoes them after a test)."""
    from runners.phases import c1
    from runners.evidence import outcome

    if step == "data":
        from ptycho.data import simulate

        patch(simulate, "save_npz", _filling_first(simulate.save_npz, folder))
    elif step == "weights":  # the backend's module is imported inside the job (its XLA mode)
        import_backend = c1.C1Run._import_backend

        def patched(self):
            workflow = import_backend(self)
            if not hasattr(workflow.BACKEND.save_weights, "fills"):  # once, and undone with the test's patches
                filled = _filling_first(workflow.BACKEND.save_weights, folder)
                patch(workflow, "BACKEND", dataclasses.replace(workflow.BACKEND, save_weights=filled))
            return workflow

        patch(c1.C1Run, "_import_backend", patched)
    elif step == "bundle":
        from ptycho.evaluation import bundle

        patch(bundle, "_write_figures", _filling_first(bundle._write_figures, folder))
    elif step == "inventory":
        patch(outcome, "mark_green", _filling_first(outcome.mark_green, folder))
    elif step == "guard log":  # the guard's log, written when training waits for the guard (C1)
        from runners.evidence import hub

        patch(hub, "write_guard_logs", _filling_first(hub.write_guard_logs, folder, once=True))
    elif step == "comparison":  # Phase C2's figure (imported inside the comparison step)
        from ptycho.evaluation import compare

        patch(compare, "comparison_figure", _filling_first(compare.comparison_figure, folder))
    else:
        raise ValueError(f"filling_phase: step must be one of {STEPS + ('guard log', 'comparison')}; got {step!r}")


if __name__ == "__main__":
    install(sys.argv[1], Path(sys.argv[2]))
    sys.argv = ["runners.phase", *sys.argv[3:]]
    runpy.run_module("runners.phase", run_name="__main__")

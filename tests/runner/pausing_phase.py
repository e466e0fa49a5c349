"""``python -m runners.phase`` with one pause patched in, for tests/runner/test_interrupts.py.

    python tests/runner/pausing_phase.py <where> [--mlflow-hangs] <phase arguments...>

``where``: ``step:<name>`` pauses right after the runner announces step <name> (``step: <name>``
in its log); ``bundle`` pauses inside the debug-bundle writer, once the files are staged and
before they move into place; ``compare`` pauses Phase C2 in its comparison. The pause prints ``paused at <where>`` and sleeps, so a test can
signal a run at a step that otherwise lasts milliseconds. ``isolated`` pauses nowhere: TensorFlow
is imported first, under this process's XLA environment, so an ``xla=off`` job runs in a fresh
process (``runners.process.xla.run_isolated``). ``--mlflow-hangs``: MLflow's ``set_terminated`` never
answers (a tracking store that went silent).
"""
import runpy
import sys
import time

PAUSE_S = 120


def pause(where: str) -> None:
    print(f"paused at {where}", flush=True)
    time.sleep(PAUSE_S)


def pause_after_step(name: str) -> None:
    from runners.phases import c1

    announce = c1.C1Run._step

    def step(self, current):
        announce(self, current)
        if current == name:
            pause(f"step:{name}")

    c1.C1Run._step = step


def pause_in_bundle_writer() -> None:
    from ptycho.evaluation import bundle

    write_figures = bundle._write_figures

    def figures(*args, **kwargs):
        write_figures(*args, **kwargs)
        pause("bundle")

    bundle._write_figures = figures


def pause_in_comparison() -> None:
    """Phase C2 pauses in its comparison step (its MLflow run is open)."""
    from ptycho.evaluation import compare

    compare_bundles = compare.compare_bundles

    def paused(*args, **kwargs):
        pause("compare")
        return compare_bundles(*args, **kwargs)

    compare.compare_bundles = paused


def silence_mlflow_end() -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient.set_terminated = lambda *args, **kwargs: time.sleep(PAUSE_S)


if __name__ == "__main__":
    where, *arguments = sys.argv[1:]
    if "--mlflow-hangs" in arguments:
        arguments.remove("--mlflow-hangs")
        silence_mlflow_end()
    if where.startswith("step:"):
        pause_after_step(where.removeprefix("step:"))
    elif where == "bundle":
        pause_in_bundle_writer()
    elif where == "compare":
        pause_in_comparison()
    elif where == "isolated":
        import tensorflow  # noqa: F401  (loaded here, under another XLA environment than the job's)
    else:
        sys.exit(f"pausing_phase.py: unknown pause {where!r} (step:<name>, bundle, compare or isolated)")
    sys.argv = ["runners.phase", *arguments]
    runpy.run_module("runners.phase", run_name="__main__", alter_sys=True)

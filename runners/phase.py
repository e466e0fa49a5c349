"""``python -m runners.phase``: the Hydra entry point of the phase runner.

Thin on purpose: compose (Hydra) -> validate into a typed PhaseConfig -> run the phase.
TensorFlow, MLflow and the science core are imported inside the job only, so ``--help``
is quick and the job's XLA environment (``hydra.job.env_set``) is in place before
TensorFlow reads it. Exit status: 0 green; 1 blocked (last line: the blocker path) or
a config error (the message names the key).
"""
from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from runners.evidence import PhaseRecord
from runners.job import JobContext
from runners.outcome import PhaseConfigError, blockers_seen
from runners.schema import register_configs, to_spec

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="phase")
def main(cfg: DictConfig) -> PhaseRecord:
    from runners.phases import run_phase

    job = JobContext.from_hydra()
    try:
        spec = to_spec(cfg)
    except ValueError as exc:
        raise PhaseConfigError(str(exc)) from exc
    return run_phase(spec, job)


def cli() -> None:
    """Hydra's main, then one ``blocker: <path>`` line per blocked job as the last output."""
    try:
        main()
    except SystemExit as exit_:
        if exit_.code:
            for path in blockers_seen():
                sys.stderr.write(f"blocker: {path}\n")
        raise


if __name__ == "__main__":
    cli()

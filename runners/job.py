"""Where a phase job stands: launch folder, output folder, overrides, sweep membership."""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from runners import sweep
from runners.process.xla import ParentJob, parent_job_from_env


@dataclass(frozen=True)
class JobContext:
    """One Hydra job. ``parent`` is set when this process is an isolated re-run of a job."""

    launch_dir: Path
    output_dir: Path
    overrides: tuple[str, ...]
    job_num: int
    sweep_dir: Path | None
    sweep: sweep.SweepContext | None
    parent: ParentJob | None

    @classmethod
    def from_hydra(cls) -> "JobContext":
        """The context of the job Hydra is running now (call inside the task function or a callback)."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        launch_dir = Path(hydra_cfg.runtime.cwd)
        sweep_dir = (launch_dir / hydra_cfg.sweep.dir).resolve() if multirun else None
        return cls(
            launch_dir=launch_dir,
            output_dir=Path(hydra_cfg.runtime.output_dir),
            overrides=tuple(hydra_cfg.overrides.task),
            job_num=int(hydra_cfg.job.get("num", 0)),
            sweep_dir=sweep_dir,
            sweep=sweep.read_context(sweep_dir) if sweep_dir else None,
            parent=parent_job_from_env(),
        )

    @property
    def multirun(self) -> bool:
        return self.sweep_dir is not None

    @property
    def command(self) -> str:
        """The command that reruns exactly this job."""
        if self.parent is not None:
            return self.parent.command
        text = shlex.join(["python", "-m", "runners.phase", *self.overrides])
        return f"{text}  # job {self.job_num} of the multirun in {self.sweep_dir}" if self.multirun else text

    @property
    def parent_run_id(self) -> str | None:
        """The MLflow run this job's run is a child of (the sweep's parent run)."""
        if self.parent is not None:
            return self.parent.parent_run_id
        return self.sweep.parent_run_id if self.sweep else None

    def slot_suffix_keys(self) -> list[str] | None:
        """Swept keys that name this job's slot; None in a multirun without a sweep context."""
        if not self.multirun:
            return []
        return self.sweep.swept_keys if self.sweep else None

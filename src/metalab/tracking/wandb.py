"""Weights & Biases through Lightning's WandbLogger: offline unless the user goes online,
one run per run folder (its id is kept there, so a resumed run continues the same W&B run)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from metalab.run import launch
from metalab.tasks import KINDS, task_kind


def run_tags(cfg: DictConfig) -> list[str]:
    """Tags that let the W&B run table filter by what was run."""
    d = cfg.dataset
    shape = f"{d.shots}shot"
    if task_kind(d.task).has_classes:
        shape = f"{d.ways}way-{shape}"
    return [cfg.algorithm.name, d.name, cfg.backbone.name, shape, *cfg.get("tags", [])]


def run_id(run_dir: Path) -> str | None:
    """The W&B run id of this run folder, created on first use; None on the ranks that do not
    log (so srun's tasks never race to create it)."""
    if launch.global_rank() != 0:
        return None
    path = run_dir / "wandb_id.txt"
    if not path.exists():
        path.write_text(sweep_agent_run() or secrets.token_hex(4))
    return path.read_text().strip()


def sweep_agent_run() -> str | None:
    """The run id a W&B sweep agent (`wandb agent`) started this process for, else None."""
    return os.environ.get("WANDB_RUN_ID") if os.environ.get("WANDB_SWEEP_ID") else None


def wandb_logger(
    cfg: DictConfig,
    run_dir: Path,
    project: str,
    mode: str,
    job_type: str = "train",
    group: str | None = None,
    entity: str | None = None,
) -> WandbLogger:
    if sweep_agent_run():  # the agent's sweep learns from what the run reports online
        mode = "online"
    logger = WandbLogger(
        project=project,
        entity=entity,
        name=cfg.run_name,
        group=group,
        job_type=job_type,
        tags=run_tags(cfg),
        save_dir=str(run_dir),
        id=run_id(run_dir),
        mode=mode,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    define_summaries(logger.experiment)
    return logger


def define_summaries(run) -> None:
    """Best-so-far validation summaries: the W&B run table and parallel-coordinates view then
    rank runs (and sweeps) by them without extra work. Lightning logs against this step."""
    for metric, summary in (*(kind.monitor for kind in KINDS.values()), ("val/loss", "min")):
        run.define_metric(metric, step_metric="trainer/global_step", summary=summary)

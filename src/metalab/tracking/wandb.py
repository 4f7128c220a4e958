"""Weights & Biases through Lightning's WandbLogger: offline unless the user goes online,
one run per run folder (its id is kept there, so a resumed run continues the same W&B run)."""

from __future__ import annotations

import secrets
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger


def run_tags(cfg: DictConfig) -> list[str]:
    """Tags that let the W&B run table filter by what was run."""
    d = cfg.dataset
    shape = f"{d.shots}shot"
    if d.task == "classification":
        shape = f"{d.ways}way-{shape}"
    return [cfg.algorithm.name, d.name, cfg.backbone.name, shape, *cfg.get("tags", [])]


def run_id(run_dir: Path) -> str:
    """The W&B run id of this run folder, created on first use."""
    path = run_dir / "wandb_id.txt"
    if not path.exists():
        path.write_text(secrets.token_hex(4))
    return path.read_text().strip()


def wandb_logger(cfg: DictConfig, run_dir: Path, project: str, mode: str, job_type: str = "train",
                 group: str | None = None, entity: str | None = None) -> WandbLogger:
    return WandbLogger(
        project=project, entity=entity, name=cfg.run_name, group=group, job_type=job_type,
        tags=run_tags(cfg), save_dir=str(run_dir), id=run_id(run_dir), mode=mode,
        config=OmegaConf.to_container(cfg, resolve=True),
    )

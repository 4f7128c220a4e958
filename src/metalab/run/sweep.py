"""Jobs of a Hydra multirun: grid sweeps (`-m key=a,b`) and Optuna searches (conf/search/).

Every job is its own W&B run, grouped by the sweep folder's name; a failed job leaves its error in
<job>/error.txt and the sweep goes on; a job returns the search objective, its best validation
metric.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from metalab.errors import ConfigError, user_error
from metalab.tasks import task_kind

SESSION_VAR = "METALAB_SEARCH_SESSION"

if not OmegaConf.has_resolver("metalab_direction"):  # conf/search: the objective's direction
    OmegaConf.register_new_resolver("metalab_direction", lambda task: task_kind(task).direction)


class SearchSession(Callback):
    """Starts an Optuna search (conf/search): refuses one without validation episodes, which
    has nothing to optimise; creates the sweep folder, where the study's SQLite file lives, before
    the sweeper opens it; and gives each invocation a folder of its own for its jobs
    (<sweep>/<start time>/<n>): job numbers restart at 0 when a study is continued, and
    resume=auto must not resume an earlier trial's checkpoint."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if config.val_episodes == 0:  # before any study or job
            err = ConfigError(
                "val_episodes",
                0,
                "an Optuna search optimises the validation metric: use val_episodes > 0",
            )
            print(f"metalab-train: error: {err}", file=sys.stderr)
            sys.exit(2)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        session = time.strftime("%Y-%m-%d_%H-%M-%S")
        try:
            (sweep_dir / session).mkdir()
        except FileExistsError:  # another worker of the same study started in this second
            session += f"_{os.getpid()}"
        os.environ[SESSION_VAR] = session


def run_job(cfg: DictConfig, run_dir: Path) -> float | None:
    """One job of a multirun. A failure returns None, which the Optuna sweeper records as a
    failed trial and the grid sweeper ignores. A pruned trial (metalab.run.pruning) leaves
    <job>/pruned.txt and a W&B run marked pruned, and raises optuna.TrialPruned to the sweeper."""
    from metalab.run.training import run

    wandb_cfg = OmegaConf.select(cfg, "logger.wandb")
    if wandb_cfg is not None and wandb_cfg.group is None:
        wandb_cfg.group = Path(HydraConfig.get().sweep.dir).name
    for stale in ("error.txt", "pruned.txt"):  # from an earlier try of this job
        (run_dir / stale).unlink(missing_ok=True)
    try:
        run(cfg, run_dir)
    except Exception as err:
        if is_pruned(err):
            record_pruned(run_dir, str(err))
            raise
        finish_wandb_run(exit_code=1)
        record_failure(run_dir, err)
        return None
    finish_wandb_run(exit_code=0)
    return best_validation(run_dir)


def finish_wandb_run(exit_code: int) -> None:
    """The jobs share this process: end this job's W&B run before the next job starts one."""
    wandb = sys.modules.get("wandb")
    if wandb is not None:
        wandb.finish(exit_code=exit_code)


def is_pruned(err: Exception) -> bool:
    optuna = sys.modules.get("optuna")  # only a pruned search raises it, after importing optuna
    return optuna is not None and isinstance(err, optuna.TrialPruned)


def record_pruned(run_dir: Path, reason: str) -> None:
    """A pruned trial's run: no test phase, no results.json; pruned.txt and W&B say why."""
    (run_dir / "pruned.txt").write_text(reason + "\n")
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.run.summary.update({"status": "pruned", "pruned": reason})
        wandb.run.tags = (*wandb.run.tags, "pruned")
    finish_wandb_run(exit_code=0)
    print(f"metalab-train: trial {reason} (see {run_dir / 'pruned.txt'})", file=sys.stderr)


def record_failure(run_dir: Path, err: Exception) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "error.txt").write_text("".join(traceback.format_exception(err)))
    reason = user_error(err) or f"{type(err).__name__}: {err}"
    print(
        f"metalab-train: job failed, the sweep goes on: {reason} "
        f"(traceback in {run_dir / 'error.txt'})",
        file=sys.stderr,
    )


def best_validation(run_dir: Path) -> float | None:
    """The best validation metric (val/acc, or val/mse for regression), as the checkpoint
    callback that keeps best.ckpt holds it there; None for runs without validation."""
    import torch

    best = run_dir / "checkpoints" / "best.ckpt"
    if not best.is_file():
        return None
    ckpt = torch.load(best, map_location="cpu", weights_only=True, mmap=True)
    for key, state in ckpt.get("callbacks", {}).items():
        score = state.get("best_model_score") if key.startswith("ModelCheckpoint") else None
        if score is not None and math.isfinite(float(score)):
            return float(score)
    return None

"""Pruning of Optuna trials: a run started by the Optuna sweeper (hydra.sweeper.pruner set)
reports its validation metric to its trial at every validation and stops when the pruner says
so; the sweep job then records the trial as pruned (sweep.run_job)."""

from __future__ import annotations

import math
import os

import pytorch_lightning as pl

from hydra_plugins.metalab_optuna_sweeper.config import TRIAL_VAR


def trial_callbacks(metric: str) -> list[pl.Callback]:
    """A TrialPruning callback in a run of a pruned search, else nothing. Every rank gets one
    (they stop together); rank 0 holds the trial."""
    number = os.environ.get(TRIAL_VAR)  # set by the sweeper when it prunes
    if number is None:
        return []
    from metalab.run import launch

    trial = None
    if launch.global_rank() == 0:
        from hydra_plugins.metalab_optuna_sweeper._impl import job_trial

        trial = job_trial(int(number))
    return [TrialPruning(trial, metric)]


class TrialPruning(pl.Callback):
    """Reports `metric` after each validation (step: the global training step); when the trial
    should be pruned, stops training on every rank and raises optuna.TrialPruned at the end of
    fit, so the test phase is skipped."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric
        self.pruned: str | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        reason = None
        if self.trial is not None:
            value = trainer.callback_metrics.get(self.metric)
            if value is not None and math.isfinite(float(value)):
                step = trainer.global_step
                self.trial.report(float(value), step)
                if self.trial.should_prune():
                    reason = f"pruned at step {step}: {self.metric}={float(value):.4f}"
        reason = trainer.strategy.broadcast(reason)
        if reason is not None:
            self.pruned = reason
            trainer.should_stop = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.pruned is not None:
            import optuna

            raise optuna.TrialPruned(self.pruned)

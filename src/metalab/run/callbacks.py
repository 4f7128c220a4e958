"""Callbacks of a run: speed and memory figures (logged, and kept in results.json), the stop on a
non-finite training loss, and the progress bar."""

from __future__ import annotations

import resource
import statistics
import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar

from metalab.errors import RunError


class SpeedMonitor(pl.Callback):
    """Tasks (or images, in pretraining) per second of the training steps (median, warm-up
    excluded) and peak memory."""

    def __init__(self, meta_batch: int, unit: str = "tasks", warmup: int = 3):
        self.meta_batch, self.unit, self.warmup = meta_batch, unit, warmup
        self.step_times: list[float] = []
        self._start = 0.0
        self.device = torch.device("cpu")

    def on_train_start(self, trainer, pl_module):
        # remembered here: Lightning moves the module back to the CPU when fit/test end
        self.device = pl_module.device
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def _sync(self, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._sync(pl_module)
        self.step_times.append(time.perf_counter() - self._start)

    def summary(self) -> dict[str, float]:
        timed = self.step_times[self.warmup :] or self.step_times
        if not timed:
            return {}
        out = {f"perf/{self.unit}_per_sec": self.meta_batch / statistics.median(timed)}
        if self.device.type == "cuda":
            out["perf/peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:  # peak resident memory of this process (Linux reports KiB)
            out["perf/peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return out


class StopOnNonFiniteLoss(pl.Callback):
    """A NaN or infinite training loss ends the run at once, naming the step (the step column
    of metrics.csv), instead of training on and reporting a broken model as a result. All
    ranks decide together, so none is left waiting for the others."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # manual optimisation (meta-RL) returns nothing: there is no loss to check
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        bad = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        if trainer.strategy.reduce_boolean_decision(bad, all=False):
            value = f"{float(loss):g}" if bad else "not finite on another process"
            lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups][:1]
            raise RunError(
                f"the training loss is {value} at step {trainer.global_step - 1}: "
                f"the run diverged (learning rate {', '.join(map(str, lrs))}); "
                "lower algorithm.optimizer.lr, or resume from an earlier checkpoint "
                "with ckpt_path="
            )


class ResumedLogSteps(pl.Callback):
    """A resumed run logs each step under its own number. Lightning adds one to the logging step
    it restores (it assumes the count was saved before the step's increment, which it no longer
    is), so a run resumed at step 3 logged its steps as 4, 5... and metrics.csv skipped step 3.
    One optimizer step per batch: the logging step is the global step."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        trainer.fit_loop.epoch_loop._batches_that_stepped = trainer.global_step


class StepProgressBar(RichProgressBar):
    """Counts training steps (meta-training's batches of tasks, pretraining's batches of
    images) out of ``steps``, with the validation metric so far beside it. Lightning's bar counts
    the batches of an epoch, which here is only the stretch between two validations, under
    "Epoch 0/-2" (the run is bounded by steps, not epochs)."""

    @property
    def total_train_batches(self) -> int:
        return self.trainer.max_steps

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Training steps':{len(self.validation_description)}}"

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        super().on_train_epoch_start(trainer, pl_module)  # a new bar, from 0
        if self.progress is not None and self.train_progress_bar_id is not None:
            # from the step reached, so that the rate counts only this stretch's steps
            self.progress.reset(self.train_progress_bar_id, completed=trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # RichProgressBar's, with the global step where it puts the batch's number in the epoch
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # a run resumed in the middle of an epoch
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

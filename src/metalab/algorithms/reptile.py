"""Reptile (Nichol, Achiam & Schulman 2018): k steps of SGD or Adam on each task of the
meta-batch, then move the initialisation towards the adapted weights:
``theta += eps * mean_i(theta'_i - theta)``, eps annealed linearly to 0.

The outer update is a pseudo-gradient, ``theta - mean_i theta'_i``, handed to the configured
outer optimizer (SGD with lr=eps, a LinearLR schedule for the annealing), so Lightning's automatic
optimization, checkpointing and DDP (which averages the gradients of the ranks, i.e. takes the
mean over the global meta-batch) work unchanged."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from metalab.algorithms.gradient import GradientMetaLearner
from metalab.algorithms.inner_loop import SGD, Adam, Mode
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError, require_positive


class Reptile(GradientMetaLearner):
    engines = ("auto", "loop", "vmap")

    def __init__(
        self,
        backbone,
        inner_optimizer: str = "adam",
        inner_lr: float = 0.001,
        inner_steps: int = 5,
        eval_inner_steps: int = 50,
        inner_betas: Sequence[float] = (0.0, 0.999),
        inner_batch: int | None = None,
        **kwargs,
    ):
        super().__init__(
            backbone,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            eval_inner_steps=eval_inner_steps,
            **kwargs,
        )
        if inner_optimizer not in ("sgd", "adam"):
            raise ConfigError("algorithm.inner_optimizer", inner_optimizer, "allowed: sgd, adam")
        if inner_batch is not None:
            require_positive("algorithm.inner_batch", inner_batch)
        self.inner_optimizer, self.inner_betas = inner_optimizer, tuple(inner_betas)
        self.inner_batch = inner_batch

    def rule(self) -> SGD | Adam:
        if self.inner_optimizer == "adam":
            return Adam(self.inner_lr, self.inner_betas)
        return SGD(self.inner_lr)

    def minibatches(self, n: int, steps: int) -> list[torch.Tensor] | None:
        """Support indices of each inner step: shuffled passes over the support set in
        ``inner_batch``-sized pieces (the same for every task of the batch); None: full batch."""
        if self.inner_batch is None or self.inner_batch >= n:
            return None
        order = torch.cat([torch.randperm(n) for _ in range(-(-steps * self.inner_batch // n))])
        return list(order[: steps * self.inner_batch].to(self.device).split(self.inner_batch))

    def adapt(self, episodes: Episodes, training: bool) -> tuple[torch.Tensor, dict | None]:
        steps = self.inner_steps if training else self.eval_inner_steps
        batches = self.minibatches(episodes.support_x.shape[1], steps) if training else None
        return self.adapt_and_predict(
            episodes, steps, Mode.DETACHED, training, batches=batches, return_params=training
        )

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        if not training:
            self.check_ways(episodes)
        return self.adapt(episodes, training)[0]

    def meta_loss(self, episodes: Episodes) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A surrogate whose gradient is ``theta - mean_i theta'_i``; metrics: the query loss
        and accuracy (MSE) of the adapted weights."""
        preds, adapted = self.adapt(episodes, training=True)
        metrics = self.task_metrics(preds, episodes.query_y)
        # a head that every task starts from zero (head_init: zero) is not meta-learned: its
        # pseudo-gradient is zero
        surrogate = sum(
            (p * (p - (p if name in self.zeroed else adapted[name].mean(0))).detach()).sum()
            for name, p in self.net.named_parameters()
        )
        return surrogate, metrics

"""MAML (Finn et al. 2017): learn an initialisation from which a few gradient steps on a task's
support set fit the task. Second order by default; ``first_order: true`` is first-order MAML
(the ``fomaml`` preset); ``learn_inner_lr: true`` learns one inner learning rate per parameter
entry (Meta-SGD, Li et al. 2017). The inner loop is inner_loop.py (engine: loop, fused, vmap,
learn2learn or auto); ``checkpoint: true`` recomputes each task's query forward in the backward
pass instead of keeping its activations (less memory, a per-task engine)."""

from __future__ import annotations

import torch
from torch import nn

from metalab.algorithms.gradient import GradientMetaLearner
from metalab.algorithms.inner_loop import SGD, Mode, resolve_engine
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError


class MAML(GradientMetaLearner):
    def __init__(
        self,
        backbone,
        first_order: bool = False,
        learn_inner_lr: bool = False,
        checkpoint: bool = False,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        self.first_order, self.learn_inner_lr = bool(first_order), bool(learn_inner_lr)
        if not isinstance(checkpoint, bool):
            raise ConfigError("algorithm.checkpoint", checkpoint, "true or false")
        self.checkpoint = checkpoint
        resolve_engine(self.engine, torch.device("cpu"), checkpoint)  # a per-task engine?
        if learn_inner_lr and self.engine == "learn2learn":
            raise ConfigError(
                "algorithm.engine",
                self.engine,
                "learn_inner_lr=true needs engine loop, fused, vmap or auto",
            )
        # Meta-SGD: a learned learning rate per parameter entry, initialised to inner_lr
        self.inner_lrs = (
            nn.ParameterDict(
                {
                    _key(name): nn.Parameter(torch.full_like(p, self.inner_lr))
                    for name, p in self.adapted().named_parameters()
                }
            )
            if learn_inner_lr
            else None
        )

    def rule(self) -> SGD:
        if self.inner_lrs is None:
            return SGD(self.inner_lr)
        return SGD(
            {name: self.inner_lrs[_key(name)] for name, _ in self.adapted().named_parameters()}
        )

    def mode_and_steps(self, episodes: Episodes, training: bool) -> tuple[Mode, int]:
        if training:
            return Mode.FIRST_ORDER if self.first_order else Mode.SECOND_ORDER, self.inner_steps
        self.check_ways(episodes)
        return Mode.DETACHED, self.eval_inner_steps

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        mode, steps = self.mode_and_steps(episodes, training)
        checkpoint = self.checkpoint and training
        return self.adapt_and_predict(episodes, steps, mode, training, checkpoint=checkpoint)[0]


def _key(name: str) -> str:
    return name.replace(".", "__")  # parameter names cannot contain dots

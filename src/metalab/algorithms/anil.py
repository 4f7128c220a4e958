"""ANIL (Raghu, Raghu, Bengio & Vinyals 2020, "Rapid Learning or Feature Reuse?"): MAML whose
inner loop adapts only the head. The backbone's features of each task's support and query sets
are computed once per task (with the initial weights) and the inner loop (metalab.inner_loop:
loop, vmap or learn2learn) runs on the linear head over those features; the meta-gradient
reaches the backbone through the features, the head's adapted weights and (second order) the
inner gradients. All MAML options apply: ``first_order``, ``learn_inner_lr`` (Meta-SGD rates
for the head only), ``engine``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from metalab.algorithms.maml import MAML
from metalab.backbones.base import Backbone
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError


class ANIL(MAML):
    @classmethod
    def check_backbone(cls, backbone: type, name: str) -> None:
        if not (isinstance(backbone, type) and issubclass(backbone, Backbone)):
            raise ConfigError("backbone", name,
                              f"ANIL adapts the linear head of a metalab backbone (features + "
                              f"head), and {backbone.__module__}.{backbone.__qualname__} is not "
                              "one: use conv4, resnet12 or mlp")

    def adapted(self) -> nn.Module:
        return self.net.head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-task embeddings ``[B, n, D]``: one forward per task and per set, as MAML's
        inner and outer forwards (batch-norm statistics stay within the task's set)."""
        return torch.stack([self.net.embed(task) for task in x])

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        mode, steps = self.mode_and_steps(episodes, training)
        # evaluation adapts the head only: the backbone's graph is not needed
        with contextlib.nullcontext() if training else torch.no_grad():
            support, query = self.features(episodes.support_x), self.features(episodes.query_x)
        preds, _ = self.inner.run(self.inner.params(), support, episodes.support_y, query,
                                  steps, self.rule(), mode, self.engine)
        return preds

"""ANIL (Raghu, Raghu, Bengio & Vinyals 2020, "Rapid Learning or Feature Reuse?"): MAML whose
inner loop adapts only the head. The backbone's features of each task's support and query sets
are computed once per task (with the initial weights) and the inner loop (inner_loop.py:
loop, vmap or learn2learn) runs on the linear head over those features; the meta-gradient
reaches the backbone through the features, the head's adapted weights and (second order) the
inner gradients. All MAML options apply: ``first_order``, ``learn_inner_lr`` (Meta-SGD rates
for the head only), ``engine``."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from metalab.algorithms.maml import MAML
from metalab.data.episodes import Episodes


class ANIL(MAML):
    def adapted(self) -> nn.Module:
        return self.net.head

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        mode, steps = self.mode_and_steps(episodes, training)
        protocol = self.protocol_for(training)
        embed = self.net.embed
        # One forward per task and per set, as MAML's inner and outer forwards: the support
        # set alone, the queries under the protocol (transductive: the query set alone).
        # Evaluation adapts the head only: the backbone's graph is not needed.
        with contextlib.nullcontext() if training else torch.no_grad():
            support = torch.stack([embed(s) for s in episodes.support_x])
            query = torch.stack(
                [
                    protocol.queries(embed, s, q)
                    for s, q in zip(episodes.support_x, episodes.query_x)
                ]
            )
        preds, _ = self.inner.run(
            self.start_params(),
            support,
            episodes.support_y,
            query,
            steps,
            self.rule(),
            mode,
            self.engine,
        )
        return preds

"""Shared by the metric and closed-form-head methods (R2-D2, MetaOptNet, Matching and Relation
Networks): a backbone without a head embeds each task's support and query sets, and a
per-task classifier turns the embeddings into query scores."""

from __future__ import annotations

import torch

from metalab.algorithms.base import MetaLearner
from metalab.data.episodes import Episodes


class EmbeddingLearner(MetaLearner):
    tasks = ("classification",)

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.net = backbone(out_dim=None)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of one task's images (flat vectors; Relation Networks keep the maps)."""
        return self.net.embed(x)

    def classify(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                 ways: int) -> torch.Tensor:
        """Query scores ``[Nq, ways]`` of one task from its embeddings."""
        raise NotImplementedError

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        ways = int(episodes.support_y.max()) + 1
        scores = []
        for task in range(episodes.num_tasks):  # one forward per task: batch-norm statistics
            s, q = episodes.support_x[task], episodes.query_x[task]  # stay within the task
            z = self.embed(torch.cat([s, q]))
            scores.append(self.classify(z[: len(s)], episodes.support_y[task], z[len(s):], ways))
        return torch.stack(scores)

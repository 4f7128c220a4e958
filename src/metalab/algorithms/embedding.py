"""Shared by the metric and closed-form-head methods (R2-D2, MetaOptNet, Matching and Relation
Networks): a backbone without a head embeds each task's support and query sets, and a
per-task classifier turns the embeddings into query scores."""

from __future__ import annotations

import torch

from metalab.algorithms.base import MetaLearner
from metalab.data.episodes import Episodes
from metalab.tasks import CLASSIFICATION


class EmbeddingLearner(MetaLearner):
    tasks = (CLASSIFICATION.name,)
    #: the classifier itself mixes the queries it is given (Relation Networks' batch norm):
    #: an inductive protocol then scores one query at a time
    mixes_queries = False

    def __init__(self, backbone, **kwargs):
        super().__init__(**kwargs)
        self.net = backbone(out_dim=None)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of one task's images (flat vectors; Relation Networks keep the maps)."""
        return self.net.embed(x)

    def classify(
        self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int
    ) -> torch.Tensor:
        """Query scores ``[Nq, ways]`` of one task from its embeddings."""
        raise NotImplementedError

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        ways = int(episodes.support_y.max()) + 1
        protocol, scores = self.protocol_for(training), []
        for task in range(episodes.num_tasks):  # one forward per task: batch-norm statistics
            s, q = episodes.support_x[task], episodes.query_x[task]  # stay within the task
            zs, zq = protocol.embed(self.embed, s, q)  # (metalab.algorithms.protocols)
            labels = episodes.support_y[task]
            if zs.dim() > zq.dim():  # support_plus_query: each query has its own support set
                scores.append(
                    torch.cat(
                        [self.classify(zs[i], labels, zq[i : i + 1], ways) for i in range(len(zq))]
                    )
                )
            elif self.mixes_queries and protocol.name == "inductive":
                scores.append(
                    torch.cat(
                        [self.classify(zs, labels, zq[i : i + 1], ways) for i in range(len(zq))]
                    )
                )
            else:
                scores.append(self.classify(zs, labels, zq, ways))
        return torch.stack(scores)

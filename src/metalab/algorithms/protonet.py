"""Prototypical Networks (Snell et al. 2017): classify queries by squared Euclidean distance
to the mean embedding (prototype) of each class's support examples. ``distance=cosine``:
Meta-Baseline's (Chen et al. 2021) cosine similarity times a learned temperature."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metalab.algorithms.base import MetaLearner
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError
from metalab.tasks import CLASSIFICATION

DISTANCES = ("euclidean", "cosine")


def prototype_logits(
    support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int
) -> torch.Tensor:
    """Negative squared distances ``[Nq, ways]`` from query embeddings ``[Nq, D]`` to class
    prototypes; ``support`` is ``[Ns, D]``, or ``[Nq, Ns, D]`` for a support set per query."""
    onehot = F.one_hot(labels, ways).to(support.dtype)  # [Ns, ways]
    prototypes = onehot.T @ support / onehot.sum(0)[:, None]  # [ways, D] or [Nq, ways, D]
    return -(query[:, None, :] - prototypes).pow(2).sum(-1)


def cosine_prototype_logits(
    support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int
) -> torch.Tensor:
    """Cosine similarities ``[Nq, ways]`` of query embeddings ``[Nq, D]`` to the prototypes
    (``support`` as in prototype_logits)."""
    onehot = F.one_hot(labels, ways).to(support.dtype)
    prototypes = onehot.T @ support / onehot.sum(0)[:, None]
    return F.cosine_similarity(query[:, None, :], prototypes, dim=-1)


class ProtoNet(MetaLearner):
    tasks = (CLASSIFICATION.name,)

    def __init__(
        self,
        backbone,
        distance: str = "euclidean",
        scale: float = 10.0,
        learn_scale: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if distance not in DISTANCES:
            raise ConfigError("algorithm.distance", distance, f"allowed: {', '.join(DISTANCES)}")
        self.net = backbone(out_dim=None)
        self.distance = distance
        if distance == "cosine":  # Meta-Baseline's temperature, learned
            scale = torch.tensor(float(scale))
            if learn_scale:
                self.scale = torch.nn.Parameter(scale)
            else:
                self.register_buffer("scale", scale)

    def predict(self, episodes: Episodes, training: bool) -> torch.Tensor:
        ways = int(episodes.support_y.max()) + 1
        protocol, logits = self.protocol_for(training), []
        for task in range(episodes.num_tasks):  # one forward per task: batch-norm statistics
            s, q = episodes.support_x[task], episodes.query_x[task]  # stay within the task
            zs, zq = protocol.embed(self.net.embed, s, q)
            if self.distance == "cosine":
                logits.append(
                    self.scale * cosine_prototype_logits(zs, episodes.support_y[task], zq, ways)
                )
            else:
                logits.append(prototype_logits(zs, episodes.support_y[task], zq, ways))
        return torch.stack(logits)

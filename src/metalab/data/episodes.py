"""Episodes: the batch of few-shot tasks that flows from the sampler to the algorithms, and the
shape of an episode as the config sets it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from omegaconf import DictConfig


class Episodes(NamedTuple):
    """A batch of B tasks. Classification: x ``[B, n, C, H, W]`` float (images) or ``[B, n, L]``
    int64 token ids (text, 0 = padding), y ``[B, n]`` int64 in ``0..ways-1``. Regression:
    x ``[B, n, 1]``, y ``[B, n, 1]`` float."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    @property
    def num_tasks(self) -> int:
        return self.support_x.shape[0]

    def task(self, i: int) -> Episodes:
        return Episodes(*(t[i] for t in self))

    def tasks(self, start: int, stop: int) -> Episodes:
        return Episodes(*(t[start:stop] for t in self))


@dataclass(frozen=True)
class EpisodeShape:
    """Classes per task (1 without classes), support and query samples per class: the evaluation
    shape (``dataset.ways/shots/queries``) or, ``training``, the ``dataset.train_*`` one."""

    ways: int
    shots: int
    queries: int
    training: bool = False

    @classmethod
    def of(cls, dataset: DictConfig, training: bool) -> EpisodeShape:
        eval_ways = dataset.get("ways", 1)
        if not training:
            return cls(eval_ways, dataset.shots, dataset.queries)
        # RL datasets have no train_* keys: the evaluation shape
        return cls(
            dataset.get("train_ways", eval_ways),
            dataset.get("train_shots", dataset.shots),
            dataset.get("train_queries", dataset.queries),
            training=True,
        )

    def key(self, what: str) -> str:
        """The config key of ``what`` (ways, shots or queries) in this shape."""
        return f"dataset.{'train_' if self.training else ''}{what}"

    @property
    def sizes(self) -> tuple[int, int, int]:
        return self.ways, self.shots, self.queries

"""Episodes: the batch of few-shot tasks that flows from the sampler to the algorithms."""

from __future__ import annotations

from typing import NamedTuple

import torch


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

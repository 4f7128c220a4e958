"""Shared backbone shape: ``features`` (an embedding network) then ``head`` (linear or none)."""

from __future__ import annotations

import torch
from torch import nn


def batch_norm(channels: int) -> nn.BatchNorm2d:
    # Batch statistics in every pass, no running statistics: the MAML reference behaviour,
    # and it keeps a task's predictions independent of the other tasks in its batch.
    return nn.BatchNorm2d(channels, track_running_stats=False)


class Backbone(nn.Module):
    """``features`` maps inputs to a flat embedding; ``head`` maps it to ``out_dim`` outputs
    (``out_dim=None``: no head, the model is an embedding, as Prototypical Networks want)."""

    #: the kinds of input it takes (metalab.tasks.TaskKind.inputs): convolutions need ``[C, H, W]``
    inputs: tuple[str, ...] = ("image",)

    def __init__(self, features: nn.Module, in_shape, out_dim: int | None):
        super().__init__()
        self.features = features
        self.in_shape = tuple(in_shape)
        with torch.no_grad():  # size the head from a dry run: adapts to any input size
            self.feature_dim = self.embed(torch.zeros(2, *self.in_shape)).shape[1]
        self.head = nn.Linear(self.feature_dim, out_dim) if out_dim else nn.Identity()

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))

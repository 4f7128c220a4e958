"""Reference points for a trained model, computed on the same evaluation episodes."""

from __future__ import annotations

import torch

from metalab.data.episodes import Episodes


def pixel_nearest_neighbour(episodes: Episodes) -> torch.Tensor:
    """Per-task accuracy of 1-nearest-neighbour on raw pixels (Euclidean), no learning."""
    support, query = episodes.support_x.flatten(2), episodes.query_x.flatten(2)
    nearest = torch.cdist(query, support).argmin(dim=-1)
    predicted = episodes.support_y.gather(1, nearest)
    return (predicted == episodes.query_y).float().mean(dim=1)

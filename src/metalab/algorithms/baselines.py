"""Reference points for a trained model, computed on the same evaluation episodes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metalab.data.episodes import Episodes


def raw_input_baselines(episodes: Episodes) -> dict[str, torch.Tensor]:
    """The no-learning baseline that fits the inputs: raw pixels for images, bags of words for
    token ids; none for regression."""
    if episodes.support_x.dim() == 5:
        return {"pixel_1nn_acc": pixel_nearest_neighbour(episodes)}
    if not episodes.support_x.is_floating_point():
        return {"bow_1nn_acc": bag_of_words_nearest_neighbour(episodes)}
    return {}


def pixel_nearest_neighbour(episodes: Episodes) -> torch.Tensor:
    """Per-task accuracy of 1-nearest-neighbour on raw pixels (Euclidean), no learning."""
    support, query = episodes.support_x.flatten(2), episodes.query_x.flatten(2)
    nearest = torch.cdist(query, support).argmin(dim=-1)
    predicted = episodes.support_y.gather(1, nearest)
    return (predicted == episodes.query_y).float().mean(dim=1)


def bag_of_words_nearest_neighbour(episodes: Episodes) -> torch.Tensor:
    """Per-task accuracy of 1-nearest-neighbour by cosine similarity of token counts (padding,
    id 0, not counted), no learning: the text counterpart of raw pixels."""
    support, query = episodes.support_x, episodes.query_x
    # count over the ids that occur in these tasks only: a small dense [B, n, V] matrix
    present, ids = torch.unique(
        torch.cat([support.flatten(1), query.flatten(1)], 1), return_inverse=True
    )
    ids = ids.view(len(ids), -1, support.shape[-1])  # [B, n, L], indices into present
    counts = torch.zeros(*ids.shape[:2], len(present), device=ids.device)
    counts.scatter_add_(2, ids, torch.ones(ids.shape, device=ids.device))
    counts[..., present == 0] = 0
    counts = F.normalize(counts, dim=-1)
    s, q = counts[:, : support.shape[1]], counts[:, support.shape[1] :]
    nearest = (q @ s.transpose(1, 2)).argmax(dim=-1)
    predicted = episodes.support_y.gather(1, nearest)
    return (predicted == episodes.query_y).float().mean(dim=1)

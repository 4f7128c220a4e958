"""Relation Networks (Sung, Yang, Zhang, Xiang, Torr & Hospedales 2018, "Learning to
Compare"): a learned relation module scores each (class, query) pair of feature maps in [0, 1],
trained by mean squared error against the one-hot labels. A class is the mean of its support
feature maps (the paper sums them; easyfsl averages). The relation module is the paper's two
conv blocks and two fully connected layers, with adaptive max-pooling (as easyfsl) so that it
takes feature maps of any size, also the 1x1 maps of conv4 on 28x28 images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metalab.algorithms.embedding import EmbeddingLearner
from metalab.backbones.base import Backbone, batch_norm
from metalab.errors import ConfigError, require_positive


def relation_module(channels: int, hidden: int) -> nn.Sequential:
    """Scores a pair (class maps, query maps) concatenated along channels: ``[N, 2C, H, W]`` ->
    ``[N, 1]`` in [0, 1]."""
    return nn.Sequential(
        nn.Sequential(
            nn.Conv2d(2 * channels, channels, 3, padding=1),
            batch_norm(channels),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d((5, 5)),
        ),
        nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=0),
            batch_norm(channels),
            nn.ReLU(),
            nn.AdaptiveMaxPool2d((1, 1)),
        ),
        nn.Flatten(),
        nn.Linear(channels, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 1),
        nn.Sigmoid(),
    )


class RelationNetworks(EmbeddingLearner):
    mixes_queries = True  # the relation module's batch norm sees all the pairs it is given

    def __init__(self, backbone, hidden: int = 8, **kwargs):
        super().__init__(backbone, **kwargs)
        require_positive("algorithm.hidden", hidden)
        with torch.no_grad():
            channels = self.embed(torch.zeros(2, *self.net.in_shape)).shape[1]
        self.relation = relation_module(channels, hidden)

    @classmethod
    def check_backbone(cls, backbone: type, name: str) -> None:
        if not (
            isinstance(backbone, type)
            and issubclass(backbone, Backbone)
            and getattr(backbone, "feature_maps", backbone.inputs == ("image",))
        ):
            raise ConfigError(
                "backbone",
                name,
                "Relation Networks compare feature maps: they "
                "need a convolutional backbone (conv4, resnet12, wrn, resnet18)",
            )

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)  # the maps [n, C, H, W], not flattened

    def classify(self, support, labels, query, ways):
        onehot = F.one_hot(labels, ways).to(support.dtype)
        classes = torch.einsum("nk,nchw->kchw", onehot / onehot.sum(0), support)
        nq = len(query)
        pairs = torch.cat(
            [classes[None].expand(nq, -1, -1, -1, -1), query[:, None].expand(-1, ways, -1, -1, -1)],
            dim=2,
        )
        return self.relation(pairs.flatten(0, 1)).view(nq, ways)

    def task_metrics(self, preds, targets):
        """Accuracy as usual; the loss is the paper's MSE of the scores to the one-hot labels."""
        metrics = super().task_metrics(preds, targets)
        onehot = F.one_hot(targets, preds.shape[-1]).to(preds.dtype)
        metrics["loss"] = (preds - onehot).pow(2).flatten(1).mean(1)
        return metrics

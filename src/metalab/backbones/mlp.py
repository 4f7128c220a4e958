"""A fully connected network: MAML's sinusoid regressor (1-40-40-1), or flattened images."""

from __future__ import annotations

import math

from torch import nn

from metalab.backbones.base import Backbone


class MLP(Backbone):
    inputs = ("image", "vector")

    def __init__(self, in_shape, out_dim=None, hidden=(40, 40)):
        widths = [math.prod(in_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        super().__init__(nn.Sequential(*layers), in_shape, out_dim)

"""Conv4: the four 3x3 conv blocks of MAML and Prototypical Networks (64 channels each)."""

from __future__ import annotations

from torch import nn

from metalab.backbones.base import Backbone, batch_norm


def conv_block(c_in: int, c_out: int, max_pool: bool) -> nn.Sequential:
    # Without max-pooling, a stride-2 conv halves the size instead (MAML's Omniglot network).
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, stride=1 if max_pool else 2), batch_norm(c_out)]
    layers.append(nn.ReLU())
    if max_pool:
        layers.append(nn.MaxPool2d(2, ceil_mode=False))
    return nn.Sequential(*layers)


class Conv4(Backbone):
    def __init__(
        self, in_shape, out_dim=None, hidden: int = 64, layers: int = 4, max_pool: bool = True
    ):
        channels = [in_shape[0]] + [hidden] * layers
        blocks = [conv_block(a, b, max_pool) for a, b in zip(channels[:-1], channels[1:])]
        super().__init__(nn.Sequential(*blocks), in_shape, out_dim)

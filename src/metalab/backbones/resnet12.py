"""ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019): four residual blocks of three 3x3 convs."""

from __future__ import annotations

from torch import nn

from metalab.backbones.base import Backbone, batch_norm


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        convs = []
        for i in range(3):
            convs += [
                nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                batch_norm(c_out),
            ]
            if i < 2:
                convs.append(nn.LeakyReLU(0.1))
        self.body = nn.Sequential(*convs)
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), batch_norm(c_out))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x):
        return self.out(self.body(x) + self.shortcut(x))


class ResNet12(Backbone):
    def __init__(self, in_shape, out_dim=None, channels=(64, 160, 320, 640), avg_pool: bool = True):
        widths = [in_shape[0], *channels]
        blocks = [ResidualBlock(a, b) for a, b in zip(widths[:-1], widths[1:])]
        if avg_pool:
            blocks.append(nn.AdaptiveAvgPool2d(1))
        super().__init__(nn.Sequential(*blocks), in_shape, out_dim)

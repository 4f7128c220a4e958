"""Wide ResNet (Zagoruyko & Komodakis 2016): WRN-28-10 is the backbone of S2M2 and of several
pretrain-then-fine-tune baselines. Pre-activation basic blocks, three groups of (depth - 4) / 6
blocks with 16k, 32k and 64k channels (k = widen), global average pooling: 640 features for
WRN-28-10 on any image size."""

from __future__ import annotations

from torch import nn

from metalab.backbones.base import Backbone, batch_norm
from metalab.errors import ConfigError


class WideBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float):
        super().__init__()
        self.pre = nn.Sequential(batch_norm(c_in), nn.ReLU())
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            batch_norm(c_out),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        )
        self.shortcut = (
            None
            if c_in == c_out and stride == 1
            else nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
        )

    def forward(self, x):
        pre = self.pre(x)
        # a projection shortcut takes the pre-activated input, as in the authors' code
        return self.body(pre) + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(Backbone):
    def __init__(
        self, in_shape, out_dim=None, depth: int = 28, widen: int = 10, dropout: float = 0.0
    ):
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError("backbone.depth", depth, "must be 6n + 4 with n >= 1 (28: WRN-28)")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(in_shape[0], widths[0], 3, padding=1, bias=False)]
        for group, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                c_in = widths[group] if i == 0 else widths[group + 1]
                layers.append(WideBlock(c_in, widths[group + 1], stride if i == 0 else 1, dropout))
        layers += [batch_norm(widths[3]), nn.ReLU(), nn.AdaptiveAvgPool2d(1)]
        super().__init__(nn.Sequential(*layers), in_shape, out_dim)

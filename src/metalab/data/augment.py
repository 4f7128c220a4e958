"""Training-time augmentation of image batches on the training device.

The standard few-shot recipes (e.g. MetaOptNet, Lee et al. 2019) train with a random crop after
zero padding, a horizontal flip and colour jitter. Here they run on float images in ``[0, 1]``
(before normalisation), on whatever device the batch is on. The random choices are drawn on the
CPU from the given generator, so a fixed seed gives the same augmented tasks on any device.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from metalab.errors import ConfigError

__all__ = ["Augment", "augment", "build_augment"]


@dataclass(frozen=True)
class Augment:
    """The augmentation settings: ``crop_padding`` pixels of zero padding before a random crop
    back to the original size (0: off), a random horizontal ``flip`` with probability 1/2, and
    brightness, contrast and saturation factors drawn from ``[1 - j, 1 + j]`` (``color_jitter``
    j, 0: off)."""

    crop_padding: int = 0
    flip: bool = False
    color_jitter: float = 0.0

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip or self.color_jitter > 0

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return augment(x, gen, self.crop_padding, self.flip, self.color_jitter)


def augment(
    x: torch.Tensor,
    gen: torch.Generator,
    crop_padding: int = 0,
    flip: bool = False,
    color_jitter: float = 0.0,
) -> torch.Tensor:
    """Augment a float batch ``[N, C, H, W]`` in ``[0, 1]``; the input is never modified."""
    if crop_padding > 0:
        x = _random_crop(x, gen, crop_padding)
    if flip:
        x = _random_flip(x, gen)
    if color_jitter > 0:
        x = _color_jitter(x, gen, color_jitter)
    return x


def _random_crop(x: torch.Tensor, gen: torch.Generator, pad: int) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen).tolist()
    # Slices are views: one copy (the stack), faster than gathers on CPU and GPU alike.
    return torch.stack([p[:, t : t + h, s : s + w] for p, (t, s) in zip(padded, offsets)])


def _random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=gen) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 3:  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
        return (x[:, 0:1] * 0.299).add_(x[:, 1:2], alpha=0.587).add_(x[:, 2:3], alpha=0.114)
    return x.mean(1, keepdim=True)


def _color_jitter(x: torch.Tensor, gen: torch.Generator, j: float) -> torch.Tensor:
    """Brightness, contrast, then saturation (torchvision's ColorJitter, in a fixed order)."""
    n = len(x)
    factors = (1 - j + 2 * j * torch.rand(3, n, generator=gen)).to(x.device)
    brightness, contrast, saturation = factors.view(3, n, 1, 1, 1)
    x = (x * brightness).clamp_(0, 1)  # a new tensor: the in-place steps below are safe
    mean = _gray(x).mean(dim=(2, 3), keepdim=True)
    x = x.sub_(mean).mul_(contrast).add_(mean).clamp_(0, 1)
    gray = _gray(x)
    return x.sub_(gray).mul_(saturation).add_(gray).clamp_(0, 1)


# ----------------------------------------------------------------------------- config


def _check_int(key: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, value, f"must be an integer >= {low}")
    return value


def build_augment(cfg: Mapping | None) -> Augment | None:
    """The ``dataset.augment`` block as an ``Augment``; None when missing or all off."""
    if not cfg:
        return None
    allowed = ("crop_padding", "flip", "color_jitter")
    for key in cfg:
        if key not in allowed:
            raise ConfigError(
                f"dataset.augment.{key}",
                cfg[key],
                f"unknown augmentation; allowed keys: {', '.join(allowed)}",
            )
    pad = _check_int("dataset.augment.crop_padding", cfg.get("crop_padding", 0), 0)
    flip = cfg.get("flip", False)
    if not isinstance(flip, bool):
        raise ConfigError("dataset.augment.flip", flip, "must be true or false")
    jitter = cfg.get("color_jitter", 0.0)
    if isinstance(jitter, bool) or not isinstance(jitter, int | float) or not 0 <= jitter <= 1:
        raise ConfigError("dataset.augment.color_jitter", jitter, "must be a number in [0, 1]")
    result = Augment(pad, flip, float(jitter))
    return result if result.active else None

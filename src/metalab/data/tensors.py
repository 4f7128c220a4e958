"""The in-memory form every image dataset is loaded into: one uint8 tensor per split."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageSplit:
    """One split: images ``uint8 [N, C, H, W]`` and labels ``int64 [N]`` in ``0..n_classes-1``."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __post_init__(self):
        assert self.images.dtype == torch.uint8 and self.images.dim() == 4, self.images.shape
        assert self.labels.dtype == torch.int64 and len(self.labels) == len(self.images)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def samples_per_class(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.n_classes)


@dataclass
class ImageDataset:
    """Train/val/test splits with disjoint classes, plus the per-channel normalisation."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def split(self, name: str) -> ImageSplit:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

"""Splitting Omniglot's characters into train / val / test: by alphabet or by class, with rotated
copies as extra classes, and the exact pixel statistics of the training images."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch

from metalab.data.tensors import ImageSplit
from metalab.errors import ConfigError

# The Vinyals et al. class split of the 1,623 characters: train / val / (rest) test.
FULL_CLASSES, FULL_TRAIN, FULL_VAL = 1623, 1100, 100
ROTATIONS = (90, 180, 270)


def merge(sets: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Characters of several sets by ``alphabet/character``; a repeated name keeps the first."""
    chars: dict[str, torch.Tensor] = {}
    for s in sets:
        labels = s["labels"]
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=len(s["class_names"])).tolist()
        for name, block in zip(s["class_names"], torch.split(s["images"][order], counts)):
            chars.setdefault(name, block)
    return chars


def alphabet_of(name: str) -> str:
    return name.split("/", 1)[0]


def make_split(chars: dict[str, torch.Tensor], names: Sequence[str], rotate: bool) -> ImageSplit:
    names = sorted(names)
    blocks = [chars[n] for n in names]
    class_names = list(names)
    if rotate:
        for deg in ROTATIONS:
            blocks += [torch.rot90(chars[n], deg // 90, dims=(-2, -1)) for n in names]
            class_names += [f"{n}@rot{deg}" for n in names]
    if blocks:
        images = torch.cat(blocks).contiguous()
        sizes = torch.tensor([len(b) for b in blocks])
        labels = torch.repeat_interleave(torch.arange(len(blocks), dtype=torch.int64), sizes)
    else:
        some = next(iter(chars.values()))
        images = some.new_empty((0, *some.shape[1:]))
        labels = torch.empty(0, dtype=torch.int64)
    return ImageSplit(images=images, labels=labels, class_names=class_names)


def pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of the pixels in [0, 1] units, exact, via a 256-bin histogram."""
    hist = torch.bincount(images.reshape(-1), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = hist.sum()
    mean = (hist * values).sum() / total
    var = (hist * (values - mean) ** 2).sum() / total
    return float(mean), float(var.sqrt())


def alphabet_split(
    background: dict[str, torch.Tensor],
    evaluation: dict[str, torch.Tensor],
    evaluation_sets: list[str],
    val_alphabets: int | None,
    seed: int,
) -> dict[str, list[str]]:
    bg_alphabets = sorted({alphabet_of(n) for n in background})
    test = sorted(n for n in evaluation if alphabet_of(n) not in set(bg_alphabets))
    if not evaluation:
        raise ConfigError(
            "dataset.evaluation",
            evaluation_sets,
            "is empty: split=alphabets takes its test alphabets from the evaluation sets "
            "(e.g. [images_evaluation]); or use dataset.split=classes",
        )
    if not test:
        ev_alphabets = sorted({alphabet_of(n) for n in evaluation})
        raise ConfigError(
            "dataset.evaluation",
            evaluation_sets,
            f"leaves no test alphabets: its alphabets {ev_alphabets} are all background alphabets "
            f"too; name evaluation sets with other alphabets (e.g. images_evaluation) or use "
            f"dataset.split=classes",
        )
    n = len(bg_alphabets)
    if val_alphabets is None:  # 5 of the 30 full background alphabets; 1 of the 5 small ones
        val_alphabets = min(max(1, round(n / 6)), n - 1)
    if (
        isinstance(val_alphabets, bool)
        or not isinstance(val_alphabets, int)
        or not (0 <= val_alphabets < n)
    ):
        raise ConfigError(
            "dataset.val_alphabets",
            val_alphabets,
            f"must be an integer in 0..{n - 1}: it must leave at least one of the {n} background "
            f"alphabets ({', '.join(bg_alphabets)}) for training",
        )
    val_set = set(random.Random(seed).sample(bg_alphabets, val_alphabets))
    return {
        "train": [c for c in background if alphabet_of(c) not in val_set],
        "val": [c for c in background if alphabet_of(c) in val_set],
        "test": test,
    }


def class_split(
    chars: dict[str, torch.Tensor], n_train: int | None, n_val: int | None, seed: int
) -> dict[str, list[str]]:
    names = sorted(chars)
    total = len(names)
    if n_train is None:  # 1100 of 1623 (Vinyals et al.); the same fraction of fewer characters
        n_train = round(total * FULL_TRAIN / FULL_CLASSES)
    if n_val is None:
        n_val = max(1, round(total * FULL_VAL / FULL_CLASSES))
    for key, value in (("dataset.n_train_classes", n_train), ("dataset.n_val_classes", n_val)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(key, value, "must be a non-negative integer")
    if n_train < 1 or n_train + n_val >= total:
        raise ConfigError(
            "dataset.n_train_classes",
            n_train,
            f"with n_val_classes={n_val}: train needs >= 1 class and train + val must leave at "
            f"least one of the {total} characters for test",
        )
    random.Random(seed).shuffle(names)
    return {
        "train": names[:n_train],
        "val": names[n_train : n_train + n_val],
        "test": names[n_train + n_val :],
    }

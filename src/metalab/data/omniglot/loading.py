"""``load_omniglot``: the arguments checked, the sets found and read, the split made."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from metalab.data.omniglot.reading import read_set
from metalab.data.omniglot.sets import locate
from metalab.data.omniglot.splits import alphabet_split, class_split, make_split, merge, pixel_stats
from metalab.data.tensors import ImageDataset
from metalab.errors import ConfigError, require_positive

SPLITS = ("alphabets", "classes")
SPLIT_NAMES = ("train", "val", "test")


def set_names(key: str, value) -> list[str]:
    if isinstance(value, str):
        value = [value]
    names = [str(v) for v in list(value or [])]
    if any(not n or "/" in n or "\\" in n for n in names):
        raise ConfigError(
            key, names, "must be a list of Omniglot set names, e.g. images_background"
        )
    return names


def load_omniglot(
    root: str,
    cache_dir: str,
    background: Sequence[str] = ("images_background",),
    evaluation: Sequence[str] = ("images_evaluation",),
    image_size: int = 28,
    split: str = "alphabets",
    rotations: bool = False,
    download: bool = False,
    rotate_splits: Sequence[str] = ("train",),
    val_alphabets: int | None = None,
    n_train_classes: int | None = None,
    n_val_classes: int | None = None,
    split_seed: int = 0,
) -> ImageDataset:
    """Load Omniglot sets into train/val/test ``ImageSplit``s (see the module docstring).

    ``val_alphabets=None`` holds out ``round(n/6)`` of the n background alphabets (5 of the full
    30; 1 of the 5 in a small set), always leaving one for train. ``n_train_classes`` /
    ``n_val_classes`` (``split=classes``) default to 1100/1623 and 100/1623 of the characters.
    """
    require_positive("dataset.image_size", image_size)
    if split not in SPLITS:
        raise ConfigError("dataset.split", split, f"must be one of: {', '.join(SPLITS)}")
    rotate_splits = [str(s) for s in list(rotate_splits or [])]
    if any(s not in SPLIT_NAMES for s in rotate_splits):
        raise ConfigError(
            "dataset.rotate_splits", rotate_splits, f"must be a subset of {list(SPLIT_NAMES)}"
        )
    background = set_names("dataset.background", background)
    evaluation = set_names("dataset.evaluation", evaluation)
    if not background:
        raise ConfigError("dataset.background", background, "needs at least one Omniglot set")
    root_path = Path(os.path.expanduser(str(root)))

    def load(names: list[str]) -> dict[str, torch.Tensor]:
        sources = [locate(root_path, n, bool(download)) for n in names]
        return merge([read_set(s, int(image_size), cache_dir) for s in sources])

    bg_chars = load(background)
    ev_chars = load(evaluation)
    if split == "alphabets":
        parts = alphabet_split(bg_chars, ev_chars, evaluation, val_alphabets, int(split_seed))
        chars = {**ev_chars, **bg_chars}
    else:
        chars = {**ev_chars, **bg_chars}  # a name in both keeps the background copy
        parts = class_split(chars, n_train_classes, n_val_classes, int(split_seed))

    rotate = bool(rotations)
    splits = {s: make_split(chars, parts[s], rotate and s in rotate_splits) for s in SPLIT_NAMES}
    # Rotation only permutes pixels: the statistics of the unrotated train images are exact.
    mean, std = pixel_stats(torch.cat([chars[n] for n in parts["train"]]))
    return ImageDataset(
        train=splits["train"], val=splits["val"], test=splits["test"], mean=(mean,), std=(std,)
    )

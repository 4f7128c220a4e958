"""Loading the glyphs set: its parameters checked (one-line errors naming the key), generated once
and cached under a name keyed by the generator version and every parameter, split into an
ImageDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metalab.data.cache import cache_key, cached
from metalab.data.glyphs.generation import GENERATOR_VERSION, generate, split_counts
from metalab.data.tensors import ImageDataset, ImageSplit
from metalab.errors import ConfigError

_KEY = "dataset.load"


def load_glyphs(
    cache_dir: str,
    seed: int = 0,
    image_size: int = 28,
    n_alphabets: int = 50,
    drawers: int = 20,
    min_chars: int = 20,
    max_chars: int = 35,
    val_fraction: float = 0.1,
    test_fraction: float = 0.3,
    jitter: float = 1.0,
) -> ImageDataset:
    """Generate (or load from the cache) the glyphs dataset, split by alphabet.

    ``jitter`` scales every per-drawing variation (0 draws each character identically 20 times;
    1 is the calibrated default).
    """
    params = check_params(
        seed=seed,
        image_size=image_size,
        n_alphabets=n_alphabets,
        drawers=drawers,
        min_chars=min_chars,
        max_chars=max_chars,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        jitter=jitter,
    )
    path = cache_path(cache_dir, **params)
    data = cached(path, lambda: generate(**params))
    return to_dataset(data, params["drawers"])


def cache_path(cache_dir: str | Path, **params) -> Path:
    """The cache file for ``params``: its name changes with ``GENERATOR_VERSION`` and each one."""
    items = tuple(sorted(params.items()))
    key = cache_key("glyphs", GENERATOR_VERSION, items)
    return Path(cache_dir) / f"glyphs-v{GENERATOR_VERSION}-{key}.pt"


def check_params(**p) -> dict:
    def is_int(v):
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    def is_num(v):
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    if not is_int(p["seed"]) or p["seed"] < 0:
        raise ConfigError(f"{_KEY}.seed", p["seed"], "must be a non-negative integer")
    # the config sets dataset.image_size and interpolates it into dataset.load.image_size
    if not is_int(p["image_size"]) or not 16 <= p["image_size"] <= 256:
        raise ConfigError(
            "dataset.image_size", p["image_size"], "must be an integer between 16 and 256"
        )
    if not is_int(p["drawers"]) or not 2 <= p["drawers"] <= 1000:
        raise ConfigError(f"{_KEY}.drawers", p["drawers"], "must be an integer between 2 and 1000")
    if not is_int(p["min_chars"]) or p["min_chars"] < 2:
        raise ConfigError(f"{_KEY}.min_chars", p["min_chars"], "must be an integer >= 2")
    if not is_int(p["max_chars"]) or not p["min_chars"] <= p["max_chars"] <= 1000:
        raise ConfigError(
            f"{_KEY}.max_chars",
            p["max_chars"],
            f"must be an integer between min_chars ({p['min_chars']}) and 1000",
        )
    for name in ("val_fraction", "test_fraction"):
        v = p[name]
        if not is_num(v) or not 0.0 < v < 1.0:
            raise ConfigError(f"{_KEY}.{name}", v, "must be a number strictly between 0 and 1")
    if p["val_fraction"] + p["test_fraction"] >= 1.0:
        raise ConfigError(
            f"{_KEY}.test_fraction",
            p["test_fraction"],
            f"val_fraction + test_fraction must be < 1 (val_fraction={p['val_fraction']})",
        )
    if not is_num(p["jitter"]) or not 0.0 <= p["jitter"] <= 3.0:
        raise ConfigError(f"{_KEY}.jitter", p["jitter"], "must be a number between 0 and 3")
    if not is_int(p["n_alphabets"]) or p["n_alphabets"] > 1000:
        raise ConfigError(f"{_KEY}.n_alphabets", p["n_alphabets"], "must be an integer <= 1000")
    counts = split_counts(p["n_alphabets"], p["val_fraction"], p["test_fraction"])
    if min(counts) < 1:
        raise ConfigError(
            f"{_KEY}.n_alphabets",
            p["n_alphabets"],
            "too few alphabets for train/val/test splits of at least one alphabet each "
            f"(would be {counts[0]}/{counts[1]}/{counts[2]} with val_fraction="
            f"{p['val_fraction']}, test_fraction={p['test_fraction']})",
        )
    out = {k: int(v) for k, v in p.items() if k not in ("val_fraction", "test_fraction", "jitter")}
    out.update({k: float(p[k]) for k in ("val_fraction", "test_fraction", "jitter")})
    return out


def to_dataset(data: dict, drawers: int) -> ImageDataset:
    images, split = data["images"], data["char_split"]
    alphabet, index = data["char_alphabet"], data["char_index"]
    splits = []
    for s in range(3):
        chars = torch.nonzero(split == s).flatten()
        rows = (chars[:, None] * drawers + torch.arange(drawers)[None, :]).flatten()
        labels = torch.arange(len(chars), dtype=torch.int64).repeat_interleave(drawers)
        names = [f"alphabet{int(alphabet[c]):02d}/char{int(index[c]):02d}" for c in chars]
        split_images = images[rows].contiguous()
        splits.append(ImageSplit(images=split_images, labels=labels, class_names=names))
    train = splits[0].images.float().div_(255.0)
    mean, std = float(train.mean()), float(train.std())
    return ImageDataset(train=splits[0], val=splits[1], test=splits[2], mean=(mean,), std=(std,))

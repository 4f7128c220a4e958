"""Omniglot (Lake, Salakhutdinov & Tenenbaum, Science 2015): real handwritten characters.

The authors publish each "set" (``images_background``, ``images_evaluation`` and the small
``images_background_small1/2``) as a zip that unpacks to ``<set>/<alphabet>/<character>/<png>``:
105x105 1-bit images, black strokes on white, 20 drawers per character. A set is read either from
the unpacked folder or straight from the zip (no extraction), looked up as

    <root>/<set>/   <root>/<set>.zip   <root>/omniglot-py/<set>/   <root>/omniglot-py/<set>.zip

(the last two are where ``torchvision.datasets.Omniglot(root, download=True)`` puts it).

Each set is decoded once, inverted (stroke = 255 on 0, the convention of the ``glyphs`` dataset),
resized to ``image_size`` with PIL's antialiasing filter and cached as uint8 tensors. The cache key
holds the set name, the image size, the resize recipe and the size/mtime of every source file, so a
changed source is rebuilt. Splitting and rotation work on the cached tensors and take milliseconds.

Splits (``split``):

* ``alphabets`` (default): train = the alphabets of the ``background`` sets, less ``val_alphabets``
  of them held out (fixed ``split_seed``) as val; test = the alphabets of the ``evaluation`` sets
  that are not also background alphabets (the small sets share Greek and Latin).
* ``classes``: every character of every set, shuffled with ``split_seed`` and cut into
  ``n_train_classes`` / ``n_val_classes`` / rest (default 1100 / 100 / 423 on the full 1,623
  characters, Vinyals et al. 2016; scaled proportionally to the characters found otherwise).

``rotations: true`` adds each class rotated by 90, 180 and 270 degrees as three extra classes
(``<name>@rot90`` ... ``@rot270``; ``@rotK`` is ``torch.rot90(image, K // 90, dims=(-2, -1))``, i.e.
counter-clockwise) to the splits named in ``rotate_splits`` (default: train only).
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metalab.data.cache import cache_key, cached
from metalab.data.tensors import ImageDataset, ImageSplit
from metalab.errors import ConfigError, require_positive

__all__ = ["load_omniglot", "find_set", "read_set", "SPLITS", "DOWNLOADABLE"]

SPLITS = ("alphabets", "classes")
SPLIT_NAMES = ("train", "val", "test")
# Sets that torchvision.datasets.Omniglot can download (background=True / False).
DOWNLOADABLE = {"images_background": True, "images_evaluation": False}
SOURCE_URL = "https://github.com/brendenlake/omniglot"
# The Vinyals et al. class split of the 1,623 characters: train / val / (rest) test.
FULL_CLASSES, FULL_TRAIN, FULL_VAL = 1623, 1100, 100
# Bump when the decoding/resizing recipe changes: part of the cache key.
_RECIPE = "invert-L-lanczos-v1"
_ROTATIONS = (90, 180, 270)


@dataclass(frozen=True)
class _Source:
    """Where one set was found: an unpacked folder or the authors' zip."""

    name: str
    path: Path
    is_zip: bool


# ----------------------------------------------------------------------------- locating a set


def _candidates(root: Path, name: str) -> list[Path]:
    return [
        root / name,
        root / f"{name}.zip",
        root / "omniglot-py" / name,
        root / "omniglot-py" / f"{name}.zip",
    ]


def find_set(root: str | Path, name: str) -> _Source | None:
    """The first existing location of set ``name`` under ``root``, or None."""
    for path in _candidates(Path(root), name):
        if path.is_dir():
            # Tolerate a zip unpacked into a folder of its own name: <root>/<set>/<set>/<alphabet>.
            inner = path / name
            if inner.is_dir():
                path = inner
            return _Source(name, path, is_zip=False)
        if path.is_file() and path.suffix == ".zip":
            return _Source(name, path, is_zip=True)
    return None


def _missing(root: Path, name: str, download: bool) -> ConfigError:
    looked = ", ".join(str(p) for p in _candidates(root, name))
    if download:  # only reached for names torchvision cannot download
        how = (
            f"dataset.download only fetches {' and '.join(DOWNLOADABLE)}; unzip the authors' "
            f"{name}.zip from {SOURCE_URL} into {root}"
        )
    else:
        how = (
            f"set dataset.download=true on a machine with internet, or unzip the authors' "
            f"{name}.zip from {SOURCE_URL} into {root}"
        )
    return ConfigError(
        "dataset.root", root, f"no Omniglot set '{name}' found (looked in {looked}); {how}"
    )


def _download(root: Path, name: str) -> None:
    """Fetch a standard set through torchvision into ``<root>/omniglot-py/``."""
    from torchvision import datasets  # imported late: slow, and only needed here

    root.mkdir(parents=True, exist_ok=True)
    try:
        datasets.Omniglot(str(root), background=DOWNLOADABLE[name], download=True)
    except Exception as err:  # no network, bad checksum, ...: one line for the user
        raise ConfigError(
            "dataset.download",
            True,
            f"downloading Omniglot '{name}' into {root / 'omniglot-py'} failed "
            f"({type(err).__name__}: {err}); unzip the authors' {name}.zip from {SOURCE_URL} "
            f"into {root} instead",
        ) from err


def _locate(root: Path, name: str, download: bool) -> _Source:
    source = find_set(root, name)
    if source is None and download and name in DOWNLOADABLE:
        _download(root, name)
        source = find_set(root, name)
    if source is None:
        raise _missing(root, name, download)
    return source


# ----------------------------------------------------------------------------- reading a set


def _png_key(relpath: str) -> tuple[str, str, str] | None:
    """``(alphabet, character, file)`` for an image path inside a set, else None."""
    parts = [p for p in relpath.replace("\\", "/").split("/") if p]
    if len(parts) < 3 or not parts[-1].lower().endswith(".png"):
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return parts[-3], parts[-2], parts[-1]


def _signature(source: _Source) -> tuple:
    """Sizes and mtimes of the source files: part of the cache key."""
    if source.is_zip:
        st = source.path.stat()
        return ("zip", str(source.path.resolve()), st.st_size, st.st_mtime_ns)
    digest = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(source.path):
        dirnames.sort()
        for fname in sorted(filenames):
            full = os.path.join(dirpath, fname)
            rel = os.path.relpath(full, source.path)
            if _png_key(rel) is None:
                continue
            st = os.stat(full)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            count += 1
    return ("dir", str(source.path.resolve()), count, digest.hexdigest())


def _decode(data: bytes, image_size: int, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("L")
            if img.size != (image_size, image_size):
                # Invert first so the antialiasing filter sees strokes on a black background.
                img = Image.fromarray(255 - np.asarray(img))
                img = img.resize((image_size, image_size), Image.Resampling.LANCZOS)
                return np.asarray(img, dtype=np.uint8)
            return 255 - np.asarray(img, dtype=np.uint8)
    except Exception as err:
        raise ConfigError(
            "dataset.root",
            where,
            f"cannot read this Omniglot image ({type(err).__name__}: {err}); the file is corrupt: "
            f"delete it and unzip or download the set again",
        ) from err


def _build_set(source: _Source, image_size: int) -> dict:
    """Decode every image of a set: ``images uint8 [N,1,S,S]``, ``labels`` and ``class_names``."""
    entries: list[tuple[tuple[str, str, str], str]] = []  # ((alphabet, char, file), locator)
    archive = None
    try:
        if source.is_zip:
            try:
                archive = zipfile.ZipFile(source.path)
            except (zipfile.BadZipFile, OSError) as err:
                raise ConfigError(
                    "dataset.root",
                    source.path,
                    f"not a readable zip ({type(err).__name__}: {err}); the file is corrupt: "
                    f"delete it and download it again from {SOURCE_URL}",
                ) from err
            for info in archive.infolist():
                key = None if info.is_dir() else _png_key(info.filename)
                if key is not None:
                    entries.append((key, info.filename))
        else:
            for dirpath, _dirs, filenames in os.walk(source.path):
                for fname in filenames:
                    full = os.path.join(dirpath, fname)
                    key = _png_key(os.path.relpath(full, source.path))
                    if key is not None:
                        entries.append((key, full))
        if not entries:
            raise ConfigError(
                "dataset.root",
                source.path,
                f"no <alphabet>/<character>/*.png images in Omniglot set '{source.name}'; "
                f"unzip the authors' {source.name}.zip from {SOURCE_URL} there",
            )
        entries.sort()
        images = np.empty((len(entries), 1, image_size, image_size), dtype=np.uint8)
        class_names: list[str] = []
        labels = np.empty(len(entries), dtype=np.int64)
        for i, ((alphabet, char, _file), loc) in enumerate(entries):
            if archive is not None:
                where = f"{source.path}:{loc}"
                try:
                    data = archive.read(loc)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
                    raise ConfigError(
                        "dataset.root",
                        where,
                        f"cannot read this zip member ({type(err).__name__}: {err}); the zip is "
                        f"corrupt: delete it and download it again from {SOURCE_URL}",
                    ) from err
            else:
                where = loc
                with open(loc, "rb") as fh:
                    data = fh.read()
            name = f"{alphabet}/{char}"
            if not class_names or class_names[-1] != name:
                class_names.append(name)
            labels[i] = len(class_names) - 1
            images[i, 0] = _decode(data, image_size, where)
    finally:
        if archive is not None:
            archive.close()
    return {
        "images": torch.from_numpy(images),
        "labels": torch.from_numpy(labels),
        "class_names": class_names,
    }


def read_set(source: _Source, image_size: int, cache_dir: str | Path) -> dict:
    """The decoded set, from the cache when its sources are unchanged."""
    key = cache_key("omniglot", source.name, image_size, _RECIPE, _signature(source))
    path = Path(cache_dir) / f"omniglot_{source.name}_{image_size}px_{key}.pt"
    return cached(path, lambda: _build_set(source, image_size))


# ----------------------------------------------------------------------------- splitting


def _merge(sets: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Characters of several sets by ``alphabet/character``; a repeated name keeps the first."""
    chars: dict[str, torch.Tensor] = {}
    for s in sets:
        labels = s["labels"]
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=len(s["class_names"])).tolist()
        for name, block in zip(s["class_names"], torch.split(s["images"][order], counts)):
            chars.setdefault(name, block)
    return chars


def _alphabet(name: str) -> str:
    return name.split("/", 1)[0]


def _make_split(chars: dict[str, torch.Tensor], names: Sequence[str], rotate: bool) -> ImageSplit:
    names = sorted(names)
    blocks = [chars[n] for n in names]
    class_names = list(names)
    if rotate:
        for deg in _ROTATIONS:
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


def _pixel_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of the pixels in [0, 1] units, exact, via a 256-bin histogram."""
    hist = torch.bincount(images.reshape(-1), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    total = hist.sum()
    mean = (hist * values).sum() / total
    var = (hist * (values - mean) ** 2).sum() / total
    return float(mean), float(var.sqrt())


def _alphabet_split(
    background: dict[str, torch.Tensor],
    evaluation: dict[str, torch.Tensor],
    evaluation_sets: list[str],
    val_alphabets: int | None,
    seed: int,
) -> dict[str, list[str]]:
    bg_alphabets = sorted({_alphabet(n) for n in background})
    test = sorted(n for n in evaluation if _alphabet(n) not in set(bg_alphabets))
    if not evaluation:
        raise ConfigError(
            "dataset.evaluation",
            evaluation_sets,
            "is empty: split=alphabets takes its test alphabets from the evaluation sets "
            "(e.g. [images_evaluation]); or use dataset.split=classes",
        )
    if not test:
        ev_alphabets = sorted({_alphabet(n) for n in evaluation})
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
        "train": [c for c in background if _alphabet(c) not in val_set],
        "val": [c for c in background if _alphabet(c) in val_set],
        "test": test,
    }


def _class_split(
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


# ----------------------------------------------------------------------------- entry point


def _set_names(key: str, value) -> list[str]:
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
    background = _set_names("dataset.background", background)
    evaluation = _set_names("dataset.evaluation", evaluation)
    if not background:
        raise ConfigError("dataset.background", background, "needs at least one Omniglot set")
    root_path = Path(os.path.expanduser(str(root)))

    def load(names: list[str]) -> dict[str, torch.Tensor]:
        sources = [_locate(root_path, n, bool(download)) for n in names]
        return _merge([read_set(s, int(image_size), cache_dir) for s in sources])

    bg_chars = load(background)
    ev_chars = load(evaluation)
    if split == "alphabets":
        parts = _alphabet_split(bg_chars, ev_chars, evaluation, val_alphabets, int(split_seed))
        chars = {**ev_chars, **bg_chars}
    else:
        chars = {**ev_chars, **bg_chars}  # a name in both keeps the background copy
        parts = _class_split(chars, n_train_classes, n_val_classes, int(split_seed))

    rotate = bool(rotations)
    splits = {s: _make_split(chars, parts[s], rotate and s in rotate_splits) for s in SPLIT_NAMES}
    # Rotation only permutes pixels: the statistics of the unrotated train images are exact.
    mean, std = _pixel_stats(torch.cat([chars[n] for n in parts["train"]]))
    return ImageDataset(
        train=splits["train"], val=splits["val"], test=splits["test"], mean=(mean,), std=(std,)
    )

"""CIFAR-FS (Bertinetto et al. 2019): the 100 CIFAR-100 classes split 64 / 16 / 20 at random,
600 images each, 32x32 RGB.

Files (learn2learn's format, ``learn2learn.vision.datasets.CIFARFS``): the unzipped
``cifar100.zip`` in ``<root>/cifarfs/``, i.e. ``cifar100/data/<class>/*.png`` and the split lists
``cifar100/splits/bertinetto/{train,val,test}.txt``. On first use learn2learn copies each split's
class folders into ``<root>/cifarfs/processed/<split>/`` and reads those (an image folder).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.common import (
    SPLITS,
    ZENODO,
    Needed,
    check_args,
    ensure_files,
    from_images,
    learn2learn_datasets,
    load_split,
    read_l2l,
    split_dict,
)

TITLE = "CIFAR-FS"
# CIFAR-100 training-set pixel statistics (MetaOptNet's CIFAR-FS and FC100 recipe).
MEAN = (129.37731888 / 255, 124.10583864 / 255, 112.47758569 / 255)
STD = (68.20947949 / 255, 65.43124043 / 255, 70.45866994 / 255)


def _raw(root: Path) -> list[Needed]:
    base = root / "cifarfs" / "cifar100"
    how = f"unzip {ZENODO}/cifar100.zip into {root / 'cifarfs'}"
    splits = base / "splits" / "bertinetto"
    return [Needed(base / "data", how), *(Needed(splits / f"{s}.txt", how) for s in SPLITS)]


def _processed(root: Path) -> dict[str, Needed]:
    folder = root / "cifarfs" / "processed"
    how = f"delete {folder} and run again: learn2learn rebuilds it from {root / 'cifarfs'}"
    return {split: Needed(folder / split, how) for split in SPLITS}


def _fetch(root: Path, missing: list[Needed]) -> None:
    learn2learn_datasets().CIFARFS(str(root), mode="train", download=True)


def _process(root: Path, download: bool) -> None:
    """Make learn2learn download (if asked) and build the processed split folders."""
    raw = _raw(root)
    ensure_files(TITLE, root, raw, download, partial(_fetch, root))
    datasets = learn2learn_datasets()
    read_l2l(raw[0], lambda: datasets.CIFARFS(str(root), mode="train"))


def _build(root: Path, split: str, image_size: int) -> dict:
    folder = _processed(root)[split]
    data = read_l2l(folder, lambda: learn2learn_datasets().CIFARFS(str(root), mode=SPLITS[split]))
    images = from_images(len(data.samples), lambda i: data[i][0], lambda i: data.samples[i][0],
                         image_size, f"{TITLE} {split}", _raw(root)[0].how)
    return split_dict(images, data.targets, data.classes.__getitem__)


def load_cifar_fs(root: str, cache_dir: str, download: bool = False, image_size: int = 32,
                  mean=MEAN, std=STD) -> ImageDataset:
    """CIFAR-FS's three splits, decoded once into cached uint8 tensors."""
    root = check_args(root, image_size, download, mean, std)
    processed = _processed(root)
    if not all(n.path.is_dir() for n in processed.values()):
        _process(root, download)
        ensure_files(TITLE, root, list(processed.values()), False, None)
    splits = {split: load_split(cache_dir, "cifar_fs", split, image_size, [processed[split].path],
                                partial(_build, root, split, image_size))
              for split in SPLITS}
    return ImageDataset(**splits, mean=tuple(mean), std=tuple(std))

"""CIFAR-FS (Bertinetto et al. 2019): the 100 CIFAR-100 classes split 64 / 16 / 20 at random,
600 images each, 32x32 RGB.

Files (learn2learn's format, ``learn2learn.vision.datasets.CIFARFS``): the unzipped
``cifar100.zip`` in ``<root>/cifarfs/``, i.e. ``cifar100/data/<class>/*.png`` and the split lists
``cifar100/splits/bertinetto/{train,val,test}.txt``. On first use learn2learn copies each split's
class folders into ``<root>/cifarfs/processed/<split>/`` and reads those (an image folder).
"""

from __future__ import annotations

from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.benchmark import Benchmark, load_benchmark
from metalab.data.zoo.common import (
    SPLITS,
    ZENODO,
    Needed,
    ensure_files,
    from_images,
    read_l2l,
    split_dict,
)


def _raw(root: Path) -> list[Needed]:
    base = root / "cifarfs" / "cifar100"
    how = f"unzip {ZENODO}/cifar100.zip into {root / 'cifarfs'}"
    splits = base / "splits" / "bertinetto"
    return [Needed(base / "data", how), *(Needed(splits / f"{s}.txt", how) for s in SPLITS)]


def _files(root: Path) -> dict[str, list[Needed]]:
    """The processed split folders learn2learn builds from the archive."""
    folder = root / "cifarfs" / "processed"
    how = f"delete {folder} and run again: learn2learn rebuilds it from {root / 'cifarfs'}"
    return {split: [Needed(folder / split, how)] for split in SPLITS}


def _prepare(root: Path, download: bool, fetch) -> None:
    """Make learn2learn download (if asked) and build the processed split folders."""
    raw = _raw(root)
    ensure_files(CIFAR_FS.title, root, raw, download, fetch)
    read_l2l(raw[0], lambda: CIFAR_FS.dataset_class()(str(root), mode="train"))


def _convert(data, root: Path, split: str, files: list[Needed], image_size: int, what: str):
    images = from_images(
        len(data.samples),
        lambda i: data[i][0],
        lambda i: data.samples[i][0],
        image_size,
        what,
        _raw(root)[0].how,
    )
    return split_dict(images, data.targets, data.classes.__getitem__)


# CIFAR-100 training-set pixel statistics (MetaOptNet's CIFAR-FS and FC100 recipe)
MEAN, STD = (0.50736203, 0.48668956, 0.44108857), (0.26748815, 0.2565931, 0.27630851)
CIFAR_FS = Benchmark(
    "cifar_fs", "CIFAR-FS", "CIFARFS", _files, _convert, MEAN, STD, prepare=_prepare
)


def load_cifar_fs(
    root: str, cache_dir: str, download: bool = False, image_size: int = 32, mean=None, std=None
) -> ImageDataset:
    return load_benchmark(CIFAR_FS, root, cache_dir, download, image_size, mean, std)

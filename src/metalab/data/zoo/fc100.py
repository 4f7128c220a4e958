"""FC100 (Oreshkin et al. 2018): CIFAR-100 split by superclass, 12 / 4 / 4 superclasses = 60 /
20 / 20 classes of 600 images, 32x32 RGB.

Files (learn2learn's format, ``learn2learn.vision.datasets.FC100``; MetaOptNet's pickles):
``<root>/FC100_{train,val,test}.pickle``, each a (Python 2, latin-1) pickled dict with ``data``
(``uint8 [N, 32, 32, 3]``) and ``labels`` (the CIFAR-100 fine label of each image).
"""

from __future__ import annotations

from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.benchmark import Benchmark, load_benchmark
from metalab.data.zoo.cifar_fs import CIFAR_FS
from metalab.data.zoo.common import SPLITS, ZENODO, Needed, from_arrays, split_dict


def _files(root: Path) -> dict[str, list[Needed]]:
    how = f"unzip {ZENODO}/fc100.zip into {root}"
    return {split: [Needed(root / f"FC100_{split}.pickle", how)] for split in SPLITS}


def _convert(data, root: Path, split: str, files: list[Needed], image_size: int, what: str):
    images = from_arrays(data.images, image_size, what, files[0])
    return split_dict(images, data.labels, lambda label: f"cifar100_fine_{label}")


# CIFAR-100's statistics, as for CIFAR-FS
FC100 = Benchmark(
    "fc100", "FC100", "FC100", _files, _convert, pickles=True, mean=CIFAR_FS.mean, std=CIFAR_FS.std
)


def load_fc100(
    root: str, cache_dir: str, download: bool = False, image_size: int = 32, mean=None, std=None
) -> ImageDataset:
    return load_benchmark(FC100, root, cache_dir, download, image_size, mean, std)

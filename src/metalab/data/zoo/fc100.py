"""FC100 (Oreshkin et al. 2018): CIFAR-100 split by superclass, 12 / 4 / 4 superclasses = 60 /
20 / 20 classes of 600 images, 32x32 RGB.

Files (learn2learn's format, ``learn2learn.vision.datasets.FC100``; MetaOptNet's pickles):
``<root>/FC100_{train,val,test}.pickle``, each a (Python 2, latin-1) pickled dict with ``data``
(``uint8 [N, 32, 32, 3]``) and ``labels`` (the CIFAR-100 fine label of each image).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.cifar_fs import MEAN, STD
from metalab.data.zoo.common import (
    SPLITS,
    ZENODO,
    Needed,
    check_args,
    check_pickle,
    ensure_files,
    from_arrays,
    learn2learn_datasets,
    load_split,
    read_l2l,
    split_dict,
)

TITLE = "FC100"


def _files(root: Path) -> dict[str, Needed]:
    how = f"unzip {ZENODO}/fc100.zip into {root}"
    return {split: Needed(root / f"FC100_{split}.pickle", how) for split in SPLITS}


def _fetch(root: Path, missing: list[Needed]) -> None:
    learn2learn_datasets().FC100(str(root), mode="train", download=True)


def _build(root: Path, split: str, image_size: int) -> dict:
    source = _files(root)[split]
    datasets = learn2learn_datasets()
    data = read_l2l(source, lambda: datasets.FC100(str(root), mode=SPLITS[split]))
    images = from_arrays(data.images, image_size, f"{TITLE} {split}", source)
    return split_dict(images, data.labels, lambda label: f"cifar100_fine_{label}")


def load_fc100(root: str, cache_dir: str, download: bool = False, image_size: int = 32,
               mean=MEAN, std=STD) -> ImageDataset:
    """FC100's three splits, converted once into cached uint8 tensors."""
    root = check_args(root, image_size, download, mean, std)
    files = _files(root)
    ensure_files(TITLE, root, list(files.values()), download, partial(_fetch, root))
    for needed in files.values():
        check_pickle(needed)
    splits = {split: load_split(cache_dir, "fc100", split, image_size, [files[split].path],
                                partial(_build, root, split, image_size))
              for split in SPLITS}
    return ImageDataset(**splits, mean=tuple(mean), std=tuple(std))

"""tiered-ImageNet (Ren et al. 2018): 608 ImageNet classes grouped into 34 categories, split by
category into 351 / 97 / 160 classes, 84x84 RGB.

Files (learn2learn's format, ``learn2learn.vision.datasets.TieredImagenet``), in
``<root>/tiered-imagenet/``: per split (``train``, ``val``, ``test``) ``<split>_images_png.pkl``
(a list of PNG-encoded images) and ``<split>_labels.pkl`` (a dict with ``label_specific``, the
class of each image, and ``label_specific_str``, the class names).
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.common import (
    SPLITS,
    ZENODO,
    Needed,
    check_args,
    check_pickle,
    ensure_files,
    from_images,
    learn2learn_datasets,
    load_split,
    read_l2l,
    split_dict,
)
from metalab.data.zoo.mini_imagenet import MEAN, STD

TITLE = "tiered-ImageNet"


def _files(root: Path) -> dict[str, list[Needed]]:
    folder = root / "tiered-imagenet"
    return {split: [Needed(folder / f"{split}_{part}.pkl",
                           f"download it from {ZENODO}/tiered-imagenet-{split}_{part}.pkl")
                    for part in ("images_png", "labels")]
            for split in SPLITS}


def _fetch(root: Path, missing: list[Needed]) -> None:
    # learn2learn downloads all eight files, then reads the training split.
    learn2learn_datasets().TieredImagenet(str(root), mode="train", download=True)


def _class_names(labels_file: Path) -> list[str] | None:
    with open(labels_file, "rb") as fh:
        names = pickle.load(fh, encoding="latin1").get("label_specific_str")
    return None if names is None else [str(n) for n in names]


def _build(root: Path, split: str, image_size: int) -> dict:
    images_file, labels_file = _files(root)[split]
    datasets = learn2learn_datasets()
    data = read_l2l(images_file, lambda: datasets.TieredImagenet(str(root), mode=SPLITS[split]))
    images = from_images(len(data), lambda i: data[i][0],
                         lambda i: f"{images_file.path}[{i}]", image_size,
                         f"{TITLE} {split}", images_file.how)
    names = _class_names(labels_file.path)
    return split_dict(images, data.labels, names.__getitem__ if names else str)


def load_tiered_imagenet(root: str, cache_dir: str, download: bool = False,
                         image_size: int = 84, mean=MEAN, std=STD) -> ImageDataset:
    """tiered-ImageNet's three splits, decoded once into cached uint8 tensors."""
    root = check_args(root, image_size, download, mean, std)
    files = _files(root)
    needed = [n for pair in files.values() for n in pair]
    ensure_files(TITLE, root, needed, download, partial(_fetch, root))
    for n in needed:
        check_pickle(n)
    splits = {split: load_split(cache_dir, "tiered_imagenet", split, image_size,
                                [n.path for n in files[split]],
                                partial(_build, root, split, image_size))
              for split in SPLITS}
    return ImageDataset(**splits, mean=tuple(mean), std=tuple(std))

"""mini-ImageNet (Vinyals et al. 2016) with the class split of Ravi & Larochelle (2017): 64 / 16
/ 20 ImageNet classes of 600 images, 84x84 RGB.

Files (learn2learn's format, ``learn2learn.vision.datasets.MiniImagenet``): one pickle per split,
``<root>/mini-imagenet-cache-{train,validation,test}.pkl``, each a dict with ``image_data``
(``uint8 [N, 84, 84, 3]``) and ``class_dict`` (ImageNet synset -> list of row indices).
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
    check_pickle,
    ensure_files,
    from_arrays,
    learn2learn_datasets,
    load_split,
    read_l2l,
    split_dict,
)

TITLE = "mini-ImageNet"
# The pixel statistics of the training split (as used by MetaOptNet and most ResNet-12 work).
MEAN = (120.39586422 / 255, 115.59361427 / 255, 104.54012653 / 255)
STD = (70.68188272 / 255, 68.27635443 / 255, 72.54505529 / 255)


def _files(root: Path) -> dict[str, Needed]:
    return {split: Needed(root / f"mini-imagenet-cache-{mode}.pkl",
                          f"download it from {ZENODO}/mini-imagenet-cache-{mode}.pkl")
            for split, mode in SPLITS.items()}


def _fetch(root: Path, missing: list[Needed]) -> None:
    datasets = learn2learn_datasets()
    for split, needed in _files(root).items():
        if needed in missing:
            datasets.MiniImagenet(str(root), mode=SPLITS[split], download=True)


def _build(root: Path, split: str, image_size: int) -> dict:
    source = _files(root)[split]
    datasets = learn2learn_datasets()
    data = read_l2l(source, lambda: datasets.MiniImagenet(str(root), mode=SPLITS[split]))
    # learn2learn also keeps a float32 copy (data.x); the uint8 pickle content is what we keep.
    images = from_arrays(data.data["image_data"], image_size, f"{TITLE} {split}", source)
    names = list(data.class_idx)  # synsets in label order
    return split_dict(images, data.y, names.__getitem__)


def load_mini_imagenet(root: str, cache_dir: str, download: bool = False, image_size: int = 84,
                       mean=MEAN, std=STD) -> ImageDataset:
    """mini-ImageNet's three splits, converted once into cached uint8 tensors."""
    root = check_args(root, image_size, download, mean, std)
    files = _files(root)
    ensure_files(TITLE, root, list(files.values()), download, partial(_fetch, root))
    for needed in files.values():
        check_pickle(needed)
    splits = {split: load_split(cache_dir, "mini_imagenet", split, image_size,
                                [files[split].path], partial(_build, root, split, image_size))
              for split in SPLITS}
    return ImageDataset(**splits, mean=tuple(mean), std=tuple(std))

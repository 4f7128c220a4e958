"""CUB-200-2011 (Welinder et al. 2010; Wah et al. 2011) with the class split of Meta-Dataset
(Triantafillou et al. 2020), as hard-coded in learn2learn: 140 / 30 / 30 bird species, about 60
photos each of varying size, resized to ``image_size`` (84) squared.

Files (learn2learn's format, ``learn2learn.vision.datasets.CUBirds200``): the unpacked
``CUB_200_2011.tgz`` in ``<root>/cubirds200/``, i.e. ``CUB_200_2011/images/<class>/*.jpg``, plus
``CUB_200_2011/images.txt`` and ``bounding_boxes.txt`` when ``bounding_box_crop`` is on. The 43
images that are also in ImageNet are left out unless ``include_imagenet_duplicates``.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.common import (
    SPLITS,
    Needed,
    check_args,
    ensure_files,
    from_images,
    learn2learn_datasets,
    load_split,
    read_l2l,
    split_dict,
)
from metalab.errors import ConfigError

TITLE = "CUB-200-2011"
URL = "https://zenodo.org/record/8000562/files/CUB_200_2011.tgz"
# ImageNet statistics: the usual choice for CUB few-shot recipes.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _files(root: Path, bounding_box_crop: bool) -> list[Needed]:
    base = root / "cubirds200" / "CUB_200_2011"
    how = f"unpack {URL} into {root / 'cubirds200'}"
    names = ["images", "images.txt", "bounding_boxes.txt"] if bounding_box_crop else ["images"]
    return [Needed(base / name, how) for name in names]


def _fetch(root: Path, missing: list[Needed]) -> None:
    learn2learn_datasets().CUBirds200(str(root), mode="train", download=True)


def _build(root: Path, split: str, image_size: int, options: dict) -> dict:
    images_dir = _files(root, False)[0]
    datasets = learn2learn_datasets()
    data = read_l2l(images_dir,
                    lambda: datasets.CUBirds200(str(root), mode=SPLITS[split], **options))
    # learn2learn lists files in directory order: sort, so the tensor is the same everywhere
    order = sorted(range(len(data.data)), key=lambda i: data.data[i][0])
    images = from_images(len(order), lambda i: data[order[i]][0],
                         lambda i: data.data[order[i]][0], image_size, f"{TITLE} {split}",
                         images_dir.how)
    names = datasets.cu_birds200.SPLITS[SPLITS[split]]
    return split_dict(images, [data.data[i][1] for i in order], names.__getitem__)


def load_cub(root: str, cache_dir: str, download: bool = False, image_size: int = 84,
             mean=MEAN, std=STD, include_imagenet_duplicates: bool = False,
             bounding_box_crop: bool = False) -> ImageDataset:
    """CUB's three splits, decoded and resized once into cached uint8 tensors."""
    root = check_args(root, image_size, download, mean, std)
    options = {"include_imagenet_duplicates": include_imagenet_duplicates,
               "bounding_box_crop": bounding_box_crop}
    for key, value in options.items():
        if not isinstance(value, bool):
            raise ConfigError(f"dataset.{key}", value, "must be true or false")
    files = _files(root, bounding_box_crop)
    ensure_files(TITLE, root, files, download, partial(_fetch, root))
    splits = {split: load_split(cache_dir, "cub", split, image_size, [n.path for n in files],
                                partial(_build, root, split, image_size, options),
                                extra=tuple(options.items()))
              for split in SPLITS}
    return ImageDataset(**splits, mean=tuple(mean), std=tuple(std))

"""CUB-200-2011 (Welinder et al. 2010; Wah et al. 2011) with the class split of Meta-Dataset
(Triantafillou et al. 2020), as hard-coded in learn2learn: 140 / 30 / 30 bird species, about 60
photos each of varying size, resized to ``image_size`` (84) squared.

Files (learn2learn's format, ``learn2learn.vision.datasets.CUBirds200``): the unpacked
``CUB_200_2011.tgz`` in ``<root>/cubirds200/``, i.e. ``CUB_200_2011/images/<class>/*.jpg``, plus
``CUB_200_2011/images.txt`` and ``bounding_boxes.txt`` when ``bounding_box_crop`` is on. The 43
images that are also in ImageNet are left out unless ``include_imagenet_duplicates``.
"""

from __future__ import annotations

from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.benchmark import Benchmark, load_benchmark
from metalab.data.zoo.common import SPLITS, Needed, from_images, learn2learn_datasets, split_dict

URL = "https://zenodo.org/record/8000562/files/CUB_200_2011.tgz"


def _files(root: Path, bounding_box_crop: bool = False, **options) -> dict[str, list[Needed]]:
    """The same files for every split (learn2learn hard-codes the class split)."""
    base = root / "cubirds200" / "CUB_200_2011"
    how = f"unpack {URL} into {root / 'cubirds200'}"
    names = ["images", "images.txt", "bounding_boxes.txt"] if bounding_box_crop else ["images"]
    return dict.fromkeys(SPLITS, [Needed(base / name, how) for name in names])


def _convert(data, root: Path, split: str, files: list[Needed], image_size: int, what: str):
    # learn2learn lists files in directory order: sort, so the tensor is the same everywhere
    order = sorted(range(len(data.data)), key=lambda i: data.data[i][0])
    images = from_images(
        len(order),
        lambda i: data[order[i]][0],
        lambda i: data.data[order[i]][0],
        image_size,
        what,
        files[0].how,
    )
    names = learn2learn_datasets().cu_birds200.SPLITS[SPLITS[split]]
    return split_dict(images, [data.data[i][1] for i in order], names.__getitem__)


# ImageNet statistics: the usual choice for CUB few-shot recipes
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
OPTIONS = ("include_imagenet_duplicates", "bounding_box_crop")
CUB = Benchmark("cub", "CUB-200-2011", "CUBirds200", _files, _convert, MEAN, STD, options=OPTIONS)


def load_cub(
    root: str,
    cache_dir: str,
    download: bool = False,
    image_size: int = 84,
    mean=None,
    std=None,
    include_imagenet_duplicates: bool = False,
    bounding_box_crop: bool = False,
) -> ImageDataset:
    return load_benchmark(
        CUB,
        root,
        cache_dir,
        download,
        image_size,
        mean,
        std,
        include_imagenet_duplicates=include_imagenet_duplicates,
        bounding_box_crop=bounding_box_crop,
    )

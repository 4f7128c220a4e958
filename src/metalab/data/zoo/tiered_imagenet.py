"""tiered-ImageNet (Ren et al. 2018): 608 ImageNet classes grouped into 34 categories, split by
category into 351 / 97 / 160 classes, 84x84 RGB.

Files (learn2learn's format, ``learn2learn.vision.datasets.TieredImagenet``), in
``<root>/tiered-imagenet/``: per split (``train``, ``val``, ``test``) ``<split>_images_png.pkl``
(a list of PNG-encoded images) and ``<split>_labels.pkl`` (a dict with ``label_specific``, the
class of each image, and ``label_specific_str``, the class names).
"""

from __future__ import annotations

import pickle
from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.benchmark import Benchmark, load_benchmark
from metalab.data.zoo.common import SPLITS, ZENODO, Needed, from_images, split_dict
from metalab.data.zoo.mini_imagenet import MINI_IMAGENET


def _files(root: Path) -> dict[str, list[Needed]]:
    folder = root / "tiered-imagenet"
    return {
        split: [
            Needed(
                folder / f"{split}_{part}.pkl",
                f"download it from {ZENODO}/tiered-imagenet-{split}_{part}.pkl",
            )
            for part in ("images_png", "labels")
        ]
        for split in SPLITS
    }


def _class_names(labels_file: Path) -> list[str] | None:
    with open(labels_file, "rb") as fh:
        names = pickle.load(fh, encoding="latin1").get("label_specific_str")
    return None if names is None else [str(n) for n in names]


def _convert(data, root: Path, split: str, files: list[Needed], image_size: int, what: str):
    images_file, labels_file = files
    images = from_images(
        len(data),
        lambda i: data[i][0],
        lambda i: f"{images_file.path}[{i}]",
        image_size,
        what,
        images_file.how,
    )
    names = _class_names(labels_file.path)
    return split_dict(images, data.labels, names.__getitem__ if names else str)


# learn2learn downloads all eight files at once; mini-ImageNet's statistics (ImageNet images)
TIERED_IMAGENET = Benchmark(
    "tiered_imagenet",
    "tiered-ImageNet",
    "TieredImagenet",
    _files,
    _convert,
    MINI_IMAGENET.mean,
    MINI_IMAGENET.std,
    pickles=True,
)


def load_tiered_imagenet(
    root: str, cache_dir: str, download: bool = False, image_size: int = 84, mean=None, std=None
) -> ImageDataset:
    return load_benchmark(TIERED_IMAGENET, root, cache_dir, download, image_size, mean, std)

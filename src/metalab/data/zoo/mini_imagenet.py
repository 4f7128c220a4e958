"""mini-ImageNet (Vinyals et al. 2016) with the class split of Ravi & Larochelle (2017): 64 / 16
/ 20 ImageNet classes of 600 images, 84x84 RGB.

Files (learn2learn's format, ``learn2learn.vision.datasets.MiniImagenet``): one pickle per split,
``<root>/mini-imagenet-cache-{train,validation,test}.pkl``, each a dict with ``image_data``
(``uint8 [N, 84, 84, 3]``) and ``class_dict`` (ImageNet synset -> list of row indices).
"""

from __future__ import annotations

from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.benchmark import Benchmark, load_benchmark
from metalab.data.zoo.common import SPLITS, ZENODO, Needed, from_arrays, split_dict


def _files(root: Path) -> dict[str, list[Needed]]:
    return {
        split: [
            Needed(
                root / f"mini-imagenet-cache-{mode}.pkl",
                f"download it from {ZENODO}/mini-imagenet-cache-{mode}.pkl",
            )
        ]
        for split, mode in SPLITS.items()
    }


def _convert(data, root: Path, split: str, files: list[Needed], image_size: int, what: str):
    # learn2learn also keeps a float32 copy (data.x); the uint8 pickle content is what we keep.
    images = from_arrays(data.data["image_data"], image_size, what, files[0])
    names = list(data.class_idx)  # synsets in label order
    return split_dict(images, data.y, names.__getitem__)


# the pixel statistics of the training split (as used by MetaOptNet and most ResNet-12 work)
MEAN, STD = (0.47214064, 0.45330829, 0.40996128), (0.27718385, 0.26775041, 0.28449041)
MINI_IMAGENET = Benchmark(
    "mini_imagenet",
    "mini-ImageNet",
    "MiniImagenet",
    _files,
    _convert,
    MEAN,
    STD,
    pickles=True,
    download_per_split=True,
)


def load_mini_imagenet(
    root: str, cache_dir: str, download: bool = False, image_size: int = 84, mean=None, std=None
) -> ImageDataset:
    return load_benchmark(MINI_IMAGENET, root, cache_dir, download, image_size, mean, std)

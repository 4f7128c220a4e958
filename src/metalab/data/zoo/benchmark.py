"""One loader for every benchmark of the zoo: a benchmark module declares what differs (its
files and where to get them, the learn2learn class that reads them, how a split's samples become
tensors, its normalisation) in a ``Benchmark``; ``load_benchmark`` does the rest (argument checks,
missing files, downloads, truncated pickles, the cache of converted splits)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from metalab.data.tensors import ImageDataset
from metalab.data.zoo.common import (
    SPLITS,
    Needed,
    check_args,
    check_pickle,
    ensure_files,
    learn2learn_datasets,
    load_split,
    read_l2l,
)
from metalab.errors import ConfigError


@dataclass(frozen=True)
class Benchmark:
    #: the cache files' tag (the dataset's config name)
    name: str
    #: the name in messages
    title: str
    #: the learn2learn.vision.datasets class that downloads and reads it
    l2l_class: str
    #: root -> the files each split is read from (the first one is named when reading fails)
    files: Callable[..., dict[str, list[Needed]]]
    #: (learn2learn dataset, root, split, files of the split, image size, title) -> the cached
    #: form of the split (metalab.data.zoo.common.split_dict)
    convert: Callable[..., dict]
    #: per-channel normalisation, in [0, 1] units
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: the files are pickles: checked for truncation before anything reads them
    pickles: bool = False
    #: learn2learn downloads one split per call (else everything at once)
    download_per_split: bool = False
    #: (root, download, fetch) -> None: makes the split files when they are missing (CIFAR-FS:
    #: learn2learn builds per-split folders from the downloaded archive)
    prepare: Callable[..., None] | None = None
    #: extra true/false options, passed to the learn2learn class and part of the cache key
    options: tuple[str, ...] = field(default_factory=tuple)

    def dataset_class(self):
        return getattr(learn2learn_datasets(), self.l2l_class)

    def fetch(self, root: Path, files: dict[str, list[Needed]], missing: list[Needed]) -> None:
        """Download through learn2learn: the splits with missing files, or all at once."""
        splits = [s for s in SPLITS if set(files[s]) & set(missing)]
        for split in splits if self.download_per_split else ["train"]:
            self.dataset_class()(str(root), mode=SPLITS[split], download=True)

    def read(
        self, root: Path, split: str, files: list[Needed], image_size: int, options: dict
    ) -> dict:
        data = read_l2l(
            files[0], lambda: self.dataset_class()(str(root), mode=SPLITS[split], **options)
        )
        return self.convert(data, root, split, files, image_size, f"{self.title} {split}")


def load_benchmark(
    benchmark: Benchmark,
    root,
    cache_dir,
    download: bool = False,
    image_size: int = 84,
    mean=None,
    std=None,
    **options,
) -> ImageDataset:
    """The benchmark's three splits, converted once into cached uint8 tensors. ``mean`` and
    ``std``: None for the benchmark's own statistics."""
    mean = benchmark.mean if mean is None else mean
    std = benchmark.std if std is None else std
    root = check_args(root, image_size, download, mean, std)
    for key, value in options.items():
        if key not in benchmark.options:
            raise ConfigError(f"dataset.{key}", value, f"{benchmark.title} has no such option")
        if not isinstance(value, bool):
            raise ConfigError(f"dataset.{key}", value, "must be true or false")
    files = benchmark.files(root, **options)
    needed = list(dict.fromkeys(n for split in SPLITS for n in files[split]))
    fetch = partial(benchmark.fetch, root, files)
    if benchmark.prepare is not None and not all(n.path.exists() for n in needed):
        benchmark.prepare(root, download, fetch)
        download = False  # what prepare could not make is missing for good
    ensure_files(benchmark.title, root, needed, download, fetch)
    if benchmark.pickles:
        for n in needed:
            check_pickle(n)
    splits = {
        split: load_split(
            cache_dir,
            benchmark.name,
            split,
            image_size,
            [n.path for n in files[split]],
            partial(benchmark.read, root, split, files[split], image_size, options),
            extra=tuple(options.items()),
        )
        for split in SPLITS
    }
    return ImageDataset(**splits, mean=tuple(mean), std=tuple(std))

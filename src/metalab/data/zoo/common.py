"""What the benchmark loaders share: argument checks, the files a dataset needs (and the one-line
errors when they are missing or corrupt), reading through learn2learn, the conversion of its
samples into one uint8 tensor per split, and the cache that makes the conversion a one-off."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metalab.data.cache import cache_key, cached, corrupt, signature
from metalab.data.tensors import ImageSplit
from metalab.errors import ConfigError, require_positive

# Our split names and learn2learn's ``mode`` for each.
SPLITS = {"train": "train", "val": "validation", "test": "test"}
# Where learn2learn downloads most of the benchmarks from.
ZENODO = "https://zenodo.org/record/7978538/files"
# Splits with at least this many images show a progress bar while they are converted.
BAR_MIN = 2000
# Bump when the conversion changes: part of every cache key.
RECIPE = "l2l-rgb-bilinear-v1"
_CHUNK = 1000


# ----------------------------------------------------------------------------- arguments


def check_args(root, image_size, download, mean, std) -> Path:
    """Check the arguments every loader takes; returns ``root`` as a Path."""
    if not isinstance(root, str | Path) or not str(root):
        raise ConfigError("dataset.root", root, "must be the folder that holds the files")
    require_positive("dataset.image_size", image_size)
    if not isinstance(download, bool):
        raise ConfigError("dataset.download", download, "must be true or false")
    for key, values in (("dataset.mean", mean), ("dataset.std", std)):
        ok = isinstance(values, Sequence) and len(values) == 3
        if not ok or any(isinstance(v, bool) or not isinstance(v, int | float) for v in values):
            raise ConfigError(key, values, "must be a list of 3 numbers, one per RGB channel")
    if any(s <= 0 for s in std):
        raise ConfigError("dataset.std", std, "every entry must be > 0")
    return Path(os.path.expanduser(str(root)))


# ----------------------------------------------------------------------------- required files


@dataclass(frozen=True)
class Needed:
    """A file or folder a dataset needs, and how to get it by hand."""

    path: Path
    how: str


def _listing(missing: list[Needed]) -> str:
    """The missing items: inline for one, one line each for several."""
    if len(missing) == 1:
        return f"{missing[0].path}: {missing[0].how}"
    return "".join(f"\n  {n.path}: {n.how}" for n in missing)


def missing_error(title: str, root: Path, missing: list[Needed]) -> ConfigError:
    auto = "or set dataset.download=true on a machine with internet"
    if len(missing) == 1:
        return ConfigError("dataset.root", root, f"{title} needs {_listing(missing)}, {auto}")
    return ConfigError(
        "dataset.root",
        root,
        f"{title} needs {len(missing)} files or folders "
        f"that are missing ({auto}):{_listing(missing)}",
    )


def ensure_files(
    title: str,
    root: Path,
    needed: list[Needed],
    download: bool,
    fetch: Callable[[list[Needed]], None],
) -> None:
    """Raise the one-line-per-item error for missing files, after ``fetch`` if ``download``."""
    missing = [n for n in needed if not n.path.exists()]
    if missing and download:
        try:
            fetch(missing)
        except ConfigError:
            raise
        except Exception as err:  # no network, a moved file, ...: the user's next step
            raise ConfigError(
                "dataset.download",
                True,
                f"downloading {title} into {root} through learn2learn failed "
                f"({type(err).__name__}: {err}); get it by hand: "
                f"{_listing(missing)}",
            ) from err
        missing = [n for n in needed if not n.path.exists()]
    if missing:
        raise missing_error(title, root, missing)


def check_pickle(needed: Needed) -> None:
    """Every pickle ends with the STOP opcode: a cheap check for a truncated download."""
    with open(needed.path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(size - 1, 0))
        if size == 0 or fh.read(1) != b".":
            raise corrupt(needed.path, needed.how, f"{size} bytes, no pickle end mark")


# ----------------------------------------------------------------------------- learn2learn


def learn2learn_datasets():
    """``learn2learn.vision.datasets``, imported late (slow) and without the notices its ``gym``
    import prints on stderr, so that errors stay one line."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            import learn2learn.vision.datasets as datasets
    except ImportError as err:
        raise ConfigError(
            "dataset",
            "a learn2learn benchmark",
            f"needs learn2learn, which does not import here ({err}); `make install` builds it",
        ) from err
    return datasets


def read_l2l(suspect: Needed, construct: Callable):
    """``construct()`` a learn2learn dataset; its failures become errors naming the file."""
    try:
        return construct()
    except ConfigError:
        raise
    except FileNotFoundError as err:
        raise ConfigError(
            "dataset.root", err.filename or suspect.path, f"not found; {suspect.how}"
        ) from err
    except Exception as err:  # unpickling, zip or format errors
        raise corrupt(suspect.path, suspect.how, err) from err


# ----------------------------------------------------------------------------- conversion


@contextlib.contextmanager
def progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """An ``advance(n)`` callback: a bar on stderr for large splits, nothing for small ones."""
    if total < BAR_MIN:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, Progress

    with Progress(
        *Progress.get_default_columns(), MofNCompleteColumn(), console=Console(stderr=True)
    ) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def rgb(image: Image.Image, size: int) -> torch.Tensor:
    """One image as ``uint8 [3, size, size]`` (resized with PIL's antialiasing bilinear)."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def from_arrays(arrays: np.ndarray, size: int, what: str, source: Needed) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` arrays (mini-ImageNet, FC100) as ``uint8 [N, 3, size, size]``."""
    if not isinstance(arrays, np.ndarray) or arrays.ndim != 4 or arrays.shape[3] != 3:
        shape = getattr(arrays, "shape", type(arrays).__name__)
        raise corrupt(source.path, source.how, f"images of shape {shape}, not [N, H, W, 3]")
    out = torch.empty((len(arrays), 3, size, size), dtype=torch.uint8)
    with progress(what, len(arrays)) as advance:
        for lo in range(0, len(arrays), _CHUNK):
            block = arrays[lo : lo + _CHUNK].astype(np.uint8, copy=False)
            if block.shape[1:3] == (size, size):
                out[lo : lo + len(block)] = torch.from_numpy(block).permute(0, 3, 1, 2)
            else:
                for i, a in enumerate(block):
                    out[lo + i] = rgb(Image.fromarray(a), size)
            advance(len(block))
    return out


def from_images(
    n: int,
    get: Callable[[int], Image.Image],
    where: Callable[[int], str],
    size: int,
    what: str,
    how: str,
) -> torch.Tensor:
    """Decode ``n`` PIL images (``get(i)``) into ``uint8 [n, 3, size, size]``."""
    out = torch.empty((n, 3, size, size), dtype=torch.uint8)
    with progress(what, n) as advance:
        for i in range(n):
            try:
                out[i] = rgb(get(i), size)
            except Exception as err:
                raise corrupt(where(i), how, err) from err
            advance(1)
    return out


def split_dict(images: torch.Tensor, labels, name_of: Callable[[int], str]) -> dict:
    """The cached form of a split: the labels that occur, renumbered ``0..n_classes-1`` in
    sorted order, and ``name_of(label)`` for each."""
    values, labels = np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)
    return {
        "images": images,
        "labels": torch.from_numpy(labels.astype(np.int64)),
        "class_names": [str(name_of(int(v))) for v in values],
    }


def load_split(
    cache_dir,
    tag: str,
    split: str,
    image_size: int,
    sources: Sequence[Path],
    build: Callable[[], dict],
    extra=(),
) -> ImageSplit:
    """One split from the cache, built by ``build()`` when the sources changed or on first use."""
    key = cache_key(tag, split, image_size, RECIPE, signature(sources), extra)
    path = Path(cache_dir) / f"{tag}_{split}_{image_size}px_{key}.pt"
    value = cached(path, build)
    return ImageSplit(value["images"], value["labels"], value["class_names"])

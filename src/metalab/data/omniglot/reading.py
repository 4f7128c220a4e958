"""Reading an Omniglot set: every image decoded once (inverted, resized with PIL's antialiasing
filter) into uint8 tensors, cached under a key of the set's image files."""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metalab.data.cache import cache_key, cached, corrupt, signature
from metalab.data.omniglot.sets import SOURCE_URL, OmniglotSet
from metalab.errors import ConfigError

# Bump when the decoding/resizing recipe changes: part of the cache key.
RECIPE = "invert-L-lanczos-v1"


def png_key(relpath: str) -> tuple[str, str, str] | None:
    """``(alphabet, character, file)`` for an image path inside a set, else None."""
    parts = [p for p in relpath.replace("\\", "/").split("/") if p]
    if len(parts) < 3 or not parts[-1].lower().endswith(".png"):
        return None
    if any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return parts[-3], parts[-2], parts[-1]


def _decode(data: bytes, image_size: int, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("L")
            if img.size != (image_size, image_size):
                # Invert first so the antialiasing filter sees strokes on a black background.
                img = Image.fromarray(255 - np.asarray(img))
                img = img.resize((image_size, image_size), Image.Resampling.LANCZOS)
                return np.asarray(img, dtype=np.uint8)
            return 255 - np.asarray(img, dtype=np.uint8)
    except Exception as err:
        raise corrupt(where, "unzip or download the set again", err) from err


def build_set(source: OmniglotSet, image_size: int) -> dict:
    """Decode every image of a set: ``images uint8 [N,1,S,S]``, ``labels`` and ``class_names``."""
    entries: list[tuple[tuple[str, str, str], str]] = []  # ((alphabet, char, file), locator)
    archive = None
    try:
        if source.is_zip:
            try:
                archive = zipfile.ZipFile(source.path)
            except (zipfile.BadZipFile, OSError) as err:
                raise ConfigError(
                    "dataset.root",
                    source.path,
                    f"not a readable zip ({type(err).__name__}: {err}); the file is corrupt: "
                    f"delete it and download it again from {SOURCE_URL}",
                ) from err
            for info in archive.infolist():
                key = None if info.is_dir() else png_key(info.filename)
                if key is not None:
                    entries.append((key, info.filename))
        else:
            for dirpath, _dirs, filenames in os.walk(source.path):
                for fname in filenames:
                    full = os.path.join(dirpath, fname)
                    key = png_key(os.path.relpath(full, source.path))
                    if key is not None:
                        entries.append((key, full))
        if not entries:
            raise ConfigError(
                "dataset.root",
                source.path,
                f"no <alphabet>/<character>/*.png images in Omniglot set '{source.name}'; "
                f"unzip the authors' {source.name}.zip from {SOURCE_URL} there",
            )
        entries.sort()
        images = np.empty((len(entries), 1, image_size, image_size), dtype=np.uint8)
        class_names: list[str] = []
        labels = np.empty(len(entries), dtype=np.int64)
        for i, ((alphabet, char, _file), loc) in enumerate(entries):
            if archive is not None:
                where = f"{source.path}:{loc}"
                try:
                    data = archive.read(loc)
                except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
                    raise ConfigError(
                        "dataset.root",
                        where,
                        f"cannot read this zip member ({type(err).__name__}: {err}); the zip is "
                        f"corrupt: delete it and download it again from {SOURCE_URL}",
                    ) from err
            else:
                where = loc
                with open(loc, "rb") as fh:
                    data = fh.read()
            name = f"{alphabet}/{char}"
            if not class_names or class_names[-1] != name:
                class_names.append(name)
            labels[i] = len(class_names) - 1
            images[i, 0] = _decode(data, image_size, where)
    finally:
        if archive is not None:
            archive.close()
    return {
        "images": torch.from_numpy(images),
        "labels": torch.from_numpy(labels),
        "class_names": class_names,
    }


def read_set(source: OmniglotSet, image_size: int, cache_dir: str | Path) -> dict:
    """The decoded set, from the cache when its sources are unchanged."""
    images = signature([source.path], keep=lambda rel: png_key(rel) is not None)
    key = cache_key("omniglot", source.name, image_size, RECIPE, images)
    path = Path(cache_dir) / f"omniglot_{source.name}_{image_size}px_{key}.pt"
    return cached(path, lambda: build_set(source, image_size))

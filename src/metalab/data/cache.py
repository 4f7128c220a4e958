"""Disk cache for loaded datasets: each entry carries a checksum of its content, is written to a
temporary file, synced and renamed into place, and is rebuilt (saying so) when it is damaged.
Also what every dataset reader shares about its source files: their signature (part of a cache
key) and the one-line error for a file that cannot be read."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from metalab.errors import ConfigError
from metalab.run.rundir import write_atomic


def cache_key(*parts) -> str:
    """A short stable hash of everything the cached content depends on."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def checksum(value: dict) -> str:
    """SHA-256 of the tensors' bytes (and the other entries' text), key by key."""
    digest = hashlib.sha256()
    for key in sorted(value):
        item = value[key]
        digest.update(key.encode())
        if isinstance(item, torch.Tensor):
            digest.update(f"{item.dtype}{tuple(item.shape)}".encode())
            digest.update(item.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        else:
            digest.update(repr(item).encode())
    return digest.hexdigest()


def load_entry(path: Path) -> dict | None:
    """The cached dict, or None (with one line saying why) when it must be rebuilt."""
    try:
        entry = torch.load(path, weights_only=True)
    except Exception as err:
        reason = f"unreadable ({type(err).__name__})"
    else:
        if not isinstance(entry, dict) or "checksum" not in entry:
            reason = "written by an older metalab, without a checksum"
        elif checksum(entry["value"]) != entry["checksum"]:
            reason = "damaged (its checksum does not match its content)"
        else:
            return entry["value"]
    print(f"metalab: dataset cache {path} is {reason}: rebuilding it", file=sys.stderr)
    return None


def cached(path: str | Path, build: Callable[[], dict]) -> dict:
    """Return the dict of tensors stored at ``path``, building and saving it on a miss."""
    path = Path(path)
    if path.exists():
        value = load_entry(path)
        if value is not None:
            return value
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"checksum": checksum(value), "value": value}
    write_atomic(path, lambda f: torch.save(entry, f))
    return value


def signature(paths: Sequence[Path], keep: Callable[[str], bool] | None = None) -> tuple:
    """Sizes and modification times of the source files (folders: of every file inside whose
    relative path ``keep`` accepts): part of a cache key, so a changed source is rebuilt."""
    parts = []
    for path in paths:
        if path.is_dir():
            digest = hashlib.sha256()
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames.sort()
                for name in sorted(filenames):
                    rel = os.path.relpath(os.path.join(dirpath, name), path)
                    if keep is not None and not keep(rel):
                        continue
                    st = os.stat(os.path.join(dirpath, name))
                    digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            parts.append((str(path.resolve()), digest.hexdigest()))
        else:
            st = path.stat()
            parts.append((str(path.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(parts)


def corrupt(path, how: str, err: BaseException | str) -> ConfigError:
    why = err if isinstance(err, str) else f"{type(err).__name__}: {err}"
    return ConfigError(
        "dataset.root",
        path,
        f"cannot read this file ({why}); it is truncated or corrupt: delete it and {how}",
    )

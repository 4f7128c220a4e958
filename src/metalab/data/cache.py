"""Disk cache for loaded datasets: written to a temporary file, then renamed into place."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch


def cache_key(*parts) -> str:
    """A short stable hash of everything the cached content depends on."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def cached(path: str | Path, build: Callable[[], dict]) -> dict:
    """Return the dict of tensors stored at ``path``, building and saving it on a miss."""
    path = Path(path)
    if path.exists():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a truncated cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(value, tmp)
    os.replace(tmp, path)
    return value

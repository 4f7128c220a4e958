"""Disk cache for loaded datasets: each entry carries a checksum of its content, is written to a
temporary file, synced and renamed into place, and is rebuilt (saying so) when it is damaged."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import torch

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

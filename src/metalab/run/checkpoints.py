"""Checkpoints a run can trust: written whole, read only as tensors and plain data, found only
inside the run's own folder, and checked before a resume relies on them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from metalab.errors import ConfigError
from metalab.run.rundir import write_atomic


class UnreadableCheckpoint(Exception):
    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint, loaded with ``weights_only`` (a file can hold no code to run)."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save's zip format
            raise UnreadableCheckpoint(Path(path), "not a checkpoint (not a torch.save file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        if "Weights only load failed" in str(err):
            reason = "holds objects other than tensors and plain data (refused)"
        else:
            first = str(err).strip().split(". ")[0][:120] or type(err).__name__
            reason = f"truncated or damaged ({first})"
        raise UnreadableCheckpoint(Path(path), f"unreadable: {reason}") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UnreadableCheckpoint(Path(path), "not a training checkpoint (no state_dict)")
    return ckpt


class AtomicCheckpointIO(TorchCheckpointIO):
    """Every checkpoint (last, best, hpc_ckpt_<n>) is written whole or not at all."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        return read_checkpoint(path)


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved paths follow the run folder: a copied or moved run resumes
    with its best checkpoint in its own folder, never the folder it was copied from."""

    PATHS = ("best_model_path", "kth_best_model_path", "last_model_path")

    @property
    def state_key(self) -> str:  # ModelCheckpoint's: checkpoints stay readable both ways
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict: dict) -> None:
        old = state_dict.get("dirpath")
        if old and self.dirpath and old != self.dirpath:

            def moved(path: str) -> str:
                inside = path.startswith(old.rstrip(os.sep) + os.sep)
                return (
                    os.path.join(self.dirpath, path[len(old.rstrip(os.sep)) + 1 :])
                    if inside
                    else ""
                )

            state_dict = {**state_dict, "dirpath": self.dirpath}
            for key in self.PATHS:
                if state_dict.get(key):
                    state_dict[key] = moved(state_dict[key])
            state_dict["best_k_models"] = {
                moved(p): v for p, v in (state_dict.get("best_k_models") or {}).items() if moved(p)
            }
        super().load_state_dict(state_dict)


def resume_candidates(run_dir: Path) -> list[Path]:
    """The checkpoints a run may continue from, newest first: checkpoints/last.ckpt, the
    hpc_ckpt_<n>.ckpt Lightning saves on SLURM's warning signal, checkpoints/best.ckpt."""
    found = [
        run_dir / "checkpoints" / "last.ckpt",
        *run_dir.glob("hpc_ckpt_*.ckpt"),
        run_dir / "checkpoints" / "best.ckpt",
    ]
    found = [path for path in found if path.is_file()]
    # a stable sort: checkpoints written in the same instant keep the order above
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


def newest_readable(run_dir: Path, quiet: bool = False) -> tuple[Path, int] | None:
    """The newest checkpoint of the folder that loads, and its step; each unreadable one on
    the way is named in one line (unless ``quiet``: the other ranks of a run)."""
    candidates = resume_candidates(run_dir)
    for i, path in enumerate(candidates):
        try:
            return path, int(read_checkpoint(path).get("global_step", 0))
        except UnreadableCheckpoint as err:
            instead = (
                f"trying {candidates[i + 1].name}" if i + 1 < len(candidates) else "starting over"
            )
            if not quiet:
                print(f"metalab: {err}; {instead}", file=sys.stderr)
    return None


def user_checkpoint(key: str, path: str) -> tuple[Path, int]:
    """A checkpoint the user named, and its step: it must exist and load, else a ConfigError
    for ``key``."""
    ckpt = Path(path)
    if not ckpt.is_file():
        raise ConfigError(key, path, "no such checkpoint file")
    try:
        step = int(read_checkpoint(ckpt).get("global_step", 0))
    except UnreadableCheckpoint as err:
        raise ConfigError(
            key,
            path,
            f"{err.reason}; give a .ckpt file a run wrote, e.g. <run>/checkpoints/best.ckpt",
        ) from err
    return ckpt, step

"""Starting a run from another run's weights: ``init_from=<run folder or .ckpt>`` copies that
run's backbone (``net.*``, the head excepted) into the new model before training (Meta-Baseline:
ProtoNet meta-trained from a pretrained backbone). Checked before any data is loaded."""

from __future__ import annotations

from pathlib import Path

import torch

from metalab.errors import ConfigError
from metalab.run.checkpoints import UnreadableCheckpoint, read_checkpoint


def checkpoint_of(key: str, path: str) -> Path:
    """The checkpoint ``path`` names: a .ckpt file, or a run folder's tested weights
    (checkpoints/best.ckpt, else checkpoints/last.ckpt)."""
    given = Path(str(path))
    if given.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (given / "checkpoints" / name).is_file():
                return given / "checkpoints" / name
        raise ConfigError(
            key,
            path,
            "a run folder without checkpoints/best.ckpt or last.ckpt; "
            "give a finished run's folder or a .ckpt file",
        )
    if not given.is_file():
        raise ConfigError(key, path, "no such run folder or checkpoint file")
    return given


def read_state(key: str, path: str) -> dict[str, torch.Tensor]:
    """The state dict of the checkpoint ``path`` names, on the CPU."""
    ckpt = checkpoint_of(key, path)
    try:
        return read_checkpoint(ckpt)["state_dict"]
    except UnreadableCheckpoint as err:
        raise ConfigError(
            key, path, f"{err.reason}; give a run folder or a .ckpt a run wrote"
        ) from err


def load_backbone(model: torch.nn.Module, key: str, path: str) -> None:
    """Copy the checkpoint's ``net.*`` weights into ``model.net``, all but its head, which the
    new run learns; a checkpoint of another backbone or shape stops with one line."""
    state = read_state(key, path)
    mine = {k: v for k, v in model.net.state_dict().items() if not k.startswith("head.")}
    theirs = {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}
    missing = [k for k in mine if k not in theirs]
    if missing:
        raise ConfigError(
            key,
            path,
            f"has no backbone weights net.{missing[0]} (and "
            f"{len(missing) - 1} more): not a run of this backbone",
        )
    for name, value in mine.items():
        if theirs[name].shape != value.shape:
            raise ConfigError(
                key,
                path,
                f"net.{name} is {list(theirs[name].shape)} there and "
                f"{list(value.shape)} here: a run of another backbone or size",
            )
    model.net.load_state_dict({**model.net.state_dict(), **{k: theirs[k] for k in mine}})

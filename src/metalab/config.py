"""Config helpers: the project-root resolver and the up-front checks of a run's config."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from metalab import launch
from metalab.errors import ConfigError, require_positive

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def project_root() -> str:
    """The metalab checkout containing the working directory, else the working directory."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / "train.yaml").exists() and (folder / "pyproject.toml").exists():
            return str(folder)
    return str(here)


if not OmegaConf.has_resolver("metalab_root"):
    OmegaConf.register_new_resolver("metalab_root", project_root)


#: what a dataset's samples are (``dataset.inputs``; regression data are vectors)
INPUTS = ("image", "text")
#: backbones to suggest for each kind of input
SUGGEST = {"image": "conv4, resnet12 or mlp", "text": "text_cnn, text_transformer or "
           "text_pretrained", "vector": "mlp"}


def input_kind(dataset: DictConfig) -> str:
    """image, text (token ids; ``inputs: text``) or vector (regression)."""
    if dataset.task == "regression":
        return "vector"
    kind = dataset.get("inputs", "image")
    if kind not in INPUTS:
        raise ConfigError("dataset.inputs", kind, f"allowed: {', '.join(INPUTS)}")
    return kind


def input_shape(dataset: DictConfig) -> tuple[int, ...]:
    kind = input_kind(dataset)
    if kind == "vector":
        return (1,)
    if kind == "text":
        return (dataset.max_length,)
    return (dataset.channels, dataset.image_size, dataset.image_size)


def check_config(cfg: DictConfig) -> None:
    """Everything that can be checked before loading data or building a model."""
    for key in ("steps", "val_every", "test_episodes", "eval_batch", "algorithm.meta_batch"):
        require_positive(key, OmegaConf.select(cfg, key))
    if not isinstance(cfg.val_episodes, int) or cfg.val_episodes < 0:
        raise ConfigError("val_episodes", cfg.val_episodes, "must be an integer >= 0")
    d = cfg.dataset
    prefixes = ("", "train_") if d.task == "classification" else ("",)
    for prefix in prefixes:
        for what in ("ways", "shots", "queries"):
            if what != "ways" or d.task == "classification":
                require_positive(f"dataset.{prefix}{what}", d[f"{prefix}{what}"])
    supported = get_class(cfg.algorithm._target_).tasks
    if d.task not in supported:
        raise ConfigError("algorithm", cfg.algorithm.name,
                          f"learns {'/'.join(supported)} tasks only, and dataset={d.name} is a "
                          f"{d.task} dataset")
    kind, takes = input_kind(d), get_class(cfg.backbone._target_).inputs
    if kind not in takes:
        has = "is a regression dataset" if kind == "vector" else f"has {kind} inputs"
        raise ConfigError("backbone", cfg.backbone.name,
                          f"needs {' or '.join(takes)} inputs, and dataset={d.name} {has}; "
                          f"use backbone={SUGGEST[kind]}")
    if "path" in cfg.backbone:  # a pretrained model: a local folder, checked before any loading
        from metalab.backbones.text import require_model_folder

        require_model_folder("backbone.path", cfg.backbone.path)
    if cfg.resume not in ("auto", "never"):
        raise ConfigError("resume", cfg.resume, "allowed: auto, never")
    check_hardware(cfg.hardware)
    world = processes(cfg.hardware)
    if cfg.algorithm.meta_batch % world:
        raise ConfigError("algorithm.meta_batch", cfg.algorithm.meta_batch,
                          f"must divide by the number of processes ({world}): the meta-batch "
                          "is global, each process takes an equal share")


def processes(hw: DictConfig) -> int:
    """Training processes in all (1 unless a DDP strategy with a fixed device count)."""
    if not str(hw.strategy).startswith("ddp") or not isinstance(hw.devices, int):
        return 1
    return hw.devices * hw.num_nodes


def check_hardware(hw: DictConfig) -> None:
    if hw.accelerator in ("gpu", "cuda"):
        have = torch.cuda.device_count()
        if have == 0:
            raise ConfigError("hardware.accelerator", hw.accelerator,
                              "no CUDA GPU is visible on this machine; use hardware=cpu "
                              "or hardware=ddp_cpu")
        if isinstance(hw.devices, int) and hw.devices > have:
            raise ConfigError("hardware.devices", hw.devices, f"this machine has {have} GPU(s)")
    elif hw.accelerator != "cpu":
        raise ConfigError("hardware.accelerator", hw.accelerator, "allowed: cpu, gpu")
    if hw.devices != -1:
        require_positive("hardware.devices", hw.devices)
    if hw.num_nodes > 1 and not launch.launched_externally():
        raise ConfigError("hardware.num_nodes", hw.num_nodes,
                          "several nodes need a cluster launcher that starts one process per "
                          "device on each node: submit with -m launcher=slurm")

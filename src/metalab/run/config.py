"""Config helpers: the project-root resolver and the up-front checks of a run's config."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra.utils import get_class, get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from metalab.algorithms.protocols import check_protocol
from metalab.data.episodes import EpisodeShape
from metalab.errors import ConfigError, require_positive
from metalab.run import launch, rundir
from metalab.tasks import task_kind

CONF_DIR = str(Path(__file__).resolve().parents[3] / "conf")


def project_root() -> str:
    """The metalab checkout containing the working directory, else the working directory."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / "train.yaml").exists() and (folder / "pyproject.toml").exists():
            return str(folder)
    return str(here)


if not OmegaConf.has_resolver("metalab_root"):
    OmegaConf.register_new_resolver("metalab_root", project_root)


def config_groups() -> str:
    """``group: option, ...`` for each choice of metalab-train (``--help``); options whose name
    starts with "_" are bases for other options, not choices."""
    lines = []
    folders = Path(CONF_DIR).iterdir()  # conf/_bases: what the options build on
    for group in sorted(p for p in folders if p.is_dir() and p.name not in ("hydra", "_bases")):
        options = sorted(f.stem for f in group.glob("*.yaml") if not f.stem.startswith("_"))
        lines.append(f"{group.name}: {', '.join(options)}")
    return "\n".join(lines)


if not OmegaConf.has_resolver("metalab_groups"):  # conf/hydra: the --help text
    OmegaConf.register_new_resolver("metalab_groups", config_groups)
if not OmegaConf.has_resolver("metalab_unique"):  # conf/hydra: run folders never shared
    OmegaConf.register_new_resolver("metalab_unique", rundir.unique_suffix, use_cache=True)


def compose(
    overrides=(), output_dir=None, hydra: bool = False, config: str = "train"
) -> DictConfig:
    """The config exactly as metalab-train (``config="eval"``: metalab-eval) builds it from
    ``overrides``, for tests, benchmarks and notebooks; ``output_dir`` sets the run folder,
    ``hydra`` keeps Hydra's own node (run and sweep folders)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return hydra_compose(config, overrides=[*overrides, *extra], return_hydra_config=hydra)


def input_shape(dataset: DictConfig) -> tuple[int, ...]:
    return task_kind(dataset.task).input_shape(dataset)


def check_config(cfg: DictConfig) -> None:
    """Everything that can be checked before loading data; the model is built once, dry."""
    check_targets(cfg)  # first: nothing below imports or builds anything before this check
    check_override_types(cfg)
    check_protocol(cfg.get("protocol", "transductive"), cfg.get("inductive_stats", "support"))
    for key in (
        "steps",
        "val_every",
        "test_episodes",
        "eval_batch",
        "algorithm.meta_batch",
        "log_every",
    ):
        require_positive(key, OmegaConf.select(cfg, key))
    for key, value in cfg.backbone.items():
        for size in value if isinstance(value, ListConfig) else [value]:
            if isinstance(size, int) and not isinstance(size, bool):  # widths, depths
                require_positive(f"backbone.{key}", size)
    for key, value in (cfg.algorithm.get("scheduler") or {}).items():
        if isinstance(value, int) and not isinstance(value, bool) and key != "last_epoch":
            require_positive(f"algorithm.scheduler.{key}", value)  # step sizes, periods
    if not isinstance(cfg.val_episodes, int) or cfg.val_episodes < 0:
        raise ConfigError("val_episodes", cfg.val_episodes, "must be an integer >= 0")
    d = cfg.dataset
    kind = task_kind(d.task)
    for training in (False, True) if kind.has_classes else (False,):
        shape = EpisodeShape.of(d, training)
        for what in ("ways", "shots", "queries") if kind.has_classes else ("shots", "queries"):
            require_positive(shape.key(what), getattr(shape, what))
    supported = get_class(cfg.algorithm._target_).tasks
    if kind.name not in supported:
        raise ConfigError(
            "algorithm",
            cfg.algorithm.name,
            f"learns {'/'.join(supported)} tasks only, and dataset={d.name} is a "
            f"{kind.name} dataset",
        )
    algorithm, backbone = get_class(cfg.algorithm._target_), get_class(cfg.backbone._target_)
    algorithm.check_backbone(backbone, cfg.backbone.name)
    if hasattr(algorithm, "check_run"):  # pretraining: its batch settings
        algorithm.check_run(cfg)
    if cfg.algorithm.get("needs_init") and not cfg.get("init_from"):
        raise ConfigError(
            "init_from",
            None,
            f"algorithm={cfg.algorithm.name} trains from a "
            "pretrained backbone: init_from=<run folder or .ckpt of a baseline or "
            "rfs run>",
        )
    inputs = kind.inputs(d)
    if inputs not in backbone.inputs:
        has = f"is a {kind.name} dataset" if inputs == "vector" else f"has {inputs} inputs"
        raise ConfigError(
            "backbone",
            cfg.backbone.name,
            f"needs {' or '.join(backbone.inputs)} inputs, and dataset={d.name} "
            f"{has}; use backbone={kind.suggest_backbones(d)}",
        )
    if "path" in cfg.backbone:  # a pretrained model: a local folder, checked before any loading
        from metalab.backbones.text import require_model_folder

        require_model_folder("backbone.path", cfg.backbone.path)
    if cfg.resume not in ("auto", "never"):
        raise ConfigError("resume", cfg.resume, "allowed: auto, never")
    check_hardware(cfg.hardware)
    spread_meta_batch(cfg)
    world = processes(cfg.hardware)
    if cfg.algorithm.meta_batch % world:
        raise ConfigError(
            "algorithm.meta_batch",
            cfg.algorithm.meta_batch,
            f"must divide by the number of processes ({world}): the meta-batch "
            "is global, each process takes an equal share",
        )
    for key, allowed in (("val_episodes", "0 or at least"), ("test_episodes", "at least")):
        if 0 < cfg[key] < world:  # each process evaluates a share: none would stop the gather
            raise ConfigError(key, cfg[key], f"must be {allowed} the number of processes ({world})")
    check_build(cfg)


def spread_meta_batch(cfg: DictConfig) -> None:
    """meta_batch=1 (one episode per step, ProtoNet's default) on several processes: one
    episode per process, so hardware=ddp_cpu and multi_gpu run every experiment as it is.
    An episode cannot be split over processes; a larger meta-batch is split as it is."""
    world = processes(cfg.hardware)
    if cfg.algorithm.meta_batch == 1 and world > 1:
        cfg.algorithm.meta_batch = world
        print(
            f"metalab: algorithm.meta_batch=1 on {world} processes: one task per process, "
            f"{world} per step",
            file=sys.stderr,
        )


# What a config file may build (hydra's _target_): metalab's algorithms, backbones and dataset
# loaders, torch's optimizers and schedulers, and the loggers. A file is data, never a program.
TARGET_MODULES = (
    "metalab.",
    "torch.optim.",
    "pytorch_lightning.loggers.",
    "lightning.pytorch.loggers.",
)


def allowed_target(obj) -> bool:
    from pytorch_lightning.loggers import Logger

    from metalab.algorithms.base import MetaLearner
    from metalab.backbones.base import Backbone
    from metalab.tracking.wandb import wandb_logger

    module = getattr(obj, "__module__", None) or ""
    if isinstance(obj, type):
        return module == "metalab.rl.envs" or issubclass(  # environments: meta-RL's tasks
            obj,
            (
                MetaLearner,
                Backbone,
                torch.optim.Optimizer,
                torch.optim.lr_scheduler.LRScheduler,
                Logger,
            ),
        )
    loader = module.startswith("metalab.data.") and obj.__name__.startswith("load_")
    return callable(obj) and (loader or obj is wandb_logger)


def check_targets(cfg: DictConfig) -> None:
    for path, target in find_targets(cfg):
        allowed = isinstance(target, str) and target.startswith(TARGET_MODULES)
        if allowed:
            try:
                allowed = allowed_target(get_object(target))
            except Exception:  # not found, or not importable: not allowed either
                allowed = False
        if not allowed:
            raise ConfigError(
                f"{path}._target_" if path else "_target_",
                target,
                "not allowed: a config builds only metalab's algorithms, backbones "
                "and dataset loaders (load_*), RL environments, torch.optim "
                "optimizers and schedulers, and Lightning or W&B loggers",
            )


def find_targets(node, path: str = "") -> list[tuple[str, object]]:
    found = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            if key == "_target_":
                target = OmegaConf.select(node, "_target_", throw_on_resolution_failure=False)
                found.append((path, target))
            else:
                child = node._get_node(key)
                found += find_targets(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            found += find_targets(node._get_node(i), f"{path}[{i}]")
    return found


def user_overrides() -> list[tuple[str, object]]:
    """(key, value) of the command line's value overrides of metalab-train; none elsewhere."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized() or HydraConfig.get().job.config_name != "train":
        return []
    hc = HydraConfig.get()
    groups = set(hc.runtime.choices)
    out = []
    for o in OverridesParser.create().parse_overrides(list(hc.overrides.task)):
        key = o.key_or_group
        if key not in groups and not key.startswith("hydra.") and not o.is_delete():
            out.append((key, o))
    return out


def check_override_types(cfg: DictConfig) -> None:
    """A value given on the command line has the type of the default it replaces: seed=abc or
    lr=abc stop here, not deep inside torch."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    overrides = user_overrides()
    if not overrides or not GlobalHydra.instance().is_initialized():
        return
    hc = HydraConfig.get()
    groups = [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") in hc.runtime.choices]
    defaults = compose(config_name="train", overrides=groups)
    for key, _override in overrides:
        default = OmegaConf.select(defaults, key, default=None, throw_on_resolution_failure=False)
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if isinstance(default, bool):
            ok, what = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
        elif isinstance(default, float):
            ok, what = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        else:
            continue
        if not ok:
            raise ConfigError(key, value, f"must be {what} (the default is {default})")


def check_build(cfg: DictConfig) -> None:
    """Build the model, its optimizer and its scheduler once on the CPU (cheap, before the data
    is loaded): a value they reject names the key the user set."""
    from metalab.run.training import build_model

    with torch.random.fork_rng(devices=[]):  # the run's own random draws are untouched
        try:
            model = build_model(cfg)
        except Exception as err:
            raise blame(("backbone", "algorithm"), cfg, "the model", err) from err
        if cfg.get("init_from"):  # the weights exist and fit this backbone
            from metalab.run.init_from import load_backbone

            load_backbone(model, "init_from", cfg.init_from)
        try:
            opt = model.configure_optimizers()
        except Exception as err:
            raise blame(
                ("algorithm.optimizer", "algorithm.scheduler"), cfg, "the optimizer", err
            ) from err
        if isinstance(opt, dict):
            try:
                opt["optimizer"].step()  # no gradients: changes nothing
                opt["lr_scheduler"]["scheduler"].step()
            except Exception as err:
                raise blame(("algorithm.scheduler",), cfg, "the scheduler", err) from err


def blame(groups: tuple[str, ...], cfg: DictConfig, what: str, err: Exception) -> ConfigError:
    """The user's override under ``groups`` that ``err`` comes from (if one), else the group;
    a ConfigError raised while building (also inside Hydra's instantiate) already names it."""
    cause = err
    while cause is not None:
        if isinstance(cause, ConfigError):
            return cause
        cause = cause.__cause__ or cause.__context__
    changed = [(k, o) for k, o in user_overrides() if k.startswith(groups)]
    reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
    reason = f"{what} cannot be built with it ({type(err).__name__}: {reason[:200]})"
    if len(changed) == 1:
        key = changed[0][0]
        return ConfigError(key, OmegaConf.select(cfg, key), reason)
    group = groups[0]
    name = OmegaConf.select(cfg, f"{group}.name", default=None) or OmegaConf.select(
        cfg, f"{group}._target_", default="?"
    )
    return ConfigError(group, name, reason)


def processes(hw: DictConfig) -> int:
    """Training processes in all (1 unless a DDP strategy with a fixed device count)."""
    if not str(hw.strategy).startswith("ddp") or not isinstance(hw.devices, int):
        return 1
    return hw.devices * hw.num_nodes


PRECISIONS = (
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "64-true",
    "transformer-engine",
    "transformer-engine-float16",
    "32",
    "16",
    "bf16",
    "64",
    32,
    16,
    64,
)


def check_hardware(hw: DictConfig) -> None:
    # first: several nodes on this machine is a launch mistake, whatever the accelerator
    if hw.num_nodes > 1 and not launch.launched_externally():
        raise ConfigError(
            "hardware.num_nodes",
            hw.num_nodes,
            "several nodes need a cluster launcher that starts one process per "
            "device on each node: submit with -m launcher=slurm",
        )
    if hw.precision not in PRECISIONS:
        raise ConfigError(
            "hardware.precision",
            hw.precision,
            f"allowed: {', '.join(str(p) for p in PRECISIONS[:6])}",
        )
    if hw.accelerator in ("gpu", "cuda"):
        have = torch.cuda.device_count()
        if have == 0:
            raise ConfigError(
                "hardware.accelerator",
                hw.accelerator,
                "no CUDA GPU is visible on this machine; use hardware=cpu or hardware=ddp_cpu",
            )
        if isinstance(hw.devices, int) and hw.devices > have:
            raise ConfigError("hardware.devices", hw.devices, f"this machine has {have} GPU(s)")
    elif hw.accelerator != "cpu":
        raise ConfigError("hardware.accelerator", hw.accelerator, "allowed: cpu, gpu")
    if hw.devices != -1:
        require_positive("hardware.devices", hw.devices)

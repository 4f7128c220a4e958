"""One training run: data, model, trainer, fit, test, results. Shared by the Hydra entry point
(rank 0) and the extra local ranks (metalab.run.worker), which read the same resolved config."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from metalab.data.datamodule import EpisodeDataModule
from metalab.errors import ConfigError, RunError
from metalab.run import launch, rundir
from metalab.run.callbacks import (
    ResumedLogSteps,
    SpeedMonitor,
    StepProgressBar,
    StopOnNonFiniteLoss,
)
from metalab.run.checkpoints import (
    AtomicCheckpointIO,
    RunCheckpoint,
    newest_readable,
    user_checkpoint,
)
from metalab.run.config import check_config, input_shape, processes
from metalab.run.pruning import trial_callbacks
from metalab.tasks import task_kind
from metalab.tracking.csv import keep_rows_before
from metalab.tracking.summary import print_results, write_results


class _NoTips(logging.Filter):
    """Lightning's advertisement of its cloud logger: not about this run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


_NO_TIPS = _NoTips()


def quiet_known_warnings() -> None:
    """Warnings that do not apply here: evaluation metrics are gathered by hand before logging
    (so no sync_dist), the CSV logger shares the run folder with Hydra's files, a local run on a
    machine with SLURM installed is meant to be local (launcher=slurm runs under srun)."""
    for pattern in (
        ".*sync_dist=True.*",
        ".*exists and is not empty.*",
        ".*LeafSpec.*",
        ".*does not have many workers.*",
        ".*`srun` command is available.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NO_TIPS)


def build_datamodule(cfg: DictConfig) -> EpisodeDataModule:
    from metalab.data.batches import BatchDataModule

    kind, extra = EpisodeDataModule, {}
    if getattr(get_class(cfg.algorithm._target_), "batches", False):  # pretraining
        kind, extra = BatchDataModule, {"batch_size": cfg.algorithm.batch_size}
    # the run's schedule, kept together
    # fmt: off
    return kind(
        cfg.dataset, meta_batch=cfg.algorithm.meta_batch, seed=cfg.seed, eval_seed=cfg.eval_seed,
        steps_per_epoch=cfg.val_every, val_episodes=cfg.val_episodes,
        test_episodes=cfg.test_episodes, eval_batch=cfg.eval_batch, **extra,
    )
    # fmt: on


def build_model(cfg: DictConfig) -> pl.LightningModule:
    spec = {k: v for k, v in cfg.backbone.items() if k != "name"}  # name is for people
    backbone = hydra.utils.instantiate(spec, in_shape=input_shape(cfg.dataset), _partial_=True)
    algorithm = get_class(cfg.algorithm._target_)
    given = {
        "backbone": backbone,
        "task": cfg.dataset.task,
        "pixel_baseline": cfg.pixel_baseline,
        **protocol_config(cfg),
    }
    if "ways" in algorithm.config_keys():  # a classifier head: as wide as a training episode
        has_classes = task_kind(cfg.dataset.task).has_classes
        given["ways"] = cfg.dataset.get("train_ways", 1) if has_classes else 1
    check_algorithm_keys(algorithm, cfg.algorithm, set(given))
    spec = OmegaConf.to_container(cfg.algorithm, resolve=True)  # resolved against the run config
    for key in RUN_KEYS:
        spec.pop(key, None)
    return hydra.utils.instantiate(spec, **given)


#: keys of an algorithm's config that the run reads, not the algorithm: its name (for people)
#: and whether it needs init_from (pretrained weights)
RUN_KEYS = ("name", "needs_init")


def check_algorithm_keys(algorithm: type, spec: DictConfig, given: set[str]) -> None:
    """A key of the algorithm's config that it does not take (a misspelt one) is an error."""
    allowed = algorithm.config_keys() - given
    for key in spec:
        if key not in ("_target_", *RUN_KEYS) and key not in allowed:
            raise ConfigError(
                f"algorithm.{key}",
                spec[key],
                f"algorithm={spec.get('name', algorithm.__name__)} has no such "
                f"key; allowed: {', '.join(sorted(allowed))}",
            )


def protocol_config(cfg: DictConfig) -> dict[str, str]:
    """The evaluation protocol (algorithms/protocols.py); a run from before protocols existed was
    transductive. Kept in results.json, so that compare knows what a number means."""
    protocol = {"protocol": cfg.get("protocol", "transductive")}
    if protocol["protocol"] == "inductive":
        protocol["inductive_stats"] = cfg.get("inductive_stats", "support")
    return protocol


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers = []
    for name, spec in (cfg.get("logger") or {}).items():
        if name == "wandb":  # needs the whole run config, which must not be instantiated
            loggers.append(hydra.utils.instantiate(spec, _partial_=True)(cfg=cfg, run_dir=run_dir))
        else:
            loggers.append(hydra.utils.instantiate(spec))
    return loggers


def monitor(cfg: DictConfig) -> tuple[str, str]:
    return task_kind(cfg.dataset.task).monitor


def build_trainer(cfg: DictConfig, run_dir: Path, loggers: list) -> pl.Trainer:
    metric, mode = monitor(cfg)
    ckpt_dir = run_dir / "checkpoints"
    # pretraining steps are batches of images, meta-training steps batches of tasks
    speed = (
        SpeedMonitor(cfg.algorithm.batch_size, "images")
        if "batch_size" in cfg.algorithm
        else SpeedMonitor(cfg.algorithm.meta_batch)
    )
    callbacks = [
        StepProgressBar(leave=True),
        speed,
        StopOnNonFiniteLoss(),
        ResumedLogSteps(),
        *trial_callbacks(metric),
    ]  # Optuna pruning, in a search's runs
    if cfg.val_episodes > 0:  # first: Trainer.checkpoint_callback, which test("best") reads
        callbacks.append(
            RunCheckpoint(
                dirpath=ckpt_dir,
                filename="best",
                monitor=metric,
                mode=mode,
                enable_version_counter=False,
            )
        )
    # "last" after every validation (Lightning's save_last only follows a new best)
    callbacks.append(RunCheckpoint(dirpath=ckpt_dir, filename="last", enable_version_counter=False))
    hw = cfg.hardware
    return pl.Trainer(
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.num_nodes,
        strategy=hw.strategy,
        precision=hw.precision,
        max_steps=cfg.steps,
        max_epochs=-1,
        logger=loggers or False,
        callbacks=callbacks,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if cfg.val_episodes > 0 else 0,
        use_distributed_sampler=False,
        inference_mode=False,
        deterministic=cfg.deterministic,
        log_every_n_steps=cfg.log_every,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO(), *launch.cluster_plugins()],
    )


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> tuple[Path, int] | None:
    """The checkpoint to continue from and its step: ckpt_path if set; else, with resume=auto,
    the newest readable checkpoint of this run folder (checkpoints/last.ckpt, the
    hpc_ckpt_<n>.ckpt Lightning saves on SLURM's warning signal, checkpoints/best.ckpt)."""
    if cfg.get("ckpt_path"):
        return user_checkpoint("ckpt_path", cfg.ckpt_path)
    if cfg.resume != "auto":
        return None
    return newest_readable(run_dir, quiet=launch.global_rank() != 0)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Train, test on the fixed test episodes, write results; returns the results dict. The
    first process holds the run folder's lock; the other ranks work under it."""
    check_config(cfg)
    quiet_known_warnings()
    if launch.global_rank() != 0:
        return _run(cfg, run_dir)
    with rundir.locked(run_dir):
        return _run(cfg, run_dir)


def _run(cfg: DictConfig, run_dir: Path) -> dict:
    resume = resume_checkpoint(cfg, run_dir)
    results_file = run_dir / "results.json"
    if resume is not None and resume[1] >= cfg.steps and results_file.is_file():
        print(
            f"metalab: {run_dir} is a finished run (step {resume[1]} of steps={cfg.steps}, "
            "results.json): nothing to do; a larger steps= continues it, resume=never starts "
            "it over",
            file=sys.stderr,
        )
        return json.loads(results_file.read_text())
    datamodule = prepare(cfg, run_dir, resume[1] if resume else 0)
    children = []
    local = processes(cfg.hardware) // cfg.hardware.num_nodes
    if not launch.launched_externally() and local > 1:
        children = launch.spawn_local_ranks(local, run_dir)
    try:
        results = _fit_and_test(cfg, run_dir, datamodule, resume[0] if resume else None)
    except BaseException:
        launch.wait_for(children, kill=True)
        raise
    launch.wait_for(children)
    return results


def prepare(cfg: DictConfig, run_dir: Path, resume_step: int = 0) -> EpisodeDataModule:
    """What a run does before its model is built (also benchmarks/throughput.py): the seeds, the
    data loaded and the episode shapes checked, and, on the first process, the resolved config
    (for eval, compare and the other ranks) and the metrics rows up to ``resume_step``."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.load()  # loads the data and checks the episode shapes before anything heavy
    if launch.global_rank() == 0:
        rundir.write_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True).encode())
        # the rows up to the checkpoint stay; the resumed run logs the later steps again
        keep_rows_before(run_dir / "metrics.csv", resume_step)
    return datamodule


def build_run(
    cfg: DictConfig, run_dir: Path, resumed: bool = False
) -> tuple[pl.LightningModule, list, pl.Trainer]:
    """The model (with the pretrained backbone of ``init_from``, unless ``resumed``: then the
    checkpoint has the weights), the loggers and the trainer of a run (also
    benchmarks/throughput.py)."""
    torch.set_float32_matmul_precision("high")
    model = build_model(cfg)
    if cfg.get("init_from") and not resumed:
        from metalab.run.init_from import load_backbone

        load_backbone(model, "init_from", cfg.init_from)
    loggers = build_loggers(cfg, run_dir)
    return model, loggers, build_trainer(cfg, run_dir, loggers)


def own_checkpoint(run_dir: Path, path: str) -> str | None:
    """``path`` if it lies in this run's folder: a run never reads another run's weights."""
    if not path:
        return None
    if not Path(path).resolve().is_relative_to(run_dir.resolve()):
        raise RunError(f"checkpoint {path} is outside the run folder {run_dir}")
    return path


def _fit_and_test(
    cfg: DictConfig, run_dir: Path, datamodule: EpisodeDataModule, resume: Path | None
) -> dict:
    model, loggers, trainer = build_run(cfg, run_dir, resumed=resume is not None)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    # best by validation, else the last
    best = own_checkpoint(run_dir, trainer.checkpoint_callback.best_model_path)
    trainer.test(model, datamodule=datamodule, ckpt_path=best, verbose=False, weights_only=True)
    speed = next(c for c in trainer.callbacks if isinstance(c, SpeedMonitor))
    # a step is the global meta-batch on any number of ranks: tasks/s is per run, not per rank
    results = {**model.summary["test"], **speed.summary(), **protocol_config(cfg)}
    score = trainer.checkpoint_callback.best_model_score  # None without validation
    if score is not None:  # what best.ckpt was chosen by: metalab-compare chooses runs on it
        results[f"{monitor(cfg)[0]}_best"] = float(score)
    if trainer.is_global_zero:
        write_results(run_dir, results, model.episode_metrics.get("test", {}), loggers)
        print_results(results, run_dir)
    return results

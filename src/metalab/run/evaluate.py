"""metalab-eval ckpt_path=<run>/checkpoints/best.ckpt: test a checkpoint on its run's fixed
test episodes and print the same numbers the run printed at its end."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from metalab import errors
from metalab.errors import ConfigError
from metalab.run.config import CONF_DIR


def evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import RichProgressBar

    from metalab.run.checkpoints import AtomicCheckpointIO, user_checkpoint
    from metalab.run.config import check_config
    from metalab.run.training import build_datamodule, build_model, protocol_config
    from metalab.tracking.summary import print_results, write_results

    ckpt, _step = user_checkpoint("ckpt_path", cfg.ckpt_path)  # exists, and is a checkpoint
    run_config = ckpt.resolve().parent.parent / "config.yaml"
    if not run_config.is_file():
        raise ConfigError(
            "ckpt_path", cfg.ckpt_path, f"expected the run's resolved config at {run_config}"
        )
    try:
        run_cfg = OmegaConf.load(run_config)
    except Exception as err:
        raise ConfigError(
            "ckpt_path",
            cfg.ckpt_path,
            f"the run's config {run_config} is not readable YAML ({type(err).__name__})",
        ) from err
    run_cfg.hardware = cfg.hardware
    if run_cfg.get("init_from"):  # the checkpoint holds the weights: no need of that run now
        run_cfg.init_from = None
    for key in ("test_episodes", "protocol", "inductive_stats"):  # null: as the run had it
        if cfg.get(key) is not None:
            run_cfg[key] = cfg[key]
    check_config(run_cfg)
    datamodule = build_datamodule(run_cfg)
    datamodule.load()
    model = build_model(run_cfg)
    hw = cfg.hardware
    trainer = pl.Trainer(
        accelerator=hw.accelerator,
        devices=1,
        precision=hw.precision,
        logger=False,
        callbacks=[RichProgressBar(leave=True)],
        inference_mode=False,
        enable_model_summary=False,
        default_root_dir=str(out_dir),
        plugins=[AtomicCheckpointIO()],
    )
    trainer.test(
        model, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False, weights_only=True
    )
    results = {**model.summary["test"], **protocol_config(run_cfg)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(out_dir, results, model.episode_metrics["test"])
    print_results(results, out_dir)
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def _main(cfg: DictConfig) -> None:
    with errors.one_line_errors("metalab-eval", "eval"):
        evaluate(cfg, Path(cfg.paths.output_dir))


def main() -> None:
    with errors.one_line_errors("metalab-eval", "eval"):
        _main()


if __name__ == "__main__":
    main()

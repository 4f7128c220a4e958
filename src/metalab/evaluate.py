"""metalab-eval ckpt_path=<run>/checkpoints/best.ckpt: test a checkpoint on its run's fixed
test episodes and print the same numbers the run printed at its end."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from metalab.config import CONF_DIR
from metalab.errors import ConfigError, user_error


def evaluate(cfg: DictConfig, out_dir: Path) -> dict:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import RichProgressBar

    from metalab.config import check_config
    from metalab.results import print_results, write_results
    from metalab.run import build_datamodule, build_model, protocol_config

    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError("ckpt_path", cfg.ckpt_path, "no such checkpoint file")
    run_config = ckpt.resolve().parent.parent / "config.yaml"
    if not run_config.is_file():
        raise ConfigError("ckpt_path", cfg.ckpt_path,
                          f"expected the run's resolved config at {run_config}")
    run_cfg = OmegaConf.load(run_config)
    run_cfg.hardware = cfg.hardware
    for key in ("test_episodes", "protocol", "inductive_stats"):  # null: as the run had it
        if cfg.get(key) is not None:
            run_cfg[key] = cfg[key]
    check_config(run_cfg)
    datamodule = build_datamodule(run_cfg)
    datamodule.load()
    model = build_model(run_cfg)
    hw = cfg.hardware
    trainer = pl.Trainer(accelerator=hw.accelerator, devices=1, precision=hw.precision,
                         logger=False, callbacks=[RichProgressBar(leave=True)],
                         inference_mode=False, enable_model_summary=False,
                         default_root_dir=str(out_dir))
    trainer.test(model, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False)
    results = {**model.summary["test"], **protocol_config(run_cfg)}
    out_dir.mkdir(parents=True, exist_ok=True)
    write_results(out_dir, results, model.episode_metrics["test"])
    print_results(results, out_dir)
    return results


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def _main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg, Path(cfg.paths.output_dir))
    except Exception as exc:
        if (err := user_error(exc)) is None:
            raise
        print(f"metalab-eval: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()

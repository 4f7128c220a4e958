"""metalab-train: episodic meta-training from the Hydra config tree in conf/."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from metalab import errors
from metalab.run import sweep  # sweep also registers the resolver that conf/search uses
from metalab.run.config import CONF_DIR


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    """Returns the objective of hyperparameter searches: the best validation metric."""
    from metalab.run.training import run  # heavy imports after Hydra has parsed the command line

    run_dir = Path(cfg.paths.output_dir)
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return sweep.run_job(cfg, run_dir)
    with errors.one_line_errors("metalab-train", "train"):
        run(cfg, run_dir)
        return sweep.best_validation(run_dir)


def main() -> None:
    with errors.one_line_errors("metalab-train", "train"):
        _main()


if __name__ == "__main__":
    main()

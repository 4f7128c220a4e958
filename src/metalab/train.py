"""metalab-train: episodic meta-training from the Hydra config tree in conf/."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from metalab import sweep  # also registers the resolver that conf/search uses
from metalab.config import CONF_DIR
from metalab.errors import user_error


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    """Returns the objective of hyperparameter searches: the best validation metric."""
    from metalab.run import run  # heavy imports after Hydra has parsed the command line

    run_dir = Path(cfg.paths.output_dir)
    try:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return sweep.run_job(cfg, run_dir)
        run(cfg, run_dir)
    except Exception as exc:
        if (err := user_error(exc)) is None:
            raise
        print(f"metalab-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    return sweep.best_validation(run_dir)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()

"""metalab-train: episodic meta-training from the Hydra config tree in conf/."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from metalab.config import CONF_DIR
from metalab.errors import user_error


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _main(cfg: DictConfig) -> float | None:
    from metalab.run import run  # heavy imports after Hydra has parsed the command line

    try:
        results = run(cfg, Path(cfg.paths.output_dir))
    except Exception as exc:
        if (err := user_error(exc)) is None:
            raise
        print(f"metalab-train: error: {err}", file=sys.stderr)
        sys.exit(2)
    return results.get("test/acc", results.get("test/mse"))


def main() -> None:
    _main()


if __name__ == "__main__":
    main()

"""Entry point of the extra local ranks started by metalab.launch (not for direct use)."""

import sys
from pathlib import Path

from omegaconf import OmegaConf

from metalab.run import run

if __name__ == "__main__":
    run_dir = Path(sys.argv[1])
    run(OmegaConf.load(run_dir / "config.yaml"), run_dir)

"""Entry point of the extra local ranks started by metalab.run.launch (not for direct use)."""

import sys
from pathlib import Path

from omegaconf import OmegaConf

from metalab.errors import user_error
from metalab.run.training import run

if __name__ == "__main__":
    run_dir = Path(sys.argv[1])
    try:
        run(OmegaConf.load(run_dir / "config.yaml"), run_dir)
    except Exception as err:
        if user_error(err) is None:
            raise
        sys.exit(2)  # rank 0 meets the same error and reports it in one line

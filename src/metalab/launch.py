"""Start the extra local ranks of a multi-process run ourselves.

Lightning's own launcher re-runs ``sys.argv`` in each child: under a Hydra multirun that
re-runs the whole sweep, and each child makes its own run folder. Instead the first process
(the Hydra job) writes the resolved config into its run folder and starts the other ranks on
that folder with ``python -m metalab.worker``; Lightning sees LOCAL_RANK and WORLD_SIZE and
treats the processes as launched externally, as under torchrun.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def launched_externally() -> bool:
    """True when a launcher (torchrun, srun, us) already started one process per rank."""
    if "LOCAL_RANK" in os.environ or "RANK" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_local_ranks(n: int, run_dir: Path) -> list[subprocess.Popen]:
    """Make this process rank 0 of ``n`` and start ranks 1..n-1 as workers on ``run_dir``."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": str(n), "NODE_RANK": "0"}
    os.environ.update(env, LOCAL_RANK="0")
    cmd = [sys.executable, "-m", "metalab.worker", str(run_dir)]
    return [subprocess.Popen(cmd, env={**os.environ, "LOCAL_RANK": str(r)})
            for r in range(1, n)]


def wait_for(children: list[subprocess.Popen], kill: bool = False) -> None:
    for child in children:
        if kill:
            child.kill()
        child.wait()
    for var in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        os.environ.pop(var, None)

"""Start the extra local ranks of a multi-process run ourselves.

Lightning's own launcher re-runs ``sys.argv`` in each child: under a Hydra multirun that
re-runs the whole sweep, and each child makes its own run folder. Instead the first process
(the Hydra job) writes the resolved config into its run folder and starts the other ranks on
that folder with ``python -m metalab.run.worker``; Lightning sees LOCAL_RANK and WORLD_SIZE and
treats the processes as launched externally, as under torchrun.

Under SLURM (conf/launcher/slurm) srun starts one task per device and Lightning's
SLURMEnvironment joins them; this module also checks such submissions before they go out.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from metalab.errors import ConfigError


def launched_externally() -> bool:
    """True when a launcher (torchrun, srun, us) already started one process per rank."""
    if "LOCAL_RANK" in os.environ or "RANK" in os.environ:
        return True
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def global_rank() -> int:
    """This process's rank from the launcher's environment (0 for a plain process)."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_local_ranks(n: int, run_dir: Path) -> list[subprocess.Popen]:
    """Make this process rank 0 of ``n`` and start ranks 1..n-1 as workers on ``run_dir``."""
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "WORLD_SIZE": str(n),
        "NODE_RANK": "0",
    }
    os.environ.update(env, LOCAL_RANK="0")
    cmd = [sys.executable, "-m", "metalab.run.worker", str(run_dir)]
    return [subprocess.Popen(cmd, env={**os.environ, "LOCAL_RANK": str(r)}) for r in range(1, n)]


def wait_for(children: list[subprocess.Popen], kill: bool = False) -> None:
    for child in children:
        if kill:
            child.kill()
        child.wait()
    for var in ("LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "NODE_RANK"):
        os.environ.pop(var, None)


def cluster_plugins() -> list:
    """Under SLURM, Lightning's SLURMEnvironment owns the warning signal that conf/launcher/slurm
    asks for (SIGUSR1, in place of submitit's USR2, whose handler thus never fires): each process
    saves <run>/hpc_ckpt_<n>.ckpt and rank 0 requeues the job. SIGTERM then ends the process."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    # Lightning keeps this handler and calls it after its own (which only sets a flag).
    signal.signal(signal.SIGTERM, leave_on_sigterm)
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1)]


def leave_on_sigterm(signum: int, frame) -> None:
    """SLURM sends SIGTERM to every process of a job it requeues, preempts or cancels, W&B's
    service included, and SIGKILL soon after. Leave at once: the errors of a half-killed job
    would otherwise end the job normally, and submitit would report that as its result while
    the requeued job still runs. The next start resumes from the newest checkpoint."""
    raise SystemExit(128 + signum)


# A job array has one sbatch script: the resources of all its jobs come from the config before
# the sweep's overrides, so a sweep must not change them.
RESOURCE_KEYS = (
    "hardware",
    "hardware.devices",
    "hardware.num_nodes",
    "hardware.accelerator",
    "hardware.gpus_per_node",
)


class SlurmChecks(Callback):
    """Checks a launcher=slurm command before anything is submitted (conf/launcher/slurm)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        fail(
            ConfigError(
                "launcher",
                "slurm",
                "submits multiruns only: add -m, as in `metalab-train -m launcher=slurm ...`",
            )
        )

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            check_slurm(config)
        except ConfigError as err:
            fail(err)


def fail(err: ConfigError) -> None:
    print(f"metalab-train: error: {err}", file=sys.stderr)
    sys.exit(2)


def check_slurm(cfg: DictConfig) -> None:
    for override in OverridesParser.create().parse_overrides(list(cfg.hydra.overrides.task)):
        key = override.key_or_group
        resources = key in RESOURCE_KEYS or key.startswith("hydra.launcher.")
        if override.is_sweep_override() and resources:
            raise ConfigError(
                key,
                override.input_line.split("=", 1)[1],
                "launcher=slurm asks for the same resources for every job of a "
                "multirun: submit one multirun per value",
            )
    hw, sl = cfg.hardware, cfg.hydra.launcher
    if not isinstance(hw.devices, int) or isinstance(hw.devices, bool) or hw.devices < 1:
        raise ConfigError(
            "hardware.devices",
            hw.devices,
            "launcher=slurm starts one task per device: give a number, e.g. 8",
        )
    if sl.tasks_per_node != hw.devices:
        raise ConfigError(
            "hydra.launcher.tasks_per_node",
            sl.tasks_per_node,
            f"must equal hardware.devices ({hw.devices}): one task per device",
        )
    if sl.nodes != hw.num_nodes:
        raise ConfigError(
            "hydra.launcher.nodes", sl.nodes, f"must equal hardware.num_nodes ({hw.num_nodes})"
        )
    if hw.accelerator in ("gpu", "cuda") and (sl.gpus_per_node or 0) < hw.devices:
        raise ConfigError(
            "hydra.launcher.gpus_per_node",
            sl.gpus_per_node,
            f"hardware.devices={hw.devices} GPUs need as many from SLURM on each "
            f"node: hydra.launcher.gpus_per_node={hw.devices}",
        )
    if shutil.which("sbatch") is None:
        raise ConfigError(
            "launcher",
            "slurm",
            "sbatch is not on PATH: submit from a machine of "
            "a SLURM cluster, or start a local one with `make slurm-up`",
        )

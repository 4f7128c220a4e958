"""A real one-node SLURM cluster for the tests: scripts/slurm/start-local-cluster.sh, started once
per session where SLURM and munge are installed (.ci/run installs them); tests skip elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import ROOT

SCRIPTS = ROOT / "scripts" / "slurm"
STATE_DIR = Path(os.environ.get("METALAB_SLURM_DIR", "/tmp/metalab-slurm"))
PARTITION = "local"  # scripts/slurm/slurm.conf.in
SBIN = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


def why_not() -> str | None:
    """Why the local cluster cannot run here, or None."""
    for tool in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol"):
        if shutil.which(tool, path=SBIN) is None:
            return f"{tool} not found: apt-get install slurm-wlm munge (as .ci/run does)"
    if os.geteuid() != 0:
        return "the local SLURM cluster needs root (slurmd starts jobs as their users)"
    if (os.cpu_count() or 1) < 2:
        return "the SLURM tests run two-task jobs and need 2 CPUs"
    return None


def cluster_env() -> dict[str, str]:
    return {"SLURM_CONF": str(STATE_DIR / "slurm.conf"), "METALAB_SLURM_DIR": str(STATE_DIR)}


def cluster_answers() -> bool:
    conf = STATE_DIR / "slurm.conf"
    return (
        conf.is_file()
        and subprocess.run(
            ["scontrol", "ping"],
            env={**os.environ, **cluster_env()},
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.count("UP")
        > 0
    )


@pytest.fixture(scope="session")
def slurm_cluster() -> dict[str, str]:
    """The environment that points SLURM's commands at the local cluster. A cluster that was
    already up (`make slurm-up`) is used and left running; one started here is stopped."""
    if reason := why_not():
        pytest.skip(reason)
    env = {**os.environ, **cluster_env()}
    was_up = cluster_answers()
    proc = subprocess.run(
        [str(SCRIPTS / "start-local-cluster.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield cluster_env()
    if not was_up:
        subprocess.run([str(SCRIPTS / "stop-local-cluster.sh")], env=env, timeout=120)

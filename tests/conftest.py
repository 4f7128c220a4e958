"""Shared fixtures: compose the real Hydra config and run the real entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from metalab.config import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT_SMALL = (ROOT / "../shared/data/omniglot-small").resolve()
OMNIGLOT_ARGS = [
    f"dataset.root={OMNIGLOT_SMALL}",
    "dataset.background=[images_background_small1]",
    "dataset.evaluation=[images_background_small2]",
]
# A training budget small enough for the default suite.
TINY = ["steps=6", "val_every=3", "val_episodes=6", "test_episodes=10", "eval_batch=5",
        "log_every=1"]

needs_omniglot = pytest.mark.skipif(
    not OMNIGLOT_SMALL.is_dir(), reason=f"real Omniglot subsets not found at {OMNIGLOT_SMALL}"
)


@pytest.fixture
def one_thread():
    """One intra-op thread: small kernels on a shared 2-core machine stall on thread hand-offs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_train(overrides=(), output_dir: Path | None = None):
    """The run config exactly as metalab-train would build it, with the run folder given."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose("train", overrides=[*overrides, *extra])


def trained_model(cfg, run_dir: Path, ckpt: str = "best"):
    """A finished run's model with the weights of one of its checkpoints, and its DataModule."""
    import torch

    from metalab.run import build_datamodule, build_model

    datamodule = build_datamodule(cfg)
    datamodule.load()
    model = build_model(cfg)
    state = torch.load(run_dir / "checkpoints" / f"{ckpt}.ckpt", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return model, datamodule


def run_cli(module: str, *args: str, cwd: Path = ROOT, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run an entry point (``python -m metalab.<module>``) as a user would."""
    return subprocess.run(
        [sys.executable, "-m", f"metalab.{module}", *args], cwd=cwd, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )


def train_cli(run_dir: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("train", f"hydra.run.dir={run_dir}", *overrides, **kwargs)

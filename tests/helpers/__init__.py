"""What tests share: composing the real Hydra config (``compose``, also used by benchmarks), tiny
training budgets, running the real entry points, reading a run's files and checking them."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metalab.run.config import compose  # noqa: F401  (the one compose of tests and benchmarks)

ROOT = Path(__file__).resolve().parents[2]
OMNIGLOT_SMALL = (ROOT / "../shared/data/omniglot-small").resolve()
OMNIGLOT_ARGS = [
    f"dataset.root={OMNIGLOT_SMALL}",
    "dataset.background=[images_background_small1]",
    "dataset.evaluation=[images_background_small2]",
]
CLINC = (ROOT / "../shared/data/clinc150").resolve()
needs_clinc = pytest.mark.skipif(
    not (CLINC / "data_full.json").is_file(), reason=f"CLINC150 not found at {CLINC}"
)
# a small text CNN: every algorithm runs in seconds
SMALL_CNN = ["backbone=text_cnn", "backbone.embed_dim=16", "backbone.filters=8"]
# A training budget small enough for the default suite.
TINY = [
    "steps=6",
    "val_every=3",
    "val_episodes=6",
    "test_episodes=10",
    "eval_batch=5",
    "log_every=1",
]

# CI always has ../shared beside the checkout: there a missing data folder fails the run.
IN_CI = os.environ.get("CI", "").lower() == "true"
needs_omniglot = pytest.mark.omniglot


def trained_model(cfg, run_dir: Path, ckpt: str = "best"):
    """A finished run's model with the weights of one of its checkpoints, and its DataModule."""
    import torch

    from metalab.run.training import build_datamodule, build_model

    datamodule = build_datamodule(cfg)
    datamodule.load()
    model = build_model(cfg)
    state = torch.load(run_dir / "checkpoints" / f"{ckpt}.ckpt", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return model, datamodule


def fit_one_batch(model, dm, root, callbacks=()):
    """A Lightning fit of one training batch on CPU, nothing logged or saved: the trainer."""
    import pytorch_lightning as pl

    trainer = pl.Trainer(
        max_steps=1,
        max_epochs=1,
        limit_train_batches=1,  # ends after one batch even if no step were counted
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        default_root_dir=root,
        callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=dm)
    return trainer


def record_log_options(model) -> dict:
    """The options of each of ``model``'s ``self.log`` calls, by name (the calls go through):
    under DDP, ``sync_dist`` and ``reduce_fx`` decide how the ranks' values combine, which a
    one-process fit cannot show."""
    options, log = {}, model.log

    def recording(name, value, **kwargs):
        options[name] = kwargs
        return log(name, value, **kwargs)

    model.log = recording
    return options


def run_cli(
    module: str, *args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run an entry point (``python -m metalab.<module>``) as a user would."""
    return subprocess.run(
        [sys.executable, "-m", f"metalab.{module}", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )


def train_cli(run_dir: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("run.train", f"hydra.run.dir={run_dir}", *overrides, **kwargs)


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_best_checkpoint(run_dir: Path, metric: str, best=max) -> int:
    """best.ckpt holds the validation with the best ``metric`` in metrics.csv (the first of
    equals), and that validation differs from the last one's; returns its step."""
    import torch

    values = {}  # validation step -> value, a step logged twice keeps its last value
    for row in read_csv(run_dir / "metrics.csv"):
        if row.get(metric):
            values[int(row["step"])] = float(row[metric])
    steps = sorted(values)
    chosen = best(steps, key=lambda s: (values[s], -s if best is max else s))
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    assert ckpt["global_step"] == chosen + 1, (values, ckpt["global_step"])
    return chosen


def assert_results_are_the_episode_means(run_dir: Path, metric: str = "acc") -> dict:
    """results.json's test mean and 95% CI equal those of test_episodes.csv's column, computed
    with scipy (1.96 standard errors, the few-shot convention), to the CSV's 6 digits."""
    from scipy import stats

    results = read_results(run_dir)
    values = [float(row[metric]) for row in read_csv(run_dir / "test_episodes.csv")]
    assert len(values) == results["test/episodes"]
    assert results[f"test/{metric}"] == pytest.approx(sum(values) / len(values), rel=1e-5)
    assert results[f"test/{metric}_ci95"] == pytest.approx(1.96 * stats.sem(values), rel=1e-4)
    return results

"""One process against two (DDP over gloo): the same budget, one thread each, and the check that
both end with the same parameters and the same test episodes."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from helpers import read_csv, read_results, train_cli

BUDGET = [
    "steps=4",
    "val_every=2",
    "val_episodes=4",
    "test_episodes=6",
    "eval_batch=2",
    "algorithm.meta_batch=4",
    "dataset.queries=5",
    "logger=csv",
]
# One thread per process in both runs (Lightning gives each DDP process cpus / processes): a
# convolution's backward on 1 or 2 threads sums in another order, ~1e-4 apart here. And SGD,
# not Adam: Adam's first steps move every parameter by about lr whatever the size of its
# gradient, so rounding in a gradient near zero would show up as a difference of lr.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
SGD = ["algorithm.optimizer._target_=torch.optim.SGD", "algorithm.optimizer.lr=0.1"]
SMALL = {
    "protonet": SGD,
    # the per-task engine: `auto` on CPU is `fused`, whose first step is one convolution over a
    # rank's tasks, and oneDNN picks its kernel (so its rounding) by batch size: 1.4e-6 apart
    # after 4 steps, and one test episode of this tiny net turns that into 1e-3 of loss
    "maml": ["backbone.hidden=16", "algorithm.eval_inner_steps=1", "algorithm.engine=loop", *SGD],
    "reptile": [
        "backbone.hidden=16",
        "algorithm.inner_steps=2",
        "algorithm.eval_inner_steps=2",
        "algorithm.inner_optimizer=sgd",
        "algorithm.inner_lr=0.1",
    ],
}


def finish(run_dir, *overrides):
    proc = train_cli(run_dir, *BUDGET, *overrides, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["state_dict"], read_results(run_dir), read_csv(run_dir / "test_episodes.csv")


def one_and_two_processes_agree(tmp_path, algorithm: str, overrides: list[str]) -> None:
    args = [f"algorithm={algorithm}", *overrides]
    one, one_results, one_episodes = finish(tmp_path / "one", *args)
    two, two_results, two_episodes = finish(tmp_path / "two", "hardware=ddp_cpu", *args)
    largest = max((one[k] - two[k]).abs().max().item() for k in one)
    print(f"{algorithm}: largest parameter difference 1 vs 2 processes: {largest:.3g}")
    assert largest < 1e-6
    assert one_results["test/episodes"] == two_results["test/episodes"] == 6
    assert [row["episode"] for row in two_episodes] == [str(i) for i in range(6)]
    assert one_episodes[0].keys() == two_episodes[0].keys() >= {"acc", "loss"}
    for a, b in zip(one_episodes, two_episodes, strict=True):  # to the file's 6 digits
        assert {k: float(v) for k, v in a.items()} == pytest.approx(
            {k: float(v) for k, v in b.items()}, rel=1e-5, abs=1e-6
        ), a["episode"]
    losses = [float(row["loss"]) for row in one_episodes]
    assert len(set(losses)) == len(losses)  # distinct episodes: a misordering would show
    for key in ("test/acc", "test/acc_ci95", "test/loss"):
        assert one_results[key] == pytest.approx(two_results[key], abs=1e-6), key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]


def rank_1_of_2_trainer(env: pytest.MonkeyPatch, rank: int = 1) -> pl.Trainer:
    """A real Lightning Trainer that is rank 1 (or ``rank``) of 2, as under torchrun: the
    launcher's environment (set on ``env``), no process group needed to ask it. Building it leaves
    Lightning's process-wide rank at 1 (tests/conftest.py's lightning_rank_zero resets it for
    each test)."""
    env.setenv("CUDA_VISIBLE_DEVICES", "")
    for var, value in {
        "LOCAL_RANK": str(rank),
        "RANK": str(rank),
        "WORLD_SIZE": "2",
        "NODE_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29400",
    }.items():
        env.setenv(var, value)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    assert (trainer.global_rank, trainer.world_size) == (rank, 2)
    return trainer

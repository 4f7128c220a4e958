"""The episode sampler's share of a training step, as a user runs training (CPU or CUDA).

Runs a short default training (or the overrides given) through metalab's own trainer, takes the
median step time from its SpeedMonitor, and times ``train_episodes`` (index draw + gather +
normalise) alone on the same DataModule. Usage: python benchmarks/sampler_share.py [overrides]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from metalab.run.callbacks import SpeedMonitor
from metalab.run.config import compose
from metalab.run.training import build_datamodule, build_model, build_trainer


def main(overrides: list[str]) -> None:
    out = Path(tempfile.mkdtemp())
    cfg = compose(["steps=60", "val_every=60", "val_episodes=0", "logger=csv", *overrides], out)
    datamodule = build_datamodule(cfg)
    datamodule.load()
    trainer = build_trainer(cfg, out, [])
    trainer.fit(build_model(cfg), datamodule=datamodule)
    speed = next(c for c in trainer.callbacks if isinstance(c, SpeedMonitor))
    step = statistics.median(speed.step_times[5:])

    def sample(i):
        start = time.perf_counter()
        episodes = datamodule.train_episodes(10_000 + i)
        if episodes.support_x.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    sampler = statistics.median(sample(i) for i in range(50))
    print(
        f"step {step * 1e3:.2f} ms, sampler {sampler * 1e3:.3f} ms, "
        f"sampler share {sampler / step:.1%} ({' '.join(overrides) or 'defaults'})"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

"""Pretraining throughput (images/s): metalab's pipeline against a plain torchvision-style loop.

Workload: conv4 (64 channels) and a linear classifier of all meta-train classes, Adam 1e-3,
shuffled mini-batches of ``--batch`` images of a dataset's train split (glyphs by default),
both in this one process, one after the other:

* ``pipeline``: metalab as a user runs it (``algorithm=baseline``): the Hydra config, then
  ``metalab.run.training``'s data module, model and Lightning trainer (progress bar, CSV logger), no
  validation;
* ``plain``: the same images as a ``torch.utils.data.TensorDataset`` (float, normalised) in a
  ``DataLoader(shuffle=True, drop_last=True)``, the same backbone and classifier, and the
  usual ``for x, y in loader: loss.backward(); opt.step()`` loop.

A step is timed from the start of one step to the start of the next (so fetching the batch,
logging and the progress bar count), after ``--warmup`` steps; median over the timed steps,
best of ``--repeats`` alternating rounds. Both clocks are read: wall time, and this process's
CPU time, which other processes on a shared, loaded machine disturb far less (one thread:
CPU time is the compute). The last line is
``pipeline_over_plain=<images/s of pipeline / images/s of plain> (wall) cpu=<the same in CPU
time>``.

usage (repo root):
    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/pretrain_throughput.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class StepClock(pl.Callback):
    """Clock reads at the start of each training step."""

    def __init__(self):
        self.starts: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(now())


def median_step(starts: list[tuple[float, float]], warmup: int) -> tuple[float, float]:
    """Median seconds per step: wall time, CPU time."""
    return tuple(
        statistics.median([b[k] - a[k] for a, b in zip(starts, starts[1:])][warmup:])
        for k in (0, 1)
    )


def pipeline(overrides: list[str], steps: int, warmup: int, out: Path) -> tuple[float, float]:
    from metalab.run.config import compose
    from metalab.run.training import build_datamodule, build_model, build_trainer

    cfg = compose(
        [
            "algorithm=baseline",
            f"steps={steps + 1}",
            f"val_every={steps + 1}",
            "val_episodes=0",
            "test_episodes=1",
            "logger=csv",
            *overrides,
        ],
        out,
    )
    datamodule = build_datamodule(cfg)
    datamodule.load()
    model = build_model(cfg)
    trainer = build_trainer(cfg, out, [])
    clock = StepClock()
    trainer.callbacks.append(clock)
    trainer.fit(model, datamodule=datamodule)
    return median_step(clock.starts, warmup)


def plain(overrides: list[str], batch: int, steps: int, warmup: int) -> tuple[float, float]:
    from torch.utils.data import DataLoader, TensorDataset

    from metalab.data.batches import split_labels
    from metalab.run.config import compose
    from metalab.run.training import build_datamodule, build_model

    cfg = compose(["algorithm=baseline", *overrides])
    datamodule = build_datamodule(cfg)
    datamodule.load()
    train = datamodule.sources["train"]
    x = (train.images.float() / 255 - train.mean) / train.std
    loader = DataLoader(
        TensorDataset(x, split_labels(train)), batch_size=batch, shuffle=True, drop_last=True
    )
    net = build_model(cfg).net
    head = torch.nn.Linear(net.feature_dim, len(train.index.counts))
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    starts = []
    while len(starts) <= steps:
        for xb, yb in loader:
            starts.append(now())
            if len(starts) > steps:
                break
            loss = F.cross_entropy(head(net.embed(xb)), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return median_step(starts, warmup)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60, help="timed steps + warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds of both")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. dataset=omniglot")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = [f"algorithm.batch_size={args.batch}", *args.overrides]
    rates = {"pipeline": [], "plain": []}  # (wall, cpu) images/s per round
    for _ in range(args.repeats):  # alternating: a change of the machine's load hits both
        with tempfile.TemporaryDirectory() as out:
            step = pipeline(overrides, args.steps, args.warmup, Path(out))
        rates["pipeline"].append([args.batch / s for s in step])
        step = plain(overrides, args.batch, args.steps, args.warmup)
        rates["plain"].append([args.batch / s for s in step])
        print(
            {k: [[round(r, 1) for r in pair] for pair in v] for k, v in rates.items()}, flush=True
        )
    best = {k: [max(pair[i] for pair in v) for i in (0, 1)] for k, v in rates.items()}
    print(
        f"images/s, best of {args.repeats} (wall / CPU time): pipeline "
        f"{best['pipeline'][0]:.1f} / {best['pipeline'][1]:.1f}, plain {best['plain'][0]:.1f} "
        f"/ {best['plain'][1]:.1f}; batch {args.batch}, {args.threads} thread(s), "
        f"{' '.join(args.overrides) or 'dataset=glyphs'}"
    )
    print(
        f"pipeline_over_plain={best['pipeline'][0] / best['plain'][0]:.3f} "
        f"cpu={best['pipeline'][1] / best['plain'][1]:.3f}"
    )


if __name__ == "__main__":
    main()

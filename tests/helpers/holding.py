"""Hold a training run at a chosen moment, so that a test can stop it exactly there (test-only).

A run stopped at a moment found by polling its files from outside races with it: on a fast or
quiet machine it is past that moment, or finished, before the test looks again ("stopped too
late: (8, 8)"). A held run waits at the start of a training step, the checkpoints of the steps
before it on disk, until the test's signal: SIGKILL ends it there; SIGTERM, which Lightning turns
into a flag, lets it finish that one step and leave as a cluster job does.

In a process of its own: ``python tests/helpers/holding.py WHEN ARGS...`` is metalab-train
holding at WHEN; in a forked child: ``hold(WHEN)`` before training.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch


def checkpoint_steps(run_dir: Path) -> tuple[int, int] | None:
    """Global steps of best.ckpt and last.ckpt, None while either is missing or half written."""
    try:
        return tuple(
            torch.load(
                run_dir / "checkpoints" / f"{n}.ckpt", weights_only=False, map_location="cpu"
            )["global_step"]
            for n in ("best", "last")
        )
    except Exception:
        return None


# the moments to hold at, each a condition on the run folder checked before each training step
WHEN = {
    "first-checkpoint": lambda run_dir: (run_dir / "checkpoints" / "last.ckpt").exists(),
    "best-differs-from-last": lambda run_dir: (
        (s := checkpoint_steps(run_dir)) is not None and s[0] != s[1]
    ),
}


def held_marker(run_dir: Path) -> Path:
    """Beside the run folder, not in it: the run's own files stay as they would be."""
    return run_dir.with_name(run_dir.name + ".held")


class Hold(pl.Callback):
    def __init__(self, run_dir: Path, when: str):
        self.run_dir, self.ready, self.seen, self.held = run_dir, WHEN[when], None, False

    def on_train_batch_start(self, trainer, *args) -> None:
        last = self.run_dir / "checkpoints" / "last.ckpt"
        stamp = last.stat().st_mtime_ns if last.exists() else None
        if self.held or stamp == self.seen:  # look again only after a new checkpoint
            return
        self.seen = stamp
        if not self.ready(self.run_dir):
            return
        self.held = True
        marker = held_marker(self.run_dir)
        marker.with_suffix(".tmp").write_text(str(trainer.global_step))
        marker.with_suffix(".tmp").replace(marker)  # whole when the test reads it
        deadline = time.monotonic() + 600  # a test that died sends nothing: do not wait forever
        while not trainer.received_sigterm:
            if time.monotonic() > deadline:
                raise RuntimeError("held for 10 minutes and no signal came")
            time.sleep(0.01)


def hold(when: str) -> None:
    """Make the runs of this process hold at ``when`` (a key of WHEN)."""
    import metalab.run.training

    build = metalab.run.training.build_trainer

    def build_trainer(cfg, run_dir, loggers):
        trainer = build(cfg, run_dir, loggers)
        trainer.callbacks.append(Hold(Path(run_dir), when))
        return trainer

    metalab.run.training.build_trainer = build_trainer


def wait_until_held(run_dir: Path, alive) -> int:
    """Wait for the run to hold; the global step it holds at. Fails if it ends first."""
    marker = held_marker(run_dir)
    while not marker.exists():
        assert alive(), f"the run at {run_dir} ended without reaching the moment to hold at"
        time.sleep(0.01)
    return int(marker.read_text())


def start_held(run_dir: Path, when: str, *args: str, env: dict) -> subprocess.Popen:
    """metalab-train on ``run_dir`` in a process of its own, holding at ``when``."""
    return subprocess.Popen(
        [sys.executable, __file__, when, f"hydra.run.dir={run_dir}", "hydra.job.name=train", *args],
        cwd=Path(__file__).parents[2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


if __name__ == "__main__":
    hold(sys.argv.pop(1))
    from metalab.run.train import main

    main()

"""A run killed (SIGKILL) or stopped (SIGTERM) later than its first checkpoint, at a point where
best.ckpt and last.ckpt differ, and started again in its folder, ends exactly where an
uninterrupted run ends: same step, parameters, optimizer and scheduler state, best.ckpt,
results.json, metrics.csv and W&B run. Without deterministic=true, which the README does not ask
for.

Mutant it catches (a resume from best.ckpt replays the steps after it and, training tasks being
a function of the step, ends in the same weights: the log line naming the checkpoint tells;
src/metalab/run/training.py, resume_checkpoint)::

    -    found = [run_dir / "checkpoints" / "last.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
    +    found = [run_dir / "checkpoints" / "best.ckpt", *run_dir.glob("hpc_ckpt_*.ckpt")]
"""

import os
import signal
import time

import pytest
import torch

from helpers import assert_best_checkpoint, read_csv, read_results, train_cli
from helpers.holding import checkpoint_steps, start_held, wait_until_held
from metalab.run.sweep import best_validation
from metalab.run.training import resume_checkpoint

STEPS = 24
COMMON = [
    f"steps={STEPS}",
    "val_every=4",
    "val_episodes=3",
    "test_episodes=5",
    "eval_batch=5",
    "log_every=1",
]
CASES = {
    # ProtoNet on glyphs with both default loggers (W&B + CSV), killed outright
    "protonet-sigkill": (
        ["dataset.queries=2", "backbone.hidden=16", "algorithm.optimizer.lr=0.01"],
        signal.SIGKILL,
    ),
    # Reptile on sinusoid: eps annealed by a LinearLR schedule across the resume; best.ckpt by
    # the lowest val/mse; stopped as a cluster stops a job
    "reptile-sigterm": (
        [
            "dataset=sinusoid",
            "backbone=mlp",
            "algorithm=reptile",
            "algorithm.inner_optimizer=sgd",
            "algorithm.inner_lr=0.02",
            "algorithm.meta_batch=2",
            "algorithm.eval_inner_steps=2",
            "logger=csv",
        ],
        signal.SIGTERM,
    ),
}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def load(path):
    return torch.load(path, weights_only=False, map_location="cpu")


def stop_when_best_differs_from_last(run_dir, args, sig) -> tuple[int, int]:
    """Hold the run at the first step after a checkpoint where best.ckpt and last.ckpt differ
    (tests/holding.py), then send ``sig``; the steps of both checkpoints after the stop."""
    proc = start_held(
        run_dir,
        "best-differs-from-last",
        *args,
        env={**os.environ, "WANDB_MODE": "offline", **ONE_THREAD},
    )
    try:
        held_at = wait_until_held(run_dir, lambda: proc.poll() is None)
        proc.send_signal(sig)
        proc.wait(timeout=300)
    finally:
        proc.kill()
    steps = checkpoint_steps(run_dir)
    assert steps and steps[0] != steps[1] == held_at < STEPS, (steps, held_at)
    assert not (run_dir / "results.json").exists()
    return steps


def by_step(rows) -> dict:
    """metrics.csv as {(step, metric): value}; a step logged twice keeps its last value."""
    return {
        (int(row["step"]), key): float(value)
        for row in rows
        for key, value in row.items()
        if key != "step" and value != ""
    }


@pytest.fixture(scope="module", params=list(CASES))
def runs(request, tmp_path_factory):
    """An uninterrupted run and a stopped-and-resumed one with the same config."""
    overrides, sig = CASES[request.param]
    args = [*COMMON, *overrides]
    root = tmp_path_factory.mktemp(request.param)
    whole, resumed = root / "whole", root / "resumed"
    proc = train_cli(whole, *args, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    best_at, stopped_at = stop_when_best_differs_from_last(resumed, args, sig)
    again = train_cli(resumed, *args, env=ONE_THREAD)
    assert again.returncode == 0, again.stderr[-3000:]
    print(f"{request.param}: best.ckpt at step {best_at}, stopped at step {stopped_at}")
    return request.param, whole, resumed, again


def test_stopped_then_resumed_equals_uninterrupted(runs):
    case, whole, resumed, again = runs
    log = " ".join((again.stdout + again.stderr).split())  # rich wraps long lines
    assert f"Restoring states from the checkpoint path at {resumed}/checkpoints/last.ckpt" in log

    a, b = load(whole / "checkpoints" / "last.ckpt"), load(resumed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == STEPS
    for name in a["state_dict"]:
        assert torch.equal(a["state_dict"][name], b["state_dict"][name]), name
    for key, state in a["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(value),
                torch.as_tensor(b["optimizer_states"][0]["state"][key][name]),
            )
    assert a["lr_schedulers"] == b["lr_schedulers"]
    best_a, best_b = (
        load(whole / "checkpoints" / "best.ckpt"),
        load(resumed / "checkpoints" / "best.ckpt"),
    )
    assert best_a["global_step"] == best_b["global_step"]
    for name in best_a["state_dict"]:
        assert torch.equal(best_a["state_dict"][name], best_b["state_dict"][name]), name
    results_a, results_b = read_results(whole), read_results(resumed)
    assert {k: v for k, v in results_a.items() if k.startswith("test/")} == {
        k: v for k, v in results_b.items() if k.startswith("test/")
    }

    if case.startswith("reptile"):  # eps annealed linearly to 0 over all steps, resume or not
        (schedule,) = b["lr_schedulers"]
        assert schedule["last_epoch"] == STEPS and schedule["_last_lr"] == [0.0]
        best = assert_best_checkpoint(whole, "val/mse", min)
        # the objective a search minimises: the lowest val/mse, that of best.ckpt
        mse = {
            int(r["step"]): float(r["val/mse"])
            for r in read_csv(whole / "metrics.csv")
            if r.get("val/mse")
        }
        assert best_validation(whole) == pytest.approx(mse[best]) == min(mse.values())
    else:
        assert_best_checkpoint(whole, "val/acc", max)
        # the resumed process continued the same W&B run (one id, two offline segments)
        run_id = (resumed / "wandb_id.txt").read_text().strip()
        segments = list((resumed / "wandb").glob("offline-run-*"))
        assert len(segments) == 2 and all(s.name.endswith(run_id) for s in segments)


def test_resumed_metrics_csv_equals_uninterrupted(runs):
    """Every row logged before the stop is kept and each step is logged once, under its own
    number (metalab.tracking.csv and callbacks.ResumedLogSteps)."""
    _, whole, resumed, _ = runs
    assert by_step(read_csv(whole / "metrics.csv")) == by_step(read_csv(resumed / "metrics.csv"))


def test_resume_auto_takes_the_newest_checkpoint_and_never_starts_over(tmp_path):
    """resume=auto continues from the newer of checkpoints/last.ckpt and the hpc_ckpt_<n>.ckpt
    of a SLURM warning signal; resume=never starts over; ckpt_path wins over both."""
    import torch

    from helpers import compose

    (tmp_path / "checkpoints").mkdir()
    last, hpc = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "hpc_ckpt_1.ckpt"
    cfg = compose([], output_dir=tmp_path)
    assert resume_checkpoint(cfg, tmp_path) is None  # nothing to resume
    for step, (path, age) in enumerate(((hpc, 20), (last, 10))):
        torch.save({"state_dict": {}, "global_step": step + 1}, path)  # readable
        os.utime(path, (time.time() - age, time.time() - age))
    assert resume_checkpoint(cfg, tmp_path) == (last, 2)
    os.utime(hpc)
    assert resume_checkpoint(cfg, tmp_path) == (hpc, 1)
    assert resume_checkpoint(compose(["resume=never"], output_dir=tmp_path), tmp_path) is None
    assert resume_checkpoint(
        compose(["resume=never", f"ckpt_path={last}"], output_dir=tmp_path), tmp_path
    ) == (last, 2)

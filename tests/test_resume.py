"""A run killed with SIGKILL and started again in its folder ends exactly where an uninterrupted
run ends: same step, optimizer state, training tasks and W&B run."""

import os
import signal
import subprocess
import sys
import time

import torch

from conftest import ROOT, train_cli

ARGS = ["steps=60", "val_every=10", "val_episodes=5", "test_episodes=5", "eval_batch=5",
        "deterministic=true", "dataset.queries=5"]


def final_state(run_dir):
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["global_step"], ckpt["state_dict"], ckpt["optimizer_states"][0]


def start(run_dir):
    cmd = [sys.executable, "-m", "metalab.train", f"hydra.run.dir={run_dir}", *ARGS]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "WANDB_MODE": "offline"})


def kill_after_first_checkpoint(run_dir) -> int:
    proc = start(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    while not last.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return torch.load(last, weights_only=False)["global_step"]


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    whole = train_cli(tmp_path / "whole", *ARGS)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed_at = kill_after_first_checkpoint(tmp_path / "resumed")
    assert 0 < killed_at < 60
    assert not (tmp_path / "resumed" / "results.json").exists()
    again = train_cli(tmp_path / "resumed", *ARGS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Restoring states from the checkpoint" in again.stdout + again.stderr

    step_a, params_a, optim_a = final_state(tmp_path / "whole")
    step_b, params_b, optim_b = final_state(tmp_path / "resumed")
    assert step_a == step_b == 60
    for name in params_a:
        assert torch.equal(params_a[name], params_b[name]), name
    for key, state in optim_a["state"].items():
        assert torch.equal(state["exp_avg"], optim_b["state"][key]["exp_avg"])
    # the resumed process continued the same W&B run (one id, two offline segments)
    run_id = (tmp_path / "resumed" / "wandb_id.txt").read_text().strip()
    segments = list((tmp_path / "resumed" / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(s.name.endswith(run_id) for s in segments)

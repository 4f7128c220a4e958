"""End-to-end runs through the real entry points: outputs, evaluation, W&B offline, DDP."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import OMNIGLOT_ARGS, TINY, needs_omniglot, run_cli, train_cli

WANDB = [sys.executable, "-m", "wandb"]


def read_results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def glyphs_run(tmp_path_factory):
    """One tiny default run (glyphs, protonet, conv4) with the default loggers (W&B + CSV)."""
    run_dir = tmp_path_factory.mktemp("glyphs") / "run"
    proc = train_cli(run_dir, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def test_run_folder_holds_everything(glyphs_run):
    run_dir, proc = glyphs_run
    for name in ("config.yaml", ".hydra/config.yaml", "checkpoints/best.ckpt",
                 "checkpoints/last.ckpt", "metrics.csv", "results.json", "test_episodes.csv",
                 "wandb_id.txt"):
        assert (run_dir / name).is_file(), name
    results = read_results(run_dir)
    assert results["test/episodes"] == 10
    assert 0 <= results["test/acc"] <= 1 and results["test/acc_ci95"] > 0
    assert 0 <= results["test/pixel_1nn_acc"] <= 1
    assert f"test/acc = {results['test/acc']:.4f}" in proc.stdout
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/acc", "val/acc_ci95", "test/acc"} <= set(header)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["dataset"]["name"] == "glyphs" and config["algorithm"]["name"] == "protonet"


def test_wandb_offline_run_holds_the_run(glyphs_run):
    run_dir, _ = glyphs_run
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert runs[0].name.endswith(run_id)
    # read it back with W&B's own client, as a user browsing offline runs would
    proc = subprocess.run([*WANDB, "leet", "inspect", "--summary", str(runs[0])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    acc = read_results(run_dir)["test/acc"]
    assert "test/acc" in proc.stdout and f"{acc:.4f}"[:5] in proc.stdout
    assert "protonet" in proc.stdout  # the resolved config was logged


def test_eval_reproduces_the_run_numbers(glyphs_run, tmp_path):
    run_dir, _ = glyphs_run
    proc = run_cli("evaluate", f"ckpt_path={run_dir}/checkpoints/best.ckpt",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "results.json").read_text())
    tested = {k: v for k, v in read_results(run_dir).items() if not k.startswith("perf/")}
    assert evaluated == tested
    acc = read_results(run_dir)["test/acc"]
    assert f"test/acc = {acc:.4f}" in proc.stdout


@needs_omniglot
def test_tiny_run_on_real_omniglot(tmp_path):
    proc = train_cli(tmp_path, "dataset=omniglot", *OMNIGLOT_ARGS, *TINY, "logger=csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_results(tmp_path)["test/episodes"] == 10


def test_ddp_cpu_two_processes_share_one_run_folder(tmp_path):
    proc = train_cli(tmp_path / "run", "hardware=ddp_cpu", "algorithm.meta_batch=2", *TINY,
                     "logger=csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert read_results(tmp_path / "run")["test/episodes"] == 10
    assert len(list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))) == 2


def test_glyphs_is_not_trivial(tmp_path):
    """A briefly trained ProtoNet beats raw-pixel 1-NN by >= 15 points on the same episodes."""
    proc = train_cli(tmp_path, "steps=100", "val_every=50", "val_episodes=0",
                     "test_episodes=100", "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test/acc"] - results["test/pixel_1nn_acc"] >= 0.15, results
    assert "test/pixel_1nn_acc" in proc.stdout

"""End-to-end runs through the real entry points: outputs, evaluation, W&B offline, DDP."""

import json
import subprocess
import sys

import pytest
import yaml

from helpers import (
    OMNIGLOT_ARGS,
    TINY,
    assert_best_checkpoint,
    assert_results_are_the_episode_means,
    needs_omniglot,
    read_results,
    run_cli,
    train_cli,
)

WANDB = [sys.executable, "-m", "wandb"]


def wandb_summary(run_dir) -> dict:
    """The run folder's one offline W&B run as W&B's own client reads it back: name, tags,
    config, summary."""
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert runs[0].name.endswith(run_id)
    proc = subprocess.run(
        [*WANDB, "leet", "inspect", "--summary", "--json", str(runs[0])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def glyphs_run(tmp_path_factory):
    """One tiny default run (glyphs, protonet, conv4) with the default loggers (W&B + CSV)."""
    run_dir = tmp_path_factory.mktemp("glyphs") / "run"
    proc = train_cli(run_dir, *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc


def test_run_folder_holds_everything(glyphs_run):
    run_dir, proc = glyphs_run
    for name in (
        "config.yaml",
        ".hydra/config.yaml",
        "checkpoints/best.ckpt",
        "checkpoints/last.ckpt",
        "metrics.csv",
        "results.json",
        "test_episodes.csv",
        "wandb_id.txt",
    ):
        assert (run_dir / name).is_file(), name
    results = assert_results_are_the_episode_means(run_dir, "acc")
    assert results["test/episodes"] == 10
    assert_results_are_the_episode_means(run_dir, "pixel_1nn_acc")
    assert_results_are_the_episode_means(run_dir, "loss")
    assert f"test/acc = {results['test/acc']:.4f}" in proc.stdout
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/loss", "val/acc", "val/acc_ci95", "test/acc"} <= set(header)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["dataset"]["name"] == "glyphs" and config["algorithm"]["name"] == "protonet"


def test_best_checkpoint_has_the_highest_validation_accuracy(glyphs_run):
    assert_best_checkpoint(glyphs_run[0], "val/acc", max)


def test_wandb_offline_run_holds_the_run(glyphs_run):
    run_dir, _ = glyphs_run
    # read it back with W&B's own client, as a user browsing offline runs would
    run = wandb_summary(run_dir)
    results = read_results(run_dir)
    assert {k: run["summary"][k] for k in results} == pytest.approx(results)
    assert run["name"] == "protonet-glyphs-conv4"
    # the README's tags: algorithm, dataset, backbone, episode shape
    assert run["tags"] == ["protonet", "glyphs", "conv4", "5way-1shot"]
    assert run["config"]["algorithm"]["name"] == "protonet"  # the resolved config
    assert run["config"]["paths"]["output_dir"] == str(run_dir)


def test_eval_reproduces_the_run_numbers(glyphs_run, tmp_path):
    run_dir, _ = glyphs_run
    proc = run_cli(
        "run.evaluate", f"ckpt_path={run_dir}/checkpoints/best.ckpt", f"hydra.run.dir={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "results.json").read_text())
    tested = {k: v for k, v in read_results(run_dir).items() if not k.startswith(("perf/", "val/"))}
    assert evaluated == tested
    acc = read_results(run_dir)["test/acc"]
    assert f"test/acc = {acc:.4f}" in proc.stdout


@needs_omniglot
def test_tiny_run_on_real_omniglot_logs_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = train_cli(tmp_path, "dataset=omniglot", *OMNIGLOT_ARGS, *TINY, "logger=tensorboard")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = assert_results_are_the_episode_means(tmp_path)
    assert results["test/episodes"] == 10
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    scalars = EventAccumulator(str(tmp_path / "tensorboard")).Reload()  # every event file
    assert [e.step for e in scalars.Scalars("train/loss")] == list(range(6))
    assert len(scalars.Scalars("val/acc")) == 2
    (test_acc,) = scalars.Scalars("test/acc")
    assert test_acc.value == pytest.approx(results["test/acc"], rel=1e-6)
    assert not (tmp_path / "wandb").exists() and not (tmp_path / "metrics.csv").exists()


def test_ddp_cpu_two_processes_share_one_run_folder_and_one_wandb_run(tmp_path):
    proc = train_cli(
        tmp_path / "run", "hardware=ddp_cpu", "algorithm.meta_batch=2", *TINY, "logger=wandb"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    results = assert_results_are_the_episode_means(tmp_path / "run")
    assert results["test/episodes"] == 10
    assert len(list((tmp_path / "run" / "checkpoints").glob("*.ckpt"))) == 2
    run = wandb_summary(tmp_path / "run")  # one offline run, the id of wandb_id.txt
    assert run["summary"]["test/acc"] == pytest.approx(results["test/acc"])
    assert run["summary"]["test/episodes"] == 10


def test_glyphs_is_not_trivial(tmp_path):
    """A briefly trained ProtoNet beats raw-pixel 1-NN by >= 15 points on the same episodes."""
    proc = train_cli(
        tmp_path, "steps=100", "val_every=50", "val_episodes=0", "test_episodes=100", "logger=none"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = read_results(tmp_path)
    assert results["test/acc"] - results["test/pixel_1nn_acc"] >= 0.15, results
    assert "test/pixel_1nn_acc" in proc.stdout

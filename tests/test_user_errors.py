"""Every mistake gets one line on stderr naming the key, exit status 2 and no traceback. The
entry points catch them in one place (metalab.errors.one_line_errors): most cases run the real
Hydra entry point in this process; one spawned process per entry point proves the whole path."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from helpers import OMNIGLOT_SMALL, TINY, compose, needs_omniglot, run_cli, train_cli
from metalab.run import rundir


def entry_point(module: str, *args: str, capsys) -> tuple[int, str]:
    """Run metalab.run.<module>.main() as the command line would; its exit status and stderr."""
    GlobalHydra.instance().clear()
    argv = sys.argv
    sys.argv = [f"metalab-{module}", *args]
    try:
        with pytest.raises(SystemExit) as stop:
            importlib.import_module(f"metalab.run.{module}").main()
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
    return stop.value.code, capsys.readouterr().err


def assert_one_line(code: int, err: str, *expected: str, prog: str = "metalab-train") -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]


TRAIN_CASES = [
    # overrides, what the line must say
    (["algorithm.optimizer.lr=-1"], ["algorithm.optimizer.lr=-1", "Invalid learning rate"]),
    (["algorithm.optimizer.lr=abc"], ["algorithm.optimizer.lr=abc", "must be a number"]),
    (["seed=abc"], ["seed=abc", "must be an integer"]),
    (["eval_seed=abc"], ["eval_seed=abc", "must be an integer"]),
    (["steps=1e3"], ["steps=1000.0", "must be an integer"]),
    (["hardware.precision=foo"], ["hardware.precision=foo", "allowed: 32-true"]),
    (["algorithm.scheduler.step_size=0"], ["algorithm.scheduler.step_size=0", "positive"]),
    (["ckpt_path=/nonexistent"], ["ckpt_path=/nonexistent", "no such checkpoint file"]),
    (["backbone.hidden=0"], ["backbone.hidden=0", "positive integer"]),
    (
        ["backbone=mlp", "dataset=sinusoid", "algorithm=maml", "backbone.hidden=[40,0]"],
        ["backbone.hidden=0", "positive integer"],
    ),
    (["hardware=multi_node"], ["hardware.num_nodes=2", "cluster launcher", "launcher=slurm"]),
    (["log_every=0"], ["log_every=0", "positive integer"]),
    # every process evaluates a share of the episodes (a process with none stopped the gather)
    (
        ["hardware=ddp_cpu", "algorithm.meta_batch=2", "test_episodes=1"],
        ["test_episodes=1: must be at least the number of processes (2)"],
    ),
    (
        ["hardware=ddp_cpu", "algorithm.meta_batch=2", "val_episodes=1"],
        ["val_episodes=1: must be 0 or at least the number of processes (2)"],
    ),
    (["dataset=nope"], ["dataset=nope", "allowed: cifar_fs, clinc150, cub", "glyphs", "omniglot"]),
    (
        ["dataset.wayz=5"],
        ["dataset.wayz", "no such key", "keys of dataset:", "ways", "+dataset.wayz=<value>"],
    ),
    (["foo=1"], ["foo", "no such key", "keys of the top level:", "steps"]),
    (["dataset.load._target_=os.mkdir"], ["dataset.load._target_=os.mkdir", "not allowed"]),
    # a misspelt algorithm key is not dropped: it names the key and the ones the algorithm takes
    (
        ["+algorithm.inner_lrr=0.1", "algorithm=maml"],
        ["algorithm.inner_lrr=0.1", "algorithm=maml has no such key", "inner_lr"],
    ),
    (["+algorithm.ways=3"], ["algorithm.ways=3", "algorithm=protonet has no such key"]),
]


@pytest.mark.parametrize(
    ("overrides", "expected"), TRAIN_CASES, ids=[" ".join(c[0]) for c in TRAIN_CASES]
)
def test_train_mistake_is_one_line(tmp_path, capsys, overrides, expected):
    code, err = entry_point(
        "train", f"hydra.run.dir={tmp_path / 'run'}", "logger=none", *overrides, capsys=capsys
    )
    assert_one_line(code, err, *expected)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_output_folder_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    code, err = entry_point("train", f"hydra.run.dir={tmp_path / 'file' / 'run'}", capsys=capsys)
    assert_one_line(code, err, str(tmp_path / "file"), "Not a directory", "hydra.run.dir")


def test_read_only_output_folder_is_one_line(tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a read-only tmpfs")  # root ignores chmod
    try:
        code, err = entry_point("train", f"hydra.run.dir={folder / 'run'}", capsys=capsys)
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
    assert_one_line(code, err, str(folder / "run"), "Read-only file system")


def fake_run(tmp_path: Path, *overrides: str) -> Path:
    """A run folder as metalab-eval reads it: config.yaml and a checkpoint (weights only)."""
    from metalab.run.training import build_model

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    cfg = compose([*TINY, *overrides], run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if not overrides:
        torch.save({"state_dict": build_model(cfg).state_dict(), "global_step": 6}, ckpt)
    else:
        torch.save({"state_dict": {}, "global_step": 6}, ckpt)
    return run_dir


@pytest.mark.parametrize("case", ["truncated", "not a checkpoint", "missing", "no ckpt_path"])
def test_eval_mistake_is_one_line(tmp_path, capsys, case):
    run_dir = fake_run(tmp_path)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    args = [f"hydra.run.dir={tmp_path / 'eval'}", f"ckpt_path={ckpt}"]
    expected = [f"ckpt_path={ckpt}"]
    if case == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:5000])
        expected.append("unreadable: truncated or damaged")
    elif case == "not a checkpoint":
        ckpt.write_bytes((run_dir / "config.yaml").read_bytes())
        expected.append("not a checkpoint")
    elif case == "missing":
        ckpt.unlink()
        expected.append("no such checkpoint file")
    else:
        args, expected = args[:1], ["ckpt_path", "is required", "ckpt_path=<value>"]
    code, err = entry_point("evaluate", *args, capsys=capsys)
    assert_one_line(code, err, *expected, prog="metalab-eval")


def test_eval_refuses_a_config_target_outside_the_allow_list(tmp_path):
    """The spawned metalab-eval: a run's config.yaml that would run os.mkdir stops in one line."""
    made = tmp_path / "made-by-config"
    run_dir = fake_run(tmp_path, "dataset.load._target_=os.mkdir", f"+dataset.load.path={made}")
    proc = run_cli(
        "run.evaluate",
        f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        timeout=300,
    )
    assert_one_line(
        proc.returncode,
        proc.stderr,
        "dataset.load._target_=os.mkdir",
        "not allowed",
        prog="metalab-eval",
    )
    assert not made.exists()


def test_a_second_run_on_a_live_folder_stops_in_one_line(tmp_path):
    """The spawned metalab-train on a folder this process holds (as a live run would)."""
    run_dir = tmp_path / "run"
    with rundir.locked(run_dir):
        proc = train_cli(run_dir, *TINY, "logger=none", timeout=300)
    assert_one_line(
        proc.returncode, proc.stderr, str(run_dir), f"in use by another run (PID {os.getpid()} on"
    )
    assert not (run_dir / "config.yaml").exists()


def test_ddp_cpu_and_multi_gpu_run_the_default_experiment_as_it_is(capfd):
    """ProtoNet's one episode per step cannot be split over processes: each process takes one
    (the meta-batch becomes the process count), said in one line; larger meta-batches are split
    as before."""
    from metalab.run.config import check_config, spread_meta_batch

    cfg = compose(["hardware=ddp_cpu"])
    check_config(cfg)
    assert cfg.algorithm.meta_batch == 2
    assert "algorithm.meta_batch=1 on 2 processes: one task per process" in capfd.readouterr().err
    cfg = compose(["hardware=multi_gpu"])  # checked on a GPU machine; here the rule only
    spread_meta_batch(cfg)
    assert cfg.algorithm.meta_batch == 8
    cfg = compose(["hardware=ddp_cpu", "algorithm=maml"])
    spread_meta_batch(cfg)
    assert cfg.algorithm.meta_batch == 32


@pytest.mark.slow
def test_ddp_cpu_trains_the_default_experiment(tmp_path):
    proc = train_cli(tmp_path / "run", *TINY, "hardware=ddp_cpu", "logger=csv", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "results.json").is_file()


@needs_omniglot
def test_a_zip_corrupted_in_the_middle_names_the_file(tmp_path, capsys):
    root = tmp_path / "omniglot"
    root.mkdir()
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        shutil.copyfile(OMNIGLOT_SMALL / name, root / name)
    archive = root / "images_background_small1.zip"
    with zipfile.ZipFile(archive) as z:  # the first deflated image the loader decodes
        member = min(
            (
                i
                for i in z.infolist()
                if i.compress_type == zipfile.ZIP_DEFLATED and i.filename.endswith(".png")
            ),
            key=lambda i: i.filename,
        )
    with open(archive, "r+b") as f:  # an invalid deflate block: zlib.error, not BadZipFile
        f.seek(member.header_offset + 30 + len(member.filename.encode()) + len(member.extra))
        f.write(b"\xff" * 40)
    code, err = entry_point(
        "train",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
        "dataset=omniglot",
        f"dataset.root={root}",
        "dataset.background=[images_background_small1]",
        "dataset.evaluation=[images_background_small2]",
        f"paths.cache_dir={tmp_path / 'cache'}",
        capsys=capsys,
    )
    assert_one_line(code, err, f"dataset.root={archive}:{member.filename}", "corrupt")


def test_hydra_full_error_shows_the_traceback(tmp_path, monkeypatch):
    from metalab.errors import ConfigError

    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", ["metalab-train", f"hydra.run.dir={tmp_path}", "seed=abc"])
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="seed=abc"):
        importlib.import_module("metalab.run.train").main()
    GlobalHydra.instance().clear()

"""Nothing lost, nothing trusted that should not be. Each test first makes the fault happen for
real (SIGKILL, a truncated or overwritten file, a full filesystem, a second run on a live
folder) and then checks what the run does about it."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from helpers import TINY, compose
from helpers.holding import hold, wait_until_held
from metalab.errors import ConfigError, RunError, user_error
from metalab.run import rundir
from metalab.run.training import run

ARGS = [*TINY, "logger=csv", "dataset.queries=5", "pixel_baseline=false"]


def train(run_dir: Path, *extra: str) -> dict:
    return run(compose([*ARGS, *extra], run_dir), run_dir)


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def step_of(ckpt: Path) -> int:
    return torch.load(ckpt, weights_only=True)["global_step"]


def snapshot(folder: Path) -> dict:
    return {
        p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (6 steps, checkpoints at steps 3 and 6); tests work on copies."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(run_dir)
    torch.set_num_threads(threads)
    return run_dir


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)  # copy2: the files keep their times, as `cp -a` does
    return dst


def _train_in_child(run_dir, extra):  # the target of a forked process
    torch.set_num_threads(1)
    hold("first-checkpoint")
    train(run_dir, *extra)


def kill_after_first_checkpoint(run_dir: Path, *extra: str) -> None:
    """A run in a child process, held at the step after its first checkpoint (tests/holding.py)
    and killed there with SIGKILL."""
    child = multiprocessing.get_context("fork").Process(
        target=_train_in_child, args=(run_dir, extra)
    )
    child.start()
    try:
        wait_until_held(run_dir, child.is_alive)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    assert child.exitcode == -signal.SIGKILL


def test_sigkill_then_resume_keeps_every_metrics_row_once(tmp_path, one_thread):
    run_dir = tmp_path / "run"
    kill_after_first_checkpoint(run_dir)
    killed_at = step_of(run_dir / "checkpoints" / "last.ckpt")
    assert 0 < killed_at < 6
    before = rows(run_dir)
    logged = {int(r["step"]) for r in before if r["train/loss"]}
    assert set(range(killed_at)) <= logged  # on disk with the checkpoint

    train(run_dir)
    after = rows(run_dir)
    train_steps = [int(r["step"]) for r in after if r["train/loss"]]
    assert train_steps == list(range(6))  # every step once
    assert [int(r["step"]) for r in after if r["val/acc"]] == [2, 5]
    assert [int(r["step"]) for r in after if r["test/acc"]] == [6]
    # the rows logged before the kill are still there, unchanged
    kept = [r for r in before if int(r["step"]) < killed_at]
    assert [{k: r.get(k, "") for k in kept[0]} for r in after[: len(kept)]] == kept


def test_rerunning_a_finished_run_changes_nothing(finished, tmp_path, capfd, one_thread):
    run_dir = copy_run(finished, tmp_path / "run")
    before = snapshot(run_dir)
    results = train(run_dir)
    assert "is a finished run" in capfd.readouterr().err
    assert results == json.loads((run_dir / "results.json").read_text())
    assert "perf/tasks_per_sec" in results
    after = snapshot(run_dir)
    assert {p for p in after if p.name != ".lock"} == {p for p in before if p.name != ".lock"}
    assert all(after[p] == before[p] for p in before if p.name != ".lock")


def test_a_copied_run_reads_only_its_own_checkpoints(finished, tmp_path, one_thread):
    run_a = copy_run(finished, tmp_path / "a")
    run_b = copy_run(run_a, tmp_path / "b")
    shutil.rmtree(run_a)  # on main, B's test phase then needs A's best.ckpt: a traceback
    train(run_b, "steps=9")
    ckpt = torch.load(run_b / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 9
    assert len([k for k in ckpt["callbacks"] if k.startswith("ModelCheckpoint")]) == 2
    for state in (s for k, s in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")):
        assert state["dirpath"] == str((run_b / "checkpoints").resolve())
        assert state["best_model_path"]
        paths = [state[k] for k in ("best_model_path", "kth_best_model_path", "last_model_path")]
        assert all(
            p.startswith(str(run_b.resolve())) for p in [*paths, *state["best_k_models"]] if p
        ), state


def test_an_unreadable_last_ckpt_is_named_and_the_newest_readable_one_used(
    finished, tmp_path, capfd, caplog, one_thread
):
    run_dir = copy_run(finished, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:140_000])  # what a full disk left behind on main
    with caplog.at_level("INFO"):
        train(run_dir, "steps=9")
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "last.ckpt" in line]
    assert len(lines) == 1 and "unreadable" in lines[0] and "trying best.ckpt" in lines[0]
    assert (
        "Restoring states from the checkpoint path at "
        f"{run_dir / 'checkpoints' / 'best.ckpt'}" in caplog.text
    )
    assert step_of(last) == 9


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs: room for one run's checkpoints and little more."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("needs root to mount a small tmpfs")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` up to ``leave`` free bytes."""
    filler = folder / "filler"
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(free - leave, 0))
    return filler


def test_a_full_disk_leaves_the_last_checkpoint_whole(finished, small_disk, one_thread):
    run_dir = copy_run(finished, small_disk / "run")
    filler = fill(small_disk, leave=200_000)  # less than one checkpoint (1.4 MB)
    with pytest.raises(Exception) as caught:
        train(run_dir, "steps=9")
    line = str(user_error(caught.value))
    assert "No space left on device" in line and "\n" not in line
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == 6  # the old one, whole
    assert not [p for p in run_dir.rglob("*.tmp*")]
    filler.unlink()
    train(run_dir, "steps=9")  # once there is room again, the run goes on from step 6
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == 9


def test_a_second_run_on_a_live_folder_stops_and_a_dead_runs_lock_is_taken_over(tmp_path, capfd):
    run_dir = tmp_path / "run"
    ready = multiprocessing.get_context("fork").Event()

    def hold():
        with rundir.locked(run_dir):
            ready.set()
            time.sleep(600)

    holder = multiprocessing.get_context("fork").Process(target=hold)
    holder.start()
    assert ready.wait(60)
    with pytest.raises(RunError, match=f"in use by another run \\(PID {holder.pid} "):
        with rundir.locked(run_dir):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with rundir.locked(run_dir):  # stale: the holder is dead
        assert f"PID {os.getpid()}" in (run_dir / ".lock").read_text()
    assert f"(PID {holder.pid} on" in capfd.readouterr().err
    assert (run_dir / ".lock").read_text() == ""  # released


def test_run_folders_of_runs_started_together_differ():
    dirs = [compose(hydra=True).hydra.run.dir for _ in range(2)]
    sweeps = [compose(hydra=True).hydra.sweep.dir for _ in range(2)]
    for names in (dirs, sweeps):  # the suffixes differ, whatever the second
        suffixes = [
            re.fullmatch(r".*\d\d-\d\d-\d\d(_protonet-glyphs-conv4)?_([0-9a-f]{6})", name).group(2)
            for name in names
        ]
        assert suffixes[0] != suffixes[1]


def test_a_non_finite_loss_stops_the_run_naming_the_step(tmp_path, one_thread):
    with pytest.raises(
        RunError,
        match=r"training loss is (nan|inf) at step \d+: the run "
        r"diverged",
    ):
        train(tmp_path / "run", "algorithm.optimizer.lr=1e30", "steps=20")
    assert not (tmp_path / "run" / "results.json").exists()


def test_results_json_is_strict_json_with_null_for_non_finite(tmp_path):
    from metalab.tracking.summary import write_results

    write_results(
        tmp_path, {"test/acc": float("nan"), "test/loss": float("inf"), "test/episodes": 10.0}, {}
    )
    text = (tmp_path / "results.json").read_text()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "test/acc": None,
        "test/loss": None,
        "test/episodes": 10.0,
    }


def test_a_damaged_dataset_cache_is_rebuilt_saying_so(tmp_path, capfd):
    from metalab.data.cache import cached

    builds = []

    def build():
        builds.append(1)
        return {
            "images": torch.arange(4096, dtype=torch.uint8).reshape(16, 256),
            "class_names": ["a", "b"],
        }

    path = tmp_path / "set.pt"
    first = cached(path, build)
    data = bytearray(path.read_bytes())
    at = bytes(data).find(bytes(range(200, 216)))  # inside the tensor's stored bytes
    data[at : at + 4] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    assert torch.load(path, weights_only=True)["value"]["images"].sum() != first["images"].sum()

    again = cached(path, build)
    assert len(builds) == 2 and torch.equal(again["images"], first["images"])
    assert (
        "is damaged (its checksum does not match its content): rebuilding" in capfd.readouterr().err
    )
    assert cached(path, build) is not None and len(builds) == 2  # the rebuilt entry is trusted


def test_config_targets_outside_the_allow_list_are_refused(tmp_path):
    from metalab.run.config import check_targets

    made = tmp_path / "made-by-config"
    cfg = compose(
        [*ARGS, f"+dataset.load.path={made}", "dataset.load._target_=os.mkdir"], tmp_path / "run"
    )
    with pytest.raises(ConfigError, match=r"dataset\.load\._target_=os\.mkdir: not allowed"):
        run(cfg, tmp_path / "run")
    for target in (
        "metalab.data.cache.os.mkdir",
        "torch.optim.Optimizer.zero_grad",
        "subprocess.run",
        "builtins.eval",
    ):
        cfg.algorithm.optimizer._target_ = target
        with pytest.raises(ConfigError, match="not allowed"):
            check_targets(cfg)
    assert not made.exists()


def test_every_shipped_config_passes_the_allow_list():
    from omegaconf import OmegaConf

    from metalab.run.config import CONF_DIR, allowed_target, find_targets

    targets = {
        target
        for group in ("algorithm", "backbone", "dataset", "logger")
        for path in Path(CONF_DIR, group).glob("*.yaml")
        for _, target in find_targets(OmegaConf.load(path))
    }
    assert len(targets) > 15
    for target in targets:
        from hydra.utils import get_object

        assert allowed_target(get_object(target)), target

"""Sweeps from the command line, through the real entry point: Hydra grids (one W&B run per job,
one group per sweep), Optuna searches (conf/search/, a study in SQLite that continues) and W&B
sweep definitions (sweeps/), checked offline with W&B's own sweep engine."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

from conftest import ROOT, TINY, compose_train, run_cli
from metalab import sweep as _sweep  # noqa: F401  (the resolver conf/search uses)
from metalab.config import CONF_DIR
from metalab.tracking.wandb import run_id

with warnings.catch_warnings():  # W&B's sweep engine still names a pydantic v1 config key
    warnings.filterwarnings("ignore", "Valid config keys have changed in V2")
    import sweeps

CSV = ["logger=csv"]  # where W&B is not the point


def _search_group() -> str:
    """`search=...` once conf/train.yaml lists `search: null` among its defaults; until then the
    group is appended with `+search=...`."""
    defaults = yaml.safe_load((ROOT / "conf/train.yaml").read_text())["defaults"]
    return "search" if any(isinstance(d, dict) and "search" in d for d in defaults) else "+search"


SEARCH = _search_group()
_GRID: list[Path] = []


def grid_sweep(tmp_path_factory) -> Path:
    """A 2x2 grid on glyphs with the default loggers (W&B offline and CSV), run once per test
    session: test_compare compares it."""
    if not _GRID:
        sweep_dir = tmp_path_factory.mktemp("grid") / "lr-shots"
        proc = run_cli("train", "-m", f"hydra.sweep.dir={sweep_dir}",
                       "algorithm.optimizer.lr=0.001,0.002", "dataset.shots=1,2", *TINY)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _GRID.append(sweep_dir)
    return _GRID[0]


def wandb_records(run_dir: Path) -> list[dict]:
    """The records of a job's offline W&B run, read with W&B's own client."""
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json",
                           str(offline)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_grid_jobs_are_finished_wandb_runs_of_one_group(tmp_path_factory):
    sweep_dir = grid_sweep(tmp_path_factory)
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    ids = set()
    for job in jobs:
        assert (job / "results.json").is_file()
        records = wandb_records(job)
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert run["run_group"] == sweep_dir.name and run["job_type"] == "train"
        assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [0]
        metrics = {r["metric"].get("name"): r["metric"] for r in records if r["type"] == "metric"}
        assert metrics["val/acc"]["summary"] == {"max": True}
        assert metrics["val/mse"]["summary"] == {"min": True}
        ids.add(run["run_id"])
    assert len(ids) == 4  # one W&B run per job


def test_failed_grid_jobs_are_recorded_and_the_grid_goes_on(tmp_path):
    proc = run_cli("train", "-m", f"hydra.sweep.dir={tmp_path}", "dataset.shots=0,-1", *TINY,
                   *CSV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, shots in (("0", 0), ("1", -1)):  # the second job ran after the first failed
        error = (tmp_path / job / "error.txt").read_text()
        assert f"dataset.shots={shots}: must be a positive integer" in error
        assert f"dataset.shots={shots}" in proc.stderr and "the sweep goes on" in proc.stderr


def best_val_acc(job: Path) -> float:
    column = [row.split(",") for row in (job / "metrics.csv").read_text().splitlines()]
    i = column[0].index("val/acc")
    return max(float(row[i]) for row in column[1:] if row[i])


def test_optuna_search_records_a_failed_trial_and_continues_its_study(tmp_path):
    sweep_dir = tmp_path / "search"
    args = ["-m", f"{SEARCH}=protonet", f"hydra.sweep.dir={sweep_dir}", *TINY, *CSV]
    # the first trial fails (dataset.shots=0), the second trains
    first = run_cli("train", *args, "hydra.sweeper.n_trials=2", "dataset.shots=${hydra:job.num}")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Best value" in first.stdout + first.stderr
    # continued where it stopped: same sweep folder, same study
    again = run_cli("train", *args, "hydra.sweeper.n_trials=1")
    assert again.returncode == 0, again.stderr[-3000:]

    study = optuna.load_study(study_name="protonet", storage=f"sqlite:///{sweep_dir}/optuna.db")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    for trial in study.trials:
        assert 1e-4 <= trial.params["algorithm.optimizer.lr"] <= 1e-2
        assert trial.params["dataset.train_ways"] in (5, 10, 20, 30)
    # each invocation has its own folder of jobs: <sweep>/<start time>/<n>
    first_jobs, later_jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert sorted(p.name for p in first_jobs.iterdir()) == ["0", "1"]
    assert "dataset.shots=0" in (first_jobs / "0" / "error.txt").read_text()
    # the objective is the best validation accuracy of the trial
    objectives = {first_jobs / "1": study.trials[1].value, later_jobs / "0": study.trials[2].value}
    for job, value in objectives.items():
        assert value == pytest.approx(best_val_acc(job), abs=1e-6)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(objectives.values()))


def test_optuna_search_needs_validation_episodes(tmp_path):
    proc = run_cli("train", "-m", f"{SEARCH}=protonet", f"hydra.sweep.dir={tmp_path}", *TINY,
                   *CSV, "val_episodes=0")
    assert proc.returncode == 2
    assert "val_episodes=0: an Optuna search optimises the validation metric" in proc.stderr
    assert "Traceback" not in proc.stderr


def compose_search(name: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("train", overrides=[f"{SEARCH}={name}"], return_hydra_config=True)


@pytest.mark.parametrize("algorithm", sorted(p.stem for p in (ROOT / "conf/algorithm").glob("*")))
def test_every_algorithm_has_a_search_over_its_own_keys(algorithm):
    cfg = compose_search(algorithm)
    sweeper = cfg.hydra.sweeper
    assert cfg.algorithm.name == algorithm
    assert sweeper.study_name == algorithm and "optuna" in sweeper._target_
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert sweeper.direction == "maximize"  # val/acc on glyphs
    for key in sweeper.params:  # every searched key exists in the algorithm's config
        assert OmegaConf.select(cfg, key) is not None, key
    if "inner_lr" in cfg.algorithm:  # gradient-based: the inner loop is searched too
        assert {"algorithm.inner_lr", "algorithm.inner_steps", "algorithm.optimizer.lr"} <= set(
            sweeper.params)


# -- W&B sweeps ----------------------------------------------------------------------------------
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


def agent_command(sweep: dict, suggested: sweeps.SweepRun) -> list[str]:
    """The command line exactly as `wandb agent` builds it (wandb_agent.Agent._command_run)."""
    values = create_sweep_command_args({"args": suggested.config})
    values |= {"interpreter": ["python"], "program": [sweep.get("program")],
               "env": ["/usr/bin/env"]}
    command = []
    for chunk in create_sweep_command(list(sweep["command"])):
        if chunk.startswith("${") and chunk.endswith("}"):
            command += values.get(chunk[2:-1]) or []
        else:
            command.append(chunk)
    return command


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.name for p in SWEEP_FILES])
def test_wandb_sweep_validates_and_suggests_hydra_overrides(path):
    sweep = yaml.safe_load(path.read_text())
    assert sweeps.schema_violations_from_proposed_config(sweep) == []
    suggested = sweeps.next_run(sweeps.SweepConfig(sweep), [], validate=True)
    command = agent_command(sweep, suggested)
    assert command[:4] == ["/usr/bin/env", "python", "-m", "metalab.train"]
    cfg = compose_train(command[4:])  # Hydra takes every argument as it is
    assert sweep["metric"]["name"] in ("val/acc", "val/mse")
    for key, value in suggested.config.items():
        assert OmegaConf.select(cfg, key) == pytest.approx(value["value"]), key


def test_a_suggested_wandb_sweep_command_trains(tmp_path):
    sweep = yaml.safe_load((ROOT / "sweeps/protonet-grid.yaml").read_text())
    suggested = sweeps.next_run(sweeps.SweepConfig(sweep), [], validate=True)
    command = [*agent_command(sweep, suggested), *TINY, *CSV, f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["algorithm"]["optimizer"]["lr"] == suggested.config[
        "algorithm.optimizer.lr"]["value"]
    assert config["dataset"]["train_ways"] == suggested.config["dataset.train_ways"]["value"]
    assert (tmp_path / "results.json").is_file()
    # the finished run goes back to the engine, which moves on to another grid point
    done = sweeps.SweepRun(config=suggested.config, state=sweeps.RunState.finished,
                           history=[{"val/acc": best_val_acc(tmp_path)}])
    following = sweeps.next_run(sweeps.SweepConfig(sweep), [done], validate=True)
    assert following.config != suggested.config


def test_a_wandb_agent_run_keeps_the_agents_run_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_RUN_ID", "agent123")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert run_id(tmp_path / "a") != "agent123"  # WANDB_RUN_ID alone is not an agent
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep42")
    assert run_id(tmp_path / "b") == "agent123"
    assert (tmp_path / "b" / "wandb_id.txt").read_text() == "agent123"

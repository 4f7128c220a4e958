"""Sweeps from the command line, through the real entry point: Hydra grids (one W&B run per job,
one group per sweep), Optuna searches (conf/search/: a study in SQLite or a journal file that
continues and that several workers share, pruning, the Optuna dashboard) and W&B sweep
definitions (sweeps/), checked offline with W&B's own sweep engine."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages.journal import JournalFileBackend, JournalStorage
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

from helpers import ROOT, TINY, compose, run_cli
from helpers.report import wandb_records
from hydra_plugins.metalab_optuna_sweeper._impl import (
    OptunaSearch,
    grid_choices,
    make_pruner,
    search_space,
)
from hydra_plugins.metalab_optuna_sweeper.config import OptunaSweeperConf
from metalab.run import sweep as _sweep  # also registers the resolver conf/search uses
from metalab.run.launch import free_port
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


def test_grid_jobs_are_finished_wandb_runs_of_one_group(grid_sweep):
    sweep_dir = grid_sweep
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
    proc = run_cli(
        "run.train", "-m", f"hydra.sweep.dir={tmp_path}", "dataset.shots=0,-1", *TINY, *CSV
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, shots in (("0", 0), ("1", -1)):  # the second job ran after the first failed
        error = (tmp_path / job / "error.txt").read_text()
        assert f"dataset.shots={shots}: must be a positive integer" in error
        assert f"dataset.shots={shots}" in proc.stderr and "the sweep goes on" in proc.stderr


def best_val_acc(job: Path) -> float:
    column = [row.split(",") for row in (job / "metrics.csv").read_text().splitlines()]
    i = column[0].index("val/acc")
    return max(float(row[i]) for row in column[1:] if row[i])


def wait_for_running_trial(storage: str, name: str, proc: subprocess.Popen) -> None:
    while proc.poll() is None:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
            running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
            if any("worker" in t.user_attrs for t in running):  # its job has started
                return
        except KeyError:  # the study does not exist yet
            pass
        time.sleep(0.5)
    raise AssertionError(f"the search ended before a trial started: {proc.stderr.read()}")


def test_optuna_search_records_failed_and_interrupted_trials_and_continues_its_study(tmp_path):
    sweep_dir = tmp_path / "search"
    storage = f"sqlite:///{sweep_dir}/optuna.db"
    args = ["-m", f"{SEARCH}=protonet", f"hydra.sweep.dir={sweep_dir}", *TINY, *CSV]
    # the first trial fails (dataset.shots=0), the second trains
    first = run_cli(
        "run.train", *args, "hydra.sweeper.n_trials=2", "dataset.shots=${hydra:job.num}"
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Best value" in first.stdout + first.stderr
    # a worker killed in the middle of its trial leaves it RUNNING
    killed = subprocess.Popen(
        [sys.executable, "-m", "metalab.run.train", *args, "hydra.sweeper.n_trials=1"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    try:
        wait_for_running_trial(storage, "protonet", killed)
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.communicate()
    # continued where it stopped: same sweep folder, same study; the interrupted trial is failed
    again = run_cli("run.train", *args, "hydra.sweeper.n_trials=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"marked interrupted trial(s) of study protonet as failed: 2 (its worker "
        f"(pid {killed.pid}) has stopped)"
    ) in again.stderr

    study = optuna.load_study(study_name="protonet", storage=storage)
    states = [t.state for t in study.trials]
    State = optuna.trial.TrialState
    assert states == [State.FAIL, State.COMPLETE, State.FAIL, State.COMPLETE]
    for trial in study.trials:
        assert 1e-4 <= trial.params["algorithm.optimizer.lr"] <= 1e-2
        assert trial.params["dataset.train_ways"] in (5, 10, 20, 30)
    # each invocation has its own folder of jobs: <sweep>/<start time>/<n>
    first_jobs, _, later_jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert sorted(p.name for p in first_jobs.iterdir()) == ["0", "1"]
    assert "dataset.shots=0" in (first_jobs / "0" / "error.txt").read_text()
    # the objective is the best validation accuracy of the trial, kept with its job folder
    objectives = {first_jobs / "1": study.trials[1], later_jobs / "0": study.trials[3]}
    for job, trial in objectives.items():
        assert trial.value == pytest.approx(best_val_acc(job), abs=1e-6)
        assert trial.user_attrs["output_dir"] == str(job)
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(t.value for t in objectives.values()))


_PRUNED: list[Path] = []


def pruned_search(tmp_path_factory) -> Path:
    """A median-pruned search on glyphs (default loggers) whose second trial has a learning rate
    a million times too high; both trials are queued in the study before it runs. Run once per
    test session: the dashboard test reads its study."""
    if not _PRUNED:
        sweep_dir = tmp_path_factory.mktemp("pruned") / "search"
        sweep_dir.mkdir()
        study = optuna.create_study(
            study_name="protonet", direction="maximize", storage=f"sqlite:///{sweep_dir}/optuna.db"
        )
        for lr in (1e-3, 1e3):
            study.enqueue_trial({"algorithm.optimizer.lr": lr, "dataset.train_ways": 5})
        proc = run_cli(
            "run.train",
            "-m",
            f"{SEARCH}=protonet",
            f"hydra.sweep.dir={sweep_dir}",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.pruner=median",
            "hydra.sweeper.median.n_startup_trials=1",
            *TINY,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        _PRUNED.append(sweep_dir)
    return _PRUNED[0]


def test_pruning_stops_a_hopeless_trial_early(tmp_path_factory):
    sweep_dir = pruned_search(tmp_path_factory)
    study = optuna.load_study(study_name="protonet", storage=f"sqlite:///{sweep_dir}/optuna.db")
    good, hopeless = study.trials
    State = optuna.trial.TrialState
    assert (good.state, hopeless.state) == (State.COMPLETE, State.PRUNED)
    # both reported after each validation (every 3 steps); the hopeless one stopped at the first
    assert sorted(good.intermediate_values) == [3, 6]
    assert sorted(hopeless.intermediate_values) == [3]
    assert hopeless.intermediate_values[3] < good.intermediate_values[3]
    good_dir, pruned_dir = (Path(t.user_attrs["output_dir"]) for t in (good, hopeless))
    steps = [row.split(",")[1] for row in (pruned_dir / "metrics.csv").read_text().splitlines()]
    assert max(int(s) for s in steps[1:]) < 6  # never trained to the end of its 6 steps
    assert (good_dir / "results.json").is_file() and not (good_dir / "pruned.txt").exists()
    # no test phase; the run folder and the W&B run say it was pruned
    assert not (pruned_dir / "results.json").exists()
    assert (pruned_dir / "pruned.txt").read_text().startswith("pruned at step 3: val/acc=")
    records = wandb_records(pruned_dir)
    summary = {}
    for record in records:
        summary.update(record["summary"]["update"] if record["type"] == "summary" else {})
    assert summary["status"] == "pruned" and summary["pruned"].startswith("pruned at step 3")
    assert "pruned" in [r["run"] for r in records if r["type"] == "run"][-1]["tags"]
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [0]


def test_the_optuna_dashboard_serves_a_search_study(tmp_path_factory):
    sweep_dir = pruned_search(tmp_path_factory)
    study = optuna.load_study(study_name="protonet", storage=f"sqlite:///{sweep_dir}/optuna.db")
    port = free_port()
    dashboard = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "optuna-dashboard"),
            f"sqlite:///{sweep_dir}/optuna.db",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        summaries = get_json(f"http://127.0.0.1:{port}/api/studies", dashboard)["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["protonet"]
        detail = get_json(
            f"http://127.0.0.1:{port}/api/studies/{summaries[0]['study_id']}", dashboard
        )
        assert [t["state"] for t in detail["trials"]] == ["Complete", "Pruned"]
        (best,) = detail["best_trials"]
        assert best["number"] == study.best_trial.number
        assert best["values"] == [pytest.approx(study.best_value)]
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)


def get_json(url: str, server: subprocess.Popen, timeout: float = 120) -> dict:
    """GET a JSON answer from a server that may still be starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.loads(answer.read())
        except OSError:
            assert server.poll() is None, server.stderr.read()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_workers_on_one_journal_file_share_the_study(tmp_path):
    """Two processes on one study in a journal file (what SLURM workers on a shared filesystem
    do): every trial runs once, none is lost."""
    sweep_dir = tmp_path / "search"
    journal = sweep_dir / "optuna.journal"  # what storage=journal means
    cmd = [
        sys.executable,
        "-m",
        "metalab.run.train",
        "-m",
        f"{SEARCH}=protonet",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.storage=journal",
        "hydra.sweeper.n_trials=2",
        *TINY,
        *CSV,
        "steps=2",
        "val_every=2",
        "test_episodes=5",
        "pixel_baseline=false",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    workers = [
        subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="protonet", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    workers = {t.user_attrs["worker"]["pid"] for t in study.trials}
    assert len(workers) == 2  # both took part
    folders = {t.user_attrs["output_dir"] for t in study.trials}
    assert len(folders) == 4 and all(Path(f, "results.json").is_file() for f in folders)


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "hydra.sweeper.sampler=annealing",
            "hydra.sweeper.sampler=annealing: allowed: tpe, random, cmaes, gp, grid, nsgaii",
        ),
        (
            "hydra.sweeper.pruner=early",
            "hydra.sweeper.pruner=early: allowed: median, hyperband, null (no pruning)",
        ),
        (
            "hydra.sweeper.storage=journal:{tmp}/file/optuna.journal",
            "hydra.sweeper.storage=journal:{tmp}/file/optuna.journal: cannot write "
            "{tmp}/file/optuna.journal: {tmp}/file is a file, not a folder",
        ),
    ],
    ids=["sampler", "pruner", "storage"],
)
def test_bad_sweeper_settings_get_one_line(tmp_path, override, message):
    (tmp_path / "file").write_text("a file, not a folder")
    proc = run_cli(
        "run.train",
        "-m",
        f"{SEARCH}=protonet",
        f"hydra.sweep.dir={tmp_path}/sweep",
        override.format(tmp=tmp_path),
        *TINY,
        *CSV,
    )
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"metalab-train: error: {message}".format(tmp=tmp_path))
    assert not list((tmp_path / "sweep").glob("*/*"))  # no job started


def test_optuna_search_needs_validation_episodes(tmp_path):
    proc = run_cli(
        "run.train",
        "-m",
        f"{SEARCH}=protonet",
        f"hydra.sweep.dir={tmp_path}",
        *TINY,
        *CSV,
        "val_episodes=0",
    )
    assert proc.returncode == 2
    assert "val_episodes=0: an Optuna search optimises the validation metric" in proc.stderr
    assert "Traceback" not in proc.stderr


def compose_search(name: str):
    return compose([f"{SEARCH}={name}"], hydra=True)


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
    if "inner_lr" in cfg.algorithm and algorithm != "random_rl":  # gradient-based, trained
        assert {"algorithm.inner_lr", "algorithm.inner_steps", "algorithm.optimizer.lr"} <= set(
            sweeper.params
        )


def test_hydra_sweep_syntax_becomes_optuna_distributions():
    lines = [
        "a=choice(5, 10, 20)",
        "b=range(1, 6)",
        "c=range(0, 10, 3)",
        "d=int(interval(1, 5))",
        "e=tag(log, interval(1e-4, 1e-2))",
        "f=interval(0.1, 1.0)",
        "g=choice(x, y)",
        "seed=3",
        "+extra=${hydra:job.num}",
    ]
    space, fixed = search_space(lines)
    assert space == {
        "a": CategoricalDistribution([5, 10, 20]),
        "b": IntDistribution(1, 5),
        "c": IntDistribution(0, 9, step=3),
        "d": IntDistribution(1, 5),
        "e": FloatDistribution(1e-4, 1e-2, log=True),
        "f": FloatDistribution(0.1, 1.0),
        "g": CategoricalDistribution(["x", "y"]),
    }
    assert fixed == ["seed=3", "+extra=${hydra:job.num}"]
    # sampler=grid visits exactly the points Hydra's own grid sweep would
    discrete = {k: v for k, v in space.items() if k in "abcg"}
    hydra_grid = {
        o.get_key_element(): list(o.sweep_iterator())
        for o in OverridesParser.create().parse_overrides(lines)
        if o.get_key_element() in discrete
    }
    assert grid_choices(discrete) == hydra_grid


@pytest.mark.parametrize("name", ["tpe", "random", "cmaes", "gp", "grid", "nsgaii"])
def test_every_sampler_searches_a_space(name):
    settings = OmegaConf.structured(OptunaSweeperConf)
    search = OptunaSearch(
        **{k: v for k, v in settings.items() if k != "_target_"}
        | {"sampler": name, "seed": 0, "direction": "maximize"}
    )
    space, _ = search_space(
        ["x=range(0, 4)", "y=choice(1, 2)"]
        if name == "grid"
        else ["x=interval(0.0, 1.0)", "y=int(interval(1, 4))"]
    )
    study = optuna.create_study(sampler=search.make_sampler(space), direction="maximize")
    for _ in range(8):
        trial = study.ask(fixed_distributions=space)
        try:
            study.tell(trial, trial.params["x"] * trial.params["y"])
        except RuntimeError as err:  # the grid sampler stops the study after its last point
            assert name == "grid" and "Study.stop" in str(err) and len(study.trials) == 8
    points = {(t.params["x"], t.params["y"]) for t in study.trials}
    if name == "grid":
        assert points == {(x, y) for x in range(4) for y in (1, 2)}  # all 8, none twice
    assert all(0 <= x <= 3 for x, _ in points)


@pytest.mark.parametrize("name", ["median", "hyperband"])
def test_each_pruner_stops_only_bad_trials_from_its_default_settings(name):
    settings = OmegaConf.structured(OptunaSweeperConf)
    study = optuna.create_study(
        direction="maximize", pruner=make_pruner(name, settings.median, settings.hyperband)
    )
    pruned = []
    for i in range(20):  # good and bad trials in turn, reporting at 4 validations
        trial, value = study.ask(), 0.2 if i % 2 else 0.8
        for step in (3, 6, 9, 12):
            trial.report(value, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned.append(i)
                break
        else:
            study.tell(trial, value)
    assert pruned and all(i % 2 for i in pruned)


class _RunsCode:
    """Unpickling this runs Path.touch on the marker: what a crafted checkpoint can do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_best_validation_reads_checkpoints_without_running_code(tmp_path):
    import pickle

    import torch

    (tmp_path / "checkpoints").mkdir()
    marker = tmp_path / "code-ran"
    torch.save(
        {
            "callbacks": {"ModelCheckpoint{}": {"best_model_score": torch.tensor(0.5)}},
            "payload": _RunsCode(marker),
        },
        tmp_path / "checkpoints" / "best.ckpt",
    )
    with pytest.raises(pickle.UnpicklingError):
        _sweep.best_validation(tmp_path)
    assert not marker.exists()
    torch.save(
        {"callbacks": {"ModelCheckpoint{}": {"best_model_score": torch.tensor(0.5)}}},
        tmp_path / "checkpoints" / "best.ckpt",
    )  # a plain checkpoint is read
    assert _sweep.best_validation(tmp_path) == 0.5


# -- W&B sweeps ----------------------------------------------------------------------------------
SWEEP_FILES = sorted((ROOT / "sweeps").glob("*.yaml"))


def agent_command(sweep: dict, suggested: sweeps.SweepRun) -> list[str]:
    """The command line exactly as `wandb agent` builds it (wandb_agent.Agent._command_run)."""
    values = create_sweep_command_args({"args": suggested.config})
    values |= {
        "interpreter": ["python"],
        "program": [sweep.get("program")],
        "env": ["/usr/bin/env"],
    }
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
    assert command[:4] == ["/usr/bin/env", "python", "-m", "metalab.run.train"]
    cfg = compose(command[4:])  # Hydra takes every argument as it is
    assert sweep["metric"]["name"] in ("val/acc", "val/mse")
    for key, value in suggested.config.items():
        assert OmegaConf.select(cfg, key) == pytest.approx(value["value"]), key


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 4 points only
def test_wandb_bayes_sweep_learns_from_finished_runs_on_this_numpy():
    """The sweep engine's Gaussian-process step (numpy, scipy, scikit-learn) on the installed
    numpy (2.x in `make install`), although the package declares numpy<2: it suggests a new point
    inside the bounds."""
    sweep = yaml.safe_load((ROOT / "sweeps/maml-bayes.yaml").read_text())
    config = sweeps.SweepConfig(sweep)
    finished = []
    for i in range(4):
        run = sweeps.next_run(config, finished, validate=True)
        finished.append(
            sweeps.SweepRun(
                config=run.config,
                state=sweeps.RunState.finished,
                history=[{"val/acc": 0.5 + i / 10}],
                name=f"r{i}",
            )
        )
    suggested = sweeps.next_run(config, finished, validate=True)
    lr = suggested.config["algorithm.optimizer.lr"]["value"]
    assert 1e-4 <= lr <= 1e-2 and suggested.config not in [r.config for r in finished]


def test_a_suggested_wandb_sweep_command_trains(tmp_path):
    sweep = yaml.safe_load((ROOT / "sweeps/protonet-grid.yaml").read_text())
    suggested = sweeps.next_run(sweeps.SweepConfig(sweep), [], validate=True)
    command = [*agent_command(sweep, suggested), *TINY, *CSV, f"hydra.run.dir={tmp_path}"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (
        config["algorithm"]["optimizer"]["lr"]
        == suggested.config["algorithm.optimizer.lr"]["value"]
    )
    assert config["dataset"]["train_ways"] == suggested.config["dataset.train_ways"]["value"]
    assert (tmp_path / "results.json").is_file()
    # the finished run goes back to the engine, which moves on to another grid point
    done = sweeps.SweepRun(
        config=suggested.config,
        state=sweeps.RunState.finished,
        history=[{"val/acc": best_val_acc(tmp_path)}],
    )
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

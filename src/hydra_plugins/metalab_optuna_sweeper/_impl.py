"""The Optuna search behind `hydra/sweeper=optuna`: a study asked for trials in batches of
n_jobs, each trial launched as a Hydra job whose return value is the objective.

- Search space: `hydra.sweeper.params` (and sweep overrides on the command line) in Hydra's
  syntax: choice(...), range(...), interval(...), tag(log, ...), int(...).
- Pruning: the job reads its trial from METALAB_OPTUNA_TRIAL (job_trial) and reports to it; a job
  that raises optuna.TrialPruned is told to the study as pruned.
- Several workers on one study: the storage hands out trial numbers, so no trial runs twice.
  Each worker writes its host, pid and a heartbeat into its running trials; a study that is
  continued marks RUNNING trials whose worker is gone as failed, and says so.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hydra_plugins.metalab_optuna_sweeper.config import PRUNERS, SAMPLERS, TRIAL_VAR
from metalab.errors import ConfigError

log = logging.getLogger(__name__)
_ACTIVE: dict[str, optuna.Study] = {}  # studies searched by this process, for its own jobs


def fail(err: ConfigError) -> None:
    """A bad sweeper setting: one line and exit 2, before any trial."""
    print(f"metalab-train: error: {err}", file=sys.stderr)
    sys.exit(2)


class OptunaSearch:
    def __init__(
        self,
        *,
        direction: str,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: DictConfig | None,
        sampler: Any,
        seed: int | None,
        tpe: DictConfig,
        pruner: str | None,
        median: DictConfig,
        hyperband: DictConfig,
        heartbeat_interval: int,
        grace_period: int,
    ) -> None:
        self.direction, self.storage_spec, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = dict(params or {})
        self.sampler_spec, self.seed, self.tpe = sampler, seed, tpe
        self.pruner_spec, self.median, self.hyperband = pruner, median, hyperband
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        try:
            self._check()
        except ConfigError as err:
            fail(err)

    def _check(self) -> None:
        if self.direction not in ("minimize", "maximize"):
            raise ConfigError(
                "hydra.sweeper.direction", self.direction, "allowed: minimize, maximize"
            )
        for key in ("n_trials", "n_jobs", "heartbeat_interval", "grace_period"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"hydra.sweeper.{key}", value, "must be a positive integer")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(
                "hydra.sweeper.max_failure_rate", self.max_failure_rate, "must be between 0 and 1"
            )
        if isinstance(self.sampler_spec, str) and self.sampler_spec not in SAMPLERS:
            raise ConfigError(
                "hydra.sweeper.sampler",
                self.sampler_spec,
                f"allowed: {', '.join(SAMPLERS)} (or an Optuna sampler as "
                "{_target_: optuna.samplers.<Class>, ...})",
            )
        if self.pruner_spec not in (None, *PRUNERS):
            raise ConfigError(
                "hydra.sweeper.pruner",
                self.pruner_spec,
                f"allowed: {', '.join(PRUNERS)}, null (no pruning)",
            )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.storage_spec = storage_setting(self.storage_spec, config.hydra.sweep.dir)
        try:
            check_storage(self.storage_spec)
        except ConfigError as err:
            fail(err)
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.job_idx = 0

    # -- the search ------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        lines = [f"{key}={value}" for key, value in self.params.items()] + list(arguments)
        try:
            space, fixed = search_space(lines)
            sampler = self.make_sampler(space)
        except ConfigError as err:
            fail(err)
        n_trials = self.n_trials
        if isinstance(sampler, optuna.samplers.GridSampler):
            n_trials = min(n_trials, math.prod(len(v) for v in grid_choices(space).values()))
        storage = open_storage(self.storage_spec)
        pruner = make_pruner(self.pruner_spec, self.median, self.hyperband)
        study = optuna.create_study(
            study_name=self.study_name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=self.direction,
            load_if_exists=True,
        )
        _ACTIVE[study.study_name] = study
        fail_interrupted_trials(study, self.grace_period)
        log.info(
            f"Study {study.study_name} in {self.storage_spec or 'memory'}: "
            f"{len(study.trials)} earlier trials; sampler {type(sampler).__name__}, "
            f"pruner {type(study.pruner).__name__}, {self.direction}"
        )
        to_go = n_trials
        while to_go > 0:
            batch = min(to_go, self.n_jobs)
            trials = [study.ask(fixed_distributions=space) for _ in range(batch)]
            for trial in trials:
                trial.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
                trial.set_user_attr("heartbeat", time.time())
            overrides = [
                job_overrides(trial, fixed, self.pruner_spec is not None) for trial in trials
            ]
            try:
                with Heartbeat(trials, self.heartbeat_interval):
                    returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:  # Ctrl-C, a launcher error: no trial is left RUNNING
                for trial in trials:
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                raise
            self.job_idx += len(returns)
            failures = [
                ret
                for trial, ret in zip(trials, returns)
                if tell(study, trial, ret) == TrialState.FAIL
            ]
            if failures and len(failures) / len(returns) > self.max_failure_rate:
                raise RuntimeError(
                    f"{len(failures)} of {len(returns)} trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.max_failure_rate}"
                )
            to_go -= batch
        self.write_best(study)

    def make_sampler(self, space: dict[str, BaseDistribution]) -> optuna.samplers.BaseSampler:
        spec, seed = self.sampler_spec, self.seed
        if not isinstance(spec, str):  # {_target_: ...}, instantiated by Hydra
            return spec
        if spec == "tpe":
            with warnings.catch_warnings():  # `group` is still marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.TPESampler(seed=seed, **OmegaConf.to_container(self.tpe))
        if spec == "grid":
            return optuna.samplers.GridSampler(grid_choices(space), seed=seed)
        classes = {
            "random": optuna.samplers.RandomSampler,
            "cmaes": optuna.samplers.CmaEsSampler,
            "gp": optuna.samplers.GPSampler,
            "nsgaii": optuna.samplers.NSGAIISampler,
        }
        return classes[spec](seed=seed)

    def write_best(self, study: optuna.Study) -> None:
        done = [t for t in study.trials if t.state == TrialState.COMPLETE]
        if not done:
            log.warning(f"No trial of study {study.study_name} has completed")
            return
        best = study.best_trial
        log.info(f"Best trial {best.number}: {best.params}")
        log.info(f"Best value: {best.value}")
        results = {
            "name": "optuna",
            "study_name": study.study_name,
            "best_trial": best.number,
            "best_params": best.params,
            "best_value": best.value,
        }
        OmegaConf.save(
            OmegaConf.create(results),
            Path(self.config.hydra.sweep.dir) / "optimization_results.yaml",
        )


def job_overrides(trial: optuna.Trial, fixed: list[str], pruning: bool) -> tuple[str, ...]:
    """The trial's parameters, the fixed overrides and, when pruning, the trial's number in
    the job's environment (its runs report to the trial)."""
    params = [f"{name}={value}" for name, value in trial.params.items()]
    report = [f"++hydra.job.env_set.{TRIAL_VAR}={trial.number}"] if pruning else []
    return (*params, *fixed, *report)


def tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> TrialState:
    """A job's outcome into the study: its return value, pruned (it raised TrialPruned), or
    failed (an exception, or a value that is not a finite number)."""
    value = ret._return_value
    if ret.status == JobStatus.COMPLETED:
        try:
            value = float(value)
            state = TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL
        except (TypeError, ValueError):
            state = TrialState.FAIL
    else:
        state = TrialState.PRUNED if isinstance(value, optuna.TrialPruned) else TrialState.FAIL
        if state == TrialState.FAIL:
            log.warning(f"Trial {trial.number} failed: {value!r}")
    trial.set_user_attr("output_dir", str(ret.hydra_cfg.hydra.runtime.output_dir))
    try:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    except RuntimeError as err:  # the grid sampler stops the study when its grid is done
        if "Study.stop" not in str(err):
            raise
    return state


# -- search space ------------------------------------------------------------------------------
def search_space(lines: list[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """Sweep overrides -> Optuna distributions; the other overrides are passed to every job."""
    space, fixed = {}, []
    for override in OverridesParser.create().parse_overrides(lines):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def distribution(override: Override) -> BaseDistribution:
    key, value = override.get_key_element(), override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())  # range(a, b, s): like Python's, b excluded
        if not values:
            raise ConfigError(
                f"hydra.sweeper.params.{key}",
                override.input_line.split("=", 1)[1],
                "an empty range",
            )
        if all(isinstance(v, int) for v in values) and value.step > 0:
            return IntDistribution(values[0], values[-1], step=value.step)
        return CategoricalDistribution(values)
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if log_scale and value.start <= 0:
            raise ConfigError(
                f"hydra.sweeper.params.{key}",
                override.input_line.split("=", 1)[1],
                "a log-scale interval must start above 0",
            )
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(
        f"hydra.sweeper.params.{key}",
        override.input_line,
        "allowed: choice(...), range(...), interval(...), tag(log, interval(...))",
    )


def grid_choices(space: dict[str, BaseDistribution]) -> dict[str, list]:
    """sampler=grid: every value of each discrete parameter."""
    grid = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution) and not dist.log:
            grid[name] = list(range(dist.low, dist.high + 1, dist.step))
        else:
            raise ConfigError(
                f"hydra.sweeper.params.{name}",
                "interval(...)",
                "sampler=grid needs choice(...) or an integer range(...)",
            )
    return grid


# -- pruning -----------------------------------------------------------------------------------
def make_pruner(
    name: str | None, median: DictConfig, hyperband: DictConfig
) -> optuna.pruners.BasePruner:
    if name == "median":
        return optuna.pruners.MedianPruner(**OmegaConf.to_container(median))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**OmegaConf.to_container(hyperband))
    return optuna.pruners.NopPruner()


def job_trial(number: int) -> optuna.Trial:
    """The trial that this job runs (rank 0 of a job started by the sweeper): the study searched
    by this process, else the one in the sweeper's storage (a job on another machine)."""
    sweeper = HydraConfig.get().sweeper
    study = (
        _ACTIVE.get(sweeper.study_name)
        if sweeper.study_name
        else next(iter(_ACTIVE.values()), None)
    )
    if study is None:
        study = optuna.load_study(
            study_name=sweeper.study_name,
            storage=open_storage(storage_setting(sweeper.storage, HydraConfig.get().sweep.dir)),
            pruner=make_pruner(sweeper.pruner, sweeper.median, sweeper.hyperband),
        )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.number == number:
            return optuna.Trial(study, trial._trial_id)
    raise RuntimeError(f"trial {number} of study {study.study_name} is not running")


# -- storage -----------------------------------------------------------------------------------
def storage_setting(spec: str | None, sweep_dir: str) -> str | None:
    """`journal` alone: the journal file <sweep dir>/optuna.journal."""
    return f"journal:{Path(sweep_dir, 'optuna.journal')}" if spec == "journal" else spec


def storage_file(spec: str | None) -> Path | None:
    """The file a storage setting writes: sqlite:///<file> or journal:<file>."""
    if spec is None:
        return None
    if spec.startswith("sqlite:///"):
        return Path(spec.removeprefix("sqlite:///"))
    if spec.startswith("journal:"):
        return Path(spec.removeprefix("journal:"))
    return None


def check_storage(spec: str | None) -> None:
    if spec is not None and not (spec.startswith("journal:") or "://" in spec):
        raise ConfigError(
            "hydra.sweeper.storage",
            spec,
            "allowed: null (in memory), sqlite:///<file>, journal:<file> or journal "
            "(<sweep>/optuna.journal; for shared filesystems), or another Optuna "
            "database URL",
        )
    path = storage_file(spec)
    if path is None:
        return
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise ConfigError(
            "hydra.sweeper.storage",
            spec,
            f"cannot write {path}: {existing} is a file, not a folder",
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as err:
        raise ConfigError(
            "hydra.sweeper.storage", spec, f"cannot write {path}: {err.strerror or err}"
        ) from None


@functools.cache
def open_storage(spec: str | None) -> optuna.storages.BaseStorage | None:
    """One storage object per setting in a process (the sweeper's jobs share it)."""
    if spec is None:
        return optuna.storages.InMemoryStorage()
    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(str(storage_file(spec))))
    # several SQLite writers wait for each other's locks rather than failing
    engine = {"connect_args": {"timeout": 60}} if spec.startswith("sqlite:") else None
    return optuna.storages.RDBStorage(spec, engine_kwargs=engine)


# -- interrupted trials ------------------------------------------------------------------------
class Heartbeat:
    """While its trials run, writes the time into them every `interval` seconds: a RUNNING
    trial without a recent heartbeat has lost its worker."""

    def __init__(self, trials: list[optuna.Trial], interval: int):
        self.trials, self.interval = trials, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            for trial in self.trials:
                try:
                    trial.set_user_attr("heartbeat", time.time())
                except Exception:  # finished meanwhile, or storage busy: the next beat counts
                    pass

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def interrupted(trial: optuna.trial.FrozenTrial, grace_period: int) -> str | None:
    """Why a RUNNING trial is known to be dead, else None."""
    worker = trial.user_attrs.get("worker") or {}
    if worker.get("host") == socket.gethostname() and not pid_alive(worker.get("pid")):
        return f"its worker (pid {worker['pid']}) has stopped"
    beat = trial.user_attrs.get("heartbeat")
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    if beat is not None and time.time() - beat > grace_period:
        return f"no heartbeat for {time.time() - beat:.0f} s"
    return None


def pid_alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_interrupted_trials(study: optuna.Study, grace_period: int) -> None:
    """Marks the study's trials that an interrupted worker left RUNNING as failed."""
    marked = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = interrupted(trial, grace_period)
        if reason is not None:
            storage = study._storage
            storage.set_trial_user_attr(trial._trial_id, "interrupted", reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            marked.append(f"{trial.number} ({reason})")
    if marked:
        print(
            f"metalab-train: marked interrupted trial(s) of study {study.study_name} as "
            f"failed: {', '.join(marked)}",
            file=sys.stderr,
        )

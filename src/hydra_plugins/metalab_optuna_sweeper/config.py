# ruff: noqa: UP006, UP035, UP045
"""The `hydra.sweeper.*` keys of the Optuna sweeper, registered as `hydra/sweeper=optuna`.

Kept free of Optuna imports: Hydra imports this module on every start while scanning plugins.
Annotations stay evaluated (no `from __future__ import annotations`, and typing's Optional/Dict):
the scanner runs the module before registering it, and OmegaConf reads the types."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore

SAMPLERS = ("tpe", "random", "cmaes", "gp", "grid", "nsgaii")
PRUNERS = ("median", "hyperband")
TRIAL_VAR = "METALAB_OPTUNA_TRIAL"  # in a pruned search's jobs: the trial number to report to


@dataclass
class TPEOptions:
    """TPE's options (sampler=tpe): multivariate TPE over grouped parameters by default."""

    multivariate: bool = True
    group: bool = True
    n_startup_trials: int = 10  # random trials before TPE models the results
    constant_liar: bool = True  # pending trials count as bad ones: parallel workers spread out


@dataclass
class MedianOptions:
    """pruner=median: stop a trial whose value at a step is worse than the median of earlier
    trials' values at that step."""

    n_startup_trials: int = 5  # trials that are never pruned (and form the first median)
    n_warmup_steps: int = 0  # training steps before a trial can be pruned
    interval_steps: int = 1


@dataclass
class HyperbandOptions:
    """pruner=hyperband: successive halving in several brackets; resources are training steps."""

    min_resource: int = 1
    max_resource: Any = "auto"  # "auto": the longest completed trial's last step
    reduction_factor: int = 3


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.metalab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    direction: str = "minimize"  # minimize | maximize
    # null: in memory; sqlite:///<file>; journal:<file> (shared filesystems); any Optuna RDB URL
    storage: Optional[str] = None
    study_name: Optional[str] = None
    n_trials: int = 20  # trials this invocation adds to the study
    n_jobs: int = 1  # trials asked and launched at a time
    max_failure_rate: float = 0.0  # above it, a batch with failed trials ends the search
    params: Optional[Dict[str, str]] = None  # key: Hydra sweep syntax (choice/range/interval/tag)
    # a name in SAMPLERS, or {_target_: optuna.samplers.<Class>, ...}
    sampler: Any = "tpe"
    seed: Optional[int] = None  # the sampler's seed: same seed, same suggestions
    tpe: TPEOptions = field(default_factory=TPEOptions)
    pruner: Optional[str] = None  # null (no pruning) or a name in PRUNERS
    median: MedianOptions = field(default_factory=MedianOptions)
    hyperband: HyperbandOptions = field(default_factory=HyperbandOptions)
    # a RUNNING trial whose worker has sent no heartbeat for this long was interrupted
    heartbeat_interval: int = 30  # seconds
    grace_period: int = 300  # seconds


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="metalab"
)

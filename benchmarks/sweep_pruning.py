"""What pruning saves: wall time of the same Optuna search (conf/search/<name>) with and without
a pruner, through metalab-train as a user runs it, on the same sampler and run seeds.

Usage (from the repository root):
    python benchmarks/sweep_pruning.py [--search protonet] [--trials 12] [--pruner median]
        [--out DIR] [overrides...]
Prints per search its wall time, training steps run, trial states and best value, then
    pruned_over_unpruned=<wall time with the pruner / wall time without> steps_ratio=<...>
The steps ratio is the work saved, free of the machine's load; the wall time also counts what a
pruned trial does not save (start-up, data, the trials it does not prune). The sweep folders
(and their studies, for optuna-dashboard) stay in --out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
BUDGET = [
    "steps=12",
    "val_every=3",
    "val_episodes=10",
    "test_episodes=20",
    "eval_batch=10",
    "logger=csv",
    "pixel_baseline=false",
]


def search(
    name: str, sweep_dir: Path, trials: int, pruner: str | None, overrides: list[str]
) -> tuple[float, int]:
    cmd = [
        sys.executable,
        "-m",
        "metalab.run.train",
        "-m",
        f"search={name}",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.seed=0",
        f"hydra.sweeper.pruner={pruner or 'null'}",
        *BUDGET,
        *overrides,
    ]
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"search failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir}/optuna.db")
    states = Counter(t.state.name.lower() for t in study.trials)
    steps = sum(
        max(t.intermediate_values, default=0)
        if t.state.name == "PRUNED"
        else int(OmegaConf.load(Path(t.user_attrs["output_dir"], "config.yaml")).steps)
        for t in study.trials
    )
    print(
        f"{name} pruner={pruner or 'none'}: {wall:.1f} s, {steps} steps, {dict(states)}, "
        f"best {study.best_value:.4f} (trial {study.best_trial.number})",
        flush=True,
    )
    return wall, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search", default="protonet")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--pruner", default="median", choices=["median", "hyperband"])
    parser.add_argument("--out", type=Path, default=None)
    args, overrides = parser.parse_known_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="sweep-pruning-"))
    plain, plain_steps = search(args.search, out / "unpruned", args.trials, None, overrides)
    pruned, pruned_steps = search(
        args.search, out / args.pruner, args.trials, args.pruner, overrides
    )
    print(
        f"pruned_over_unpruned={pruned / plain:.3f} steps_ratio="
        f"{pruned_steps / plain_steps:.3f} (sweeps in {out})"
    )


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    main()

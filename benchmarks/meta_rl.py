"""The MAML paper's Figure 4 pattern on CPU, run by hand: MAML-RL, the pretrained policy and the
random policy on the same fixed test tasks, each adapted with the same policy-gradient steps.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/meta_rl.py            # nav2d
    PYTHONPATH=src python benchmarks/meta_rl.py --setting halfcheetah_vel --out outputs/meta_rl_hc
    PYTHONPATH=src python benchmarks/meta_rl.py --table outputs/meta_rl   # reprint a finished one

Each algorithm is one `python -m metalab.run.train` run (metalab-train as a user runs it) into
<out>/<algorithm>/. The table: the mean return over the test tasks before adaptation and after 1,
2 and 3 policy-gradient steps, with 95% CIs; then MAML minus each baseline after each number of
steps, paired task by task (test_episodes.csv, the same tasks in every run: eval_seed), with the
95% CI of the mean difference. Wall time and CPU time (user + system of the run's processes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
from metalab.compare.statistics import mean_ci95  # noqa: E402

COMMON = [
    "logger=csv",
    "resume=never",
    "backbone=policy",
    "val_episodes=0",
    "eval_batch=25",
    "log_every=5",
]
# nav2d: the paper's task, policy (100-100), inner step (alpha 0.1, K = 20 rollouts) and
# meta-batch (20 tasks); 3 clipped-surrogate steps per meta-batch, 50 meta-steps (~2 CPU min).
SETTINGS = {
    "nav2d": {
        "common": ["dataset=nav2d", "test_episodes=50", "algorithm.outer_steps=3"],
        "maml_rl": ["steps=50"],
        "pretrained_rl": ["steps=50"],
        "random_rl": ["steps=1"],
        "reptile_rl": ["steps=50"],  # optional: --only reptile_rl
    },
    # HalfCheetah goal velocity on a CPU budget (24 CPU minutes for the three runs). Kept from
    # the MAML paper (5.3): target velocity in [0, 2], alpha = 0.1, K = 20 rollouts per inner
    # step, one inner step in training. From ProMP's code (Rothfuss et al. 2019, run_scripts/
    # pro-mp_run_mujoco.py), whose outer objective this is: horizon 100 (the paper: 200), a
    # 64-64 policy (the paper: 100-100), 5 clipped-surrogate steps per meta-batch with clip 0.3,
    # Adam 1e-3, per-task normalised advantages. Shorter rollouts and smaller meta-batches (10
    # tasks; the paper and ProMP: 40) buy more meta-steps (240; ProMP: 1,000) in the budget.
    # 40 fixed test tasks for the paired CIs.
    "halfcheetah_vel": {
        "common": [
            "dataset=halfcheetah_vel",
            "dataset.env.horizon=100",
            "backbone.hidden=[64,64]",
            "test_episodes=40",
            "algorithm.meta_batch=10",
            "dataset.shots=20",
            "dataset.queries=20",
            "algorithm.outer_steps=5",
            "algorithm.clip=0.3",
        ],
        "maml_rl": ["steps=240"],
        "pretrained_rl": ["steps=240"],
        "random_rl": ["steps=1"],
    },
}
ALGORITHMS = ("maml_rl", "pretrained_rl", "random_rl")  # the default runs
OPTIONAL = ("reptile_rl",)  # run with --only where a setting lists it; tabled when present
STEPS = 4  # before adaptation, then after 1, 2, 3 steps


def train(out: Path, setting: dict, algorithm: str) -> dict:
    run_dir = out / algorithm
    cmd = [
        sys.executable,
        "-m",
        "metalab.run.train",
        f"hydra.run.dir={run_dir}",
        f"algorithm={algorithm}",
        *COMMON,
        *setting["common"],
        *setting[algorithm],
    ]
    print(" ".join(cmd[1:]), flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"}
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{algorithm} failed:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    timing = {"wall_s": wall, "cpu_s": cpu}
    (run_dir / "timing.json").write_text(json.dumps(timing) + "\n")
    return timing


def per_task(run_dir: Path) -> dict[str, torch.Tensor]:
    with open(run_dir / "test_episodes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: torch.tensor([float(r[k]) for r in rows], dtype=torch.float64) for k in rows[0]}


def table(out: Path) -> None:
    runs = {
        a: per_task(out / a)
        for a in (*ALGORITHMS, *OPTIONAL)
        if (out / a / "test_episodes.csv").exists()
    }
    head = "| algorithm | " + " | ".join(f"{s} steps" for s in range(STEPS)) + " | wall / CPU |"
    print(head + "\n|" + "---|" * (STEPS + 2))
    for name, episodes in runs.items():
        cells = [
            f"{m:.1f} ± {ci:.1f}"
            for m, ci in (mean_ci95(episodes[f"return_step{s}"]) for s in range(STEPS))
        ]
        timing = json.loads((out / name / "timing.json").read_text())
        print(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {timing['wall_s'] / 60:.1f} / {timing['cpu_s'] / 60:.1f} min |"
        )
    if "maml_rl" not in runs:
        return
    print(
        f"\npaired over {len(runs['maml_rl']['return'])} test tasks, MAML minus baseline "
        "(mean, 95% CI):\n"
    )
    print("| baseline | " + " | ".join(f"{s} steps" for s in range(STEPS)) + " |")
    print("|" + "---|" * (STEPS + 1))
    for name in (n for n in runs if n != "maml_rl"):
        cells = []
        for s in range(STEPS):
            key = f"return_step{s}"
            mean, ci = mean_ci95(runs["maml_rl"][key] - runs[name][key])
            sign = " *" if abs(mean) > ci else ""
            cells.append(f"{mean:+.1f} [{mean - ci:+.1f}, {mean + ci:+.1f}]{sign}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n* the 95% CI excludes zero")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="nav2d")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", action="append", choices=(*ALGORITHMS, *OPTIONAL))
    parser.add_argument("--table", type=Path, help="print the table of a finished run folder")
    args = parser.parse_args()
    if args.table:
        return table(args.table)
    out = args.out or ROOT / "outputs" / f"meta_rl_{args.setting}"
    for algorithm in args.only or ALGORITHMS:
        train(out, SETTINGS[args.setting], algorithm)
    table(out)


if __name__ == "__main__":
    main()

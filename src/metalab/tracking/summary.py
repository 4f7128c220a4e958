"""The files a run leaves behind for people and tools: results.json, per-episode results."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import torch
from pytorch_lightning.loggers import WandbLogger
from rich.console import Console

from metalab.run.rundir import write_atomic


def write_results(
    run_dir: Path, results: dict, per_episode: dict[str, torch.Tensor], loggers: list = ()
) -> None:
    # strict JSON: a non-finite metric (a diverged model) is null, never a bare NaN
    finite = {
        k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in results.items()
    }
    text = json.dumps(finite, indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_atomic(run_dir / "results.json", text.encode())
    if per_episode:  # the same episodes in every run: paired comparisons read this file
        names = sorted(per_episode)
        with open(run_dir / "test_episodes.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["episode", *names])
            for i, row in enumerate(zip(*(per_episode[n].tolist() for n in names))):
                writer.writerow([i, *(f"{v:.6g}" for v in row)])
    for logger in loggers:  # the W&B run's summary; other loggers keep no summary
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(results)


def print_results(results: dict, run_dir: Path | None = None) -> None:
    """One line per test metric: mean ± 95% CI over the fixed test episodes, and the protocol
    they were predicted under."""
    console = Console()
    n = int(results.get("test/episodes", 0))
    for name, value in sorted(results.items()):
        if not name.startswith("test/") or name.endswith("_ci95") or name == "test/episodes":
            continue
        ci = results.get(f"{name}_ci95")
        spread = f" ± {ci:.4f}" if ci is not None else ""
        value = float("nan") if value is None else value
        console.print(f"[bold]{name}[/bold] = {value:.4f}{spread}  (95% CI, {n} test episodes)")
    if "protocol" in results:
        stats = results.get("inductive_stats")
        console.print(
            f"protocol: {results['protocol']}"
            + (f" (batch-norm statistics: {stats})" if stats else "")
        )
    perf = ", ".join(
        f"{k.removeprefix('perf/')} {v:.1f}"
        for k, v in sorted(results.items())
        if k.startswith("perf/")
    )
    if perf:
        console.print(f"speed: {perf}")
    if run_dir is not None:
        console.print(f"run folder: {run_dir}")

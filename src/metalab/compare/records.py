"""Run records for metalab-compare: what a run folder or a W&B run holds, in one shape, so the
grouping, the statistics and the report do not care where a run came from.

A damaged file is a CompareError naming the file (one line, exit 2), never a traceback; a folder
that is not a finished run is skipped with a note saying why.
"""

from __future__ import annotations

import csv
import glob
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CURVE_STEP = "trainer/global_step"  # the step Lightning logs to W&B against
RESULTS = ("test/", "perf/")  # what results.json holds (also in a W&B run's summary)
PROTOCOLS = ("transductive", "inductive")
DEFAULT_PROTOCOL = "transductive"  # runs from before the protocol key evaluated this way
NOT_RUNS = ("wandb", ".hydra", "checkpoints", ".submitit")  # folders inside a run or sweep


class CompareError(Exception):
    """A problem with the runs given (a damaged file, nothing to compare): one line."""


@dataclass
class RunRecord:
    name: str  # unique among the runs compared: the path below the common folder
    config: dict  # flat: Hydra keys ("algorithm.optimizer.lr") -> value
    results: dict[str, float]  # final metrics, as in results.json
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (step, value)
    episodes: dict[str, list[float]] | None = None  # per test episode, in the fixed order
    source: str = ""  # run folder or W&B run path
    protocol: str = DEFAULT_PROTOCOL
    label: str = ""  # short name for tables and legends

    def best_val(self, metric: str, higher: bool) -> float | None:
        """The best validation value of the run (the one its best.ckpt was chosen by):
        results.json's `<metric>_best`, else the best point of its validation curve."""
        recorded = self.results.get(f"{metric}_best")
        if recorded is not None and math.isfinite(recorded):
            return recorded
        values = [v for _, v in self.curves.get(metric, []) if math.isfinite(v)]
        return (max if higher else min)(values) if values else None


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def protocol_of(config: dict, results: dict) -> str:
    return str(config.get("protocol") or results.get("protocol") or DEFAULT_PROTOCOL)


# -- run folders ---------------------------------------------------------------------------------
def expand(patterns: list[str]) -> list[Path]:
    folders = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern))  # a plain path: itself, if it exists ("" does not)
        if not matches or not all(Path(m).is_dir() for m in matches):
            raise CompareError(f"{pattern}: no such folder")
        folders += [Path(m).resolve() for m in matches]
    return folders


def scan(patterns: list[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Finished runs (folders with results.json and config.yaml) at or below the given folders
    or glob patterns, and the run folders left out with the reason (a failed sweep job's error,
    a pruned Optuna trial, an unfinished or killed run)."""
    runs, skipped = set(), {}
    for root in expand(patterns):
        for top, dirs, _ in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in NOT_RUNS)
            folder = Path(top)
            has = {
                name: (folder / name).exists()
                for name in (
                    "results.json",
                    "config.yaml",
                    "error.txt",
                    "pruned.txt",
                    ".hydra",
                    "train.log",
                )
            }
            if has["results.json"] and has["config.yaml"]:
                runs.add(folder)
            elif has["error.txt"]:
                lines = (folder / "error.txt").read_text(errors="replace").strip().splitlines()
                skipped[folder] = "failed: " + (lines[-1] if lines else "see error.txt")
            elif has["pruned.txt"]:  # an Optuna trial stopped early: it has no test results
                reason = (folder / "pruned.txt").read_text(errors="replace").strip()
                skipped[folder] = "pruned: " + (reason or "stopped early by the Optuna pruner")
            elif has["results.json"]:
                skipped[folder] = "results.json without config.yaml"
            elif has["config.yaml"] or has[".hydra"] or has["train.log"]:
                skipped[folder] = "no results.json (unfinished, killed or still running)"
    runs = sorted(runs)
    skipped = {f: why for f, why in skipped.items() if not any(f.is_relative_to(r) for r in runs)}
    return runs, sorted(skipped.items())


#: the strings of results.json: how the test episodes were evaluated (metalab.algorithms.protocols)
PROTOCOL_KEYS = ("protocol", "inductive_stats")


def load_run(run_dir: Path, name: str) -> RunRecord:
    config = flatten(read_yaml(run_dir / "config.yaml"))
    results = read_results(run_dir / "results.json")
    return RunRecord(
        name=name,
        config=config,
        results=results,
        curves=read_curves(run_dir / "metrics.csv"),
        episodes=read_episodes(run_dir / "test_episodes.csv"),
        source=str(run_dir),
        protocol=protocol_of(config, results),
    )


def read_yaml(path: Path) -> dict:
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CompareError(
            f"{path}: not valid YAML{where} ({getattr(err, 'problem', None) or err})"
        ) from None
    if not isinstance(tree, dict):
        raise CompareError(
            f"{path}: expected a mapping of config keys, found {type(tree).__name__}"
        )
    return tree


def read_results(path: Path) -> dict:
    """results.json's numbers (null for a non-finite value); the protocol's names, also in
    config.yaml, are left out."""
    try:
        results = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CompareError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(results, dict):
        raise CompareError(f"{path}: expected an object of metrics, found {type(results).__name__}")
    numbers = {}
    for key, value in results.items():
        if key in PROTOCOL_KEYS:
            continue
        if value is None:
            value = math.nan
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise CompareError(f"{path}: {key}={value!r} is not a number")
        numbers[key] = float(value)
    return numbers


def number(path: Path, line: int, column: str, text: str | None) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise CompareError(
            f"{path}: line {line}, column {column}: {text!r} is not a number"
        ) from None


def read_csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (csv.Error, UnicodeDecodeError) as err:
        raise CompareError(f"{path}: not a readable CSV file ({err})") from None


def read_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Learning curves from the CSV logger's metrics.csv (no file: no curves)."""
    if not path.is_file():
        return {}
    return curves_from_rows(read_csv(path), step_key="step", path=path)


def curves_from_rows(
    rows: list[dict], step_key: str, path: Path | None = None
) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {}
    for line, row in enumerate(rows, 2):
        step = row.get(step_key)
        for key, value in row.items():
            if (
                isinstance(key, str)
                and key.startswith(("train/", "val/"))
                and not key.endswith(("_ci95", "/episodes", "_best"))
                and value not in ("", None)
                and step not in ("", None)
            ):
                if path is None:  # W&B history: numbers already
                    point = (float(step), float(value))
                else:
                    point = (number(path, line, step_key, step), number(path, line, key, value))
                curves.setdefault(key, []).append(point)
    return curves


def read_episodes(path: Path) -> dict[str, list[float]] | None:
    if not path.is_file():
        return None
    rows = read_csv(path)
    if not rows:
        raise CompareError(f"{path}: no episodes")
    names = [n for n in rows[0] if n not in ("episode", None)]
    return {
        n: [number(path, line, n, row.get(n)) for line, row in enumerate(rows, 2)] for n in names
    }


# -- W&B runs ------------------------------------------------------------------------------------
def from_wandb_run(run) -> RunRecord:
    """A run of the W&B API (wandb.Api().runs): its config, final summary and history. W&B
    keeps no per-episode results, so such runs are not paired."""
    config = {k: v for k, v in flatten(dict(run.config)).items() if not k.startswith("_")}
    summary = {k: run.summary[k] for k in run.summary.keys()}
    results = {
        k: float(v)
        for k, v in summary.items()
        if (k.startswith(RESULTS) or k.endswith("_best")) and isinstance(v, int | float)
    }
    history = run.history(samples=100_000, pandas=False)
    path = getattr(run, "path", None)  # [entity, project, run id]
    return RunRecord(
        name=run.name,
        config=config,
        results=results,
        curves=curves_from_rows(history, step_key=CURVE_STEP),
        source="/".join(path) if path else run.name,
        protocol=protocol_of(config, summary),
    )


def wandb_records(path: str, group: str | None) -> list[RunRecord]:
    import wandb

    filters = {"state": "finished", **({"group": group} if group else {})}
    return [from_wandb_run(run) for run in wandb.Api().runs(path, filters=filters)]

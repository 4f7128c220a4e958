"""Run records for metalab-compare: what a run folder or a W&B run holds, in one shape, so the
table, the paired comparison and the report do not care where a run came from."""

from __future__ import annotations

import csv
import glob
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CURVE_STEP = "trainer/global_step"  # the step Lightning logs to W&B against
RESULTS = ("test/", "perf/")  # what results.json holds (also in a W&B run's summary)


@dataclass
class RunRecord:
    name: str
    config: dict  # flat: Hydra keys ("algorithm.optimizer.lr") -> value
    results: dict[str, float]  # final test metrics, as in results.json
    curves: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (step, value)
    episodes: dict[str, list[float]] | None = None  # per test episode, in the fixed order
    source: str = ""  # run folder or W&B run path


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# -- run folders ---------------------------------------------------------------------------------
def find_run_dirs(patterns: list[str]) -> list[Path]:
    """Every folder with results.json and config.yaml at or below the given folders or glob
    patterns."""
    found = {results.parent.resolve() for root in expand(patterns)
             for results in root.rglob("results.json")
             if (results.parent / "config.yaml").is_file()}
    return sorted(found)


def expand(patterns: list[str]) -> list[Path]:
    folders = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches or not all(Path(m).is_dir() for m in matches):
            raise SystemExit(f"metalab-compare: {pattern}: no such folder")
        folders += [Path(m) for m in matches]
    return folders


def failed_jobs(patterns: list[str]) -> list[tuple[Path, str]]:
    """Sweep jobs that failed (metalab-train left error.txt): folder and the error's last line."""
    jobs = []
    for root in expand(patterns):
        for error in sorted(root.resolve().rglob("error.txt")):
            lines = error.read_text().strip().splitlines()
            jobs.append((error.parent, lines[-1] if lines else ""))
    return jobs


def load_run(run_dir: Path, name: str) -> RunRecord:
    config = flatten(yaml.safe_load((run_dir / "config.yaml").read_text()))
    results = json.loads((run_dir / "results.json").read_text())
    return RunRecord(name=name, config=config, results=results,
                     curves=read_curves(run_dir / "metrics.csv"),
                     episodes=read_episodes(run_dir / "test_episodes.csv"), source=str(run_dir))


def read_curves(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Learning curves from the CSV logger's metrics.csv (no file: no curves)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return curves_from_rows(list(csv.DictReader(f)), step_key="step")


def curves_from_rows(rows: list[dict], step_key: str) -> dict[str, list[tuple[float, float]]]:
    curves: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        step = row.get(step_key)
        for key, value in row.items():
            if (key.startswith(("train/", "val/")) and not key.endswith(("_ci95", "/episodes"))
                    and value not in ("", None) and step not in ("", None)):
                curves.setdefault(key, []).append((float(step), float(value)))
    return curves


def read_episodes(path: Path) -> dict[str, list[float]] | None:
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    names = [n for n in (rows[0] if rows else {}) if n != "episode"]
    return {n: [float(row[n]) for row in rows] for n in names}


# -- W&B runs ------------------------------------------------------------------------------------
def from_wandb_run(run) -> RunRecord:
    """A run of the W&B API (wandb.Api().runs): its config, test summary and history. W&B keeps
    no per-episode results, so such runs are not paired."""
    config = {k: v for k, v in flatten(dict(run.config)).items() if not k.startswith("_")}
    summary = {k: run.summary[k] for k in run.summary.keys()}
    results = {k: float(v) for k, v in summary.items()
               if k.startswith(RESULTS) and isinstance(v, int | float)}
    history = run.history(samples=100_000, pandas=False)
    path = getattr(run, "path", None)  # [entity, project, run id]
    return RunRecord(name=run.name, config=config, results=results,
                     curves=curves_from_rows(history, step_key=CURVE_STEP),
                     source="/".join(path) if path else run.name)


def wandb_records(path: str, group: str | None) -> list[RunRecord]:
    import wandb

    filters = {"state": "finished", **({"group": group} if group else {})}
    return [from_wandb_run(run) for run in wandb.Api().runs(path, filters=filters)]

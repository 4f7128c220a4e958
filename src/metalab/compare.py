"""metalab-compare: runs side by side, from run and sweep folders or from a W&B project.

    metalab-compare outputs/multirun/2026-01-02_10-00-00          # a sweep folder
    metalab-compare 'outputs/2026-01-0*/*_protonet-*' --out cmp   # run folders (globs)
    metalab-compare --wandb my-team/metalab --group 2026-01-02_10-00-00

Prints a table of the config keys that differ between runs and their test metrics (95% CIs),
best run first; pairs runs evaluated on the same test episodes (the mean per-episode difference
and its 95% CI: a difference is significant when the CI excludes 0); and writes learning-curve
plots and a self-contained HTML report (compare.html) to --out, by default the given folder.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from metalab.records import (
    RESULTS,
    RunRecord,
    failed_jobs,
    find_run_dirs,
    load_run,
    wandb_records,
)
from metalab.report import Table, plot_curves, write_html

# config keys that differ between runs for reasons other than the experiment
IGNORED = ("paths.", "logger.", "hydra.", "ckpt_path")


@dataclass
class Pairing:
    best: str
    other: str
    metric: str  # a column of test_episodes.csv: acc or mse
    mean: float  # mean over the episodes of best - other
    ci95: float
    episodes: int

    @property
    def significant(self) -> bool:
        return abs(self.mean) > self.ci95


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    records, notes, out, title = load(args)
    metric, higher = objective(records)
    records.sort(key=lambda r: sort_key(r.results.get(metric, math.nan), higher))
    pairs, pair_notes = ([], []) if args.no_paired else pair_runs(records, metric)
    tables = [runs_table(records, metric, higher)]
    if pairs:
        tables.append(pairs_table(pairs))
    notes += pair_notes
    console = Console(width=None if sys.stdout.isatty() else 250)
    for table in tables:
        console.print(rich_table(table))
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    report = out / "compare.html"
    write_html(report, title, tables, notes, plot_curves(records, out))
    console.print(f"report: {report}", highlight=False)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="metalab-compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="run or sweep folders, or glob patterns")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B")
    parser.add_argument("--group", help="with --wandb: only the runs of this group (a sweep)")
    parser.add_argument("--out", type=Path, help="folder for compare.html and the plots")
    parser.add_argument("--no-paired", action="store_true",
                        help="no paired comparison (runs on different test episodes)")
    args = parser.parse_args(argv)
    if bool(args.paths) == bool(args.wandb):
        parser.error("give run folders, or --wandb ENTITY/PROJECT (one of the two)")
    if args.group and not args.wandb:
        parser.error(f"--group={args.group}: only with --wandb")
    if args.wandb and not re.fullmatch(r"[\w.-]+/[\w.-]+", args.wandb):
        parser.error(f"--wandb={args.wandb}: expected ENTITY/PROJECT, e.g. my-team/metalab")
    return args


def load(args: argparse.Namespace) -> tuple[list[RunRecord], list[str], Path, str]:
    """The runs, notes about runs left out, the output folder and the report's title."""
    if args.wandb:
        records = wandb_records(args.wandb, args.group)
        where = args.wandb + (f" (group {args.group})" if args.group else "")
        if not records:
            raise SystemExit(f"metalab-compare: no finished runs in {where}")
        out = args.out or Path(f"compare-{args.wandb.replace('/', '-')}"
                               + (f"-{args.group}" if args.group else ""))
        return unique_names(records), [], out, f"metalab-compare: {where}"
    run_dirs = find_run_dirs(args.paths)
    if not run_dirs:
        raise SystemExit("metalab-compare: no runs (folders with results.json and config.yaml) "
                         f"in {', '.join(args.paths)}")
    # names: the run folders below their sweep or date folder's parent (<sweep>/<job>)
    base = Path(os.path.commonpath([d.parent for d in run_dirs])).parent
    records = [load_run(d, str(d.relative_to(base))) for d in run_dirs]
    notes = [f"failed run {name(job, base)}: {error}" for job, error in failed_jobs(args.paths)]
    single = len(args.paths) == 1 and Path(args.paths[0]).is_dir()
    out = args.out or (Path(args.paths[0]) if single else Path(os.path.commonpath(run_dirs)))
    return unique_names(records), notes, out, f"metalab-compare: {' '.join(args.paths)}"


def name(folder: Path, base: Path) -> str:
    return str(folder.relative_to(base)) if folder.is_relative_to(base) else str(folder)


def unique_names(records: list[RunRecord]) -> list[RunRecord]:
    counts = Counter(r.name for r in records)
    for r in records:
        if counts[r.name] > 1:
            r.name = f"{r.name} [{r.source}]"
    return records


def objective(records: list[RunRecord]) -> tuple[str, bool]:
    """The metric runs are ranked by, and whether higher is better."""
    for metric, higher in (("test/acc", True), ("test/mse", False)):
        if all(metric in r.results for r in records):
            return metric, higher
    raise SystemExit("metalab-compare: the runs share no test metric (test/acc for "
                     "classification, test/mse for regression): compare those apart")


def sort_key(value: float, higher: bool) -> float:
    if math.isnan(value):
        return math.inf
    return -value if higher else value


def differing_keys(records: list[RunRecord], keys: list[str] | None = None) -> list[str]:
    if keys is None:
        keys = sorted({k for r in records for k in r.config if not k.startswith(IGNORED)})
    return [k for k in keys if len({repr(r.config.get(k)) for r in records}) > 1]


def runs_table(records: list[RunRecord], metric: str, higher: bool) -> Table:
    keys = differing_keys(records)
    others = sorted({m for r in records for m in r.results if m.startswith(RESULTS)
                     and not m.endswith(("_ci95", "/episodes")) and m != metric},
                    key=lambda m: (not m.startswith("test/"), m))  # test metrics first
    val = metric.replace("test/", "val/")
    header = ["#", "run", *keys, metric, f"best {val}", *others]
    rows = [[str(i), r.name, *(str(r.config.get(k, "–")) for k in keys), with_ci(r.results, metric),
             best_value(r, val, higher), *(with_ci(r.results, m) for m in others)]
            for i, r in enumerate(records, 1)]
    return Table(f"{len(records)} runs, best {metric} first (test metrics: mean ± 95% CI over "
                 "the test episodes)", header, rows)


def with_ci(results: dict, metric: str) -> str:
    if metric not in results:
        return "–"
    ci = results.get(f"{metric}_ci95")
    return number(results[metric]) + (f" ± {number(ci)}" if ci is not None else "")


def number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"  # perf/peak_rss_mb: 1200.1


def best_value(record: RunRecord, metric: str, higher: bool) -> str:
    values = [v for _, v in record.curves.get(metric, [])]
    return f"{(max if higher else min)(values):.4f}" if values else "–"


def episode_keys(config: dict) -> dict:
    """The config values that define the test episodes: runs that share them were tested on
    the same episodes, in the same order."""
    return {k: v for k, v in config.items()
            if k in ("eval_seed", "test_episodes")
            or (k.startswith("dataset.") and not k.startswith("dataset.train_")
                and not k.endswith(("cache_dir", "download")))}


def pair_runs(records: list[RunRecord], metric: str) -> tuple[list[Pairing], list[str]]:
    """The best run of each set of test episodes against every other run on that set.
    ``records`` are sorted best first."""
    missing = [r.name for r in records if not r.episodes]
    notes = [f"not paired, no per-episode results (test_episodes.csv; W&B keeps none): "
             f"{', '.join(missing)}"] if missing else []
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.episodes:
            groups.setdefault(repr(sorted(episode_keys(r.config).items())), []).append(r)
    column = metric.removeprefix("test/")
    pairs = [paired(best, other, column) for best, *others in groups.values() for other in others]
    if len(groups) > 1:
        paired_runs = [r for group in groups.values() for r in group]
        keys = sorted({k for r in paired_runs for k in episode_keys(r.config)})
        differ = ", ".join(differing_keys(paired_runs, keys))
        if not pairs:
            raise SystemExit(f"metalab-compare: no two runs were tested on the same episodes "
                             f"(they differ in {differ}), so none can be paired; add "
                             "--no-paired to compare them without a paired comparison")
        notes += [f"{g[0].name}: not paired, no other run has its test episodes (runs differ "
                  f"in {differ})" for g in groups.values() if len(g) == 1]
    return pairs, notes


def paired(best: RunRecord, other: RunRecord, column: str) -> Pairing:
    import torch

    from metalab.stats import mean_ci95

    a, b = best.episodes.get(column), other.episodes.get(column)
    if a is None or b is None or len(a) != len(b):
        raise SystemExit(f"metalab-compare: {best.name} and {other.name}: test_episodes.csv "
                         f"should both hold the same number of '{column}' values")
    mean, ci = mean_ci95(torch.tensor(a, dtype=torch.float64) - torch.tensor(b))
    return Pairing(best.name, other.name, column, mean, ci, len(a))


def pairs_table(pairs: list[Pairing]) -> Table:
    metric = pairs[0].metric
    header = ["best run", "other run", f"mean Δ {metric} (best − other)", "95% CI", "episodes",
              "significant"]
    rows = [[p.best, p.other, signed(p.mean),
             f"[{signed(p.mean - p.ci95)}, {signed(p.mean + p.ci95)}]", str(p.episodes),
             "yes" if p.significant else "no (CI includes 0)"] for p in pairs]
    return Table("Paired comparison on the same test episodes", header, rows)


def signed(value: float) -> str:
    return f"{round(value, 4) or 0.0:+.4f}"  # no "-0.0000"


def rich_table(table: Table) -> RichTable:
    rich = RichTable(title=table.title, title_justify="left")
    for name in table.header:
        rich.add_column(name, justify="left" if name.endswith("run") else "right")
    for row in table.rows:
        rich.add_row(*row)
    return rich


if __name__ == "__main__":
    main()

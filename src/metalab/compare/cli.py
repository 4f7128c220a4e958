"""The metalab-compare command: load runs, group, choose, compare, print and write the report."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from metalab.compare import numbers as fmt
from metalab.compare.figures import curve_figures, scatter_figures, study_figures
from metalab.compare.groups import (
    IGNORED,
    SEED,
    Comparison,
    Group,
    compare,
    differing_keys,
)
from metalab.compare.records import (
    RESULTS,
    CompareError,
    RunRecord,
    expand,
    load_run,
    scan,
    wandb_records,
)
from metalab.compare.report import Section, Table, write_html
from metalab.errors import ConfigError

MAX_KEY_COLUMNS = 4  # config columns in the main table; more go to a table of their own


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        run(args)
    except (CompareError, ConfigError) as err:
        print(f"metalab-compare: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from metalab.compare import __doc__ as doc

    parser = argparse.ArgumentParser(
        prog="metalab-compare",
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="*", help="run or sweep folders, or glob patterns")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B")
    parser.add_argument("--group", help="with --wandb: only the runs of this W&B group (a sweep)")
    parser.add_argument(
        "--group-by",
        metavar="KEYS",
        action="append",
        default=[],
        help="group runs by these config keys only (comma-separated)",
    )
    parser.add_argument(
        "--ignore",
        metavar="KEYS",
        action="append",
        default=[],
        help="config keys that, like seed, do not split groups (comma-separated)",
    )
    parser.add_argument("--out", type=Path, help="folder for compare.html")
    parser.add_argument(
        "--no-paired",
        action="store_true",
        help="no paired comparison (runs on different test episodes)",
    )
    args = parser.parse_args(argv)
    if bool(args.paths) == bool(args.wandb):
        parser.error("give run folders, or --wandb ENTITY/PROJECT (one of the two)")
    if args.group and not args.wandb:
        parser.error(f"--group={args.group}: only with --wandb")
    if args.wandb and not re.fullmatch(r"[\w.-]+/[\w.-]+", args.wandb):
        parser.error(f"--wandb={args.wandb}: expected ENTITY/PROJECT, e.g. my-team/metalab")
    args.group_by = [k for keys in args.group_by for k in keys.split(",") if k]
    args.ignore = [k for keys in args.ignore for k in keys.split(",") if k]
    return args


def run(args: argparse.Namespace) -> None:
    records, notes, out, title, folders = load(args)
    result = compare(records, args.group_by or None, args.ignore, paired=not args.no_paired)
    summary = summary_lines(result)
    notes = [n for n in result.notes if not n.startswith("WARNING")] + notes
    tables = tables_of(result)
    wide = sys.stdout.isatty() or "COLUMNS" in os.environ  # else a log file: do not wrap
    console = Console(width=None if wide else 200)
    for line in summary:
        console.print(line, highlight=False)
    for table in tables:
        console.print(rich_table(table))
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    study, study_notes = study_figures(folders)
    for note in study_notes:
        console.print(f"note: {note}", highlight=False)
    report = out / "compare.html"
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_report(report, title, summary, tables, notes + study_notes, result, study)
    except OSError as err:
        raise CompareError(
            f"{report}: cannot write the report ({err.strerror or err}); "
            "choose another folder with --out"
        ) from None
    console.print(f"report: {report}", highlight=False)


def write_report(
    report: Path,
    title: str,
    summary: list[str],
    tables: list[Table],
    notes: list[str],
    result: Comparison,
    study: list,
) -> None:
    write_html(
        report,
        title,
        summary,
        tables,
        notes,
        [
            Section(
                "Learning curves",
                curve_figures(result),
                "One line per group: the mean over its seeds, in a band of the 95% CI across "
                "seeds. Hover for values, drag to zoom (double-click to reset), click a legend "
                "entry to hide a group, double-click to show it alone.",
            ),
            Section(
                "Per-episode results",
                scatter_figures(result),
                "Each dot is one test episode (seed-averaged); above the diagonal the chosen "
                "group scored higher.",
            ),
            Section("Optuna study", study),
        ],
    )


def load(args: argparse.Namespace) -> tuple[list[RunRecord], list[str], Path, str, list[Path]]:
    """The runs, notes about folders left out, the output folder, the report's title and the
    folders given (where an Optuna study may live)."""
    if args.wandb:
        records = wandb_records(args.wandb, args.group)
        where = args.wandb + (f" (group {args.group})" if args.group else "")
        if not records:
            raise CompareError(f"no finished runs in {where}")
        out = args.out or Path(
            f"compare-{args.wandb.replace('/', '-')}" + (f"-{args.group}" if args.group else "")
        )
        for r in records:
            r.name = r.source  # entity/project/run id: unique
        return records, [], out, f"metalab-compare: {where}", []
    folders = expand(args.paths)
    run_dirs, skipped = scan(args.paths)
    if not run_dirs:
        why = (
            f" ({len(skipped)} folders skipped: {skipped[0][0]}: {skipped[0][1]}...)"
            if skipped
            else ""
        )
        raise CompareError(
            f"no runs (folders with results.json and config.yaml) in {', '.join(args.paths)}{why}"
        )
    # names: the run folders below their sweep or date folder's parent (<sweep>/<job>)
    base = Path(os.path.commonpath([d.parent for d in run_dirs])).parent
    records = [load_run(d, str(d.relative_to(base))) for d in run_dirs]
    notes = [f"skipped {name(folder, base)}: {why}" for folder, why in skipped]
    single = len(folders) == 1
    out = args.out or Path(os.path.relpath(folders[0] if single else os.path.commonpath(run_dirs)))
    return records, notes, out, f"metalab-compare: {' '.join(args.paths)}", folders


def name(folder: Path, base: Path) -> str:
    return str(folder.relative_to(base)) if folder.is_relative_to(base) else str(folder)


# -- what is printed and shown -------------------------------------------------------------------
def summary_lines(result: Comparison) -> list[str]:
    goal, chosen = result.objective, result.groups[0]
    if result.chosen_by == goal.val:
        how = (
            f"Chosen on validation: groups ranked by each run's best {goal.val} (what the "
            f"sweep optimised), mean over seeds; {goal.test} is shown alongside and took no "
            "part in the choice."
        )
    else:
        how = f"Chosen on TEST ({goal.test}): no validation metric to choose on."
    lines = [how, *(n for n in result.notes if n.startswith("WARNING"))]
    config = ", ".join(f"{k}={fmt.param(chosen.config.get(k))}" for k in key_columns(result)[0])
    val = (
        f"best {goal.val} {fmt.metric(chosen.val, chosen.val_ci)}, "
        if chosen.val is not None
        else ""
    )
    lines.append(
        f"Chosen: {chosen.label}"
        + (f" ({config})" if config else "")
        + f": {val}{goal.test} {fmt.metric(chosen.test, headline_ci(chosen))} "
        f"({seeds(chosen)})."
    )
    return lines


def seeds(group: Group) -> str:
    return "1 seed" if group.seeds == 1 else f"mean of {group.seeds} seeds"


def headline_ci(group: Group) -> float:
    """The CI a group's test mean is quoted with: across seeds, or over episodes for one."""
    return group.test_ci if group.seeds > 1 else group.episode_ci


def key_columns(result: Comparison) -> tuple[list[str], list[str]]:
    """Config keys that differ between groups: those shown in the main table and all of them.
    When they do not all fit (MAX_KEY_COLUMNS), the main table keeps the names (algorithm.name)
    and keys every group has (a learning rate); the rest go to a table of their own."""
    configs = [RunRecord("", g.config, {}) for g in result.groups]
    keys = [
        k
        for k in differing_keys(configs)  # the protocol has a column of its own
        if k not in (SEED, "protocol") and not k.startswith(IGNORED)
    ]
    named = {k.removesuffix(".name") for k in keys if k.endswith(".name")}
    keys = [
        k for k in keys if not (k.endswith("._target_") and k.removesuffix("._target_") in named)
    ]  # the class is said by the name
    if len(keys) <= MAX_KEY_COLUMNS:
        return keys, keys
    shared = [k for k in keys if all(k in c.config for c in configs)]
    shown = sorted(shared, key=lambda k: not k.endswith(".name"))[:MAX_KEY_COLUMNS]
    return [k for k in keys if k in shown], keys


def tables_of(result: Comparison) -> list[Table]:
    tables = [groups_table(result)]
    shown, keys = key_columns(result)
    if len(keys) > len(shown):
        groups = result.groups  # one row per key: many keys, few groups
        tables.append(
            Table(
                "Config keys that differ between the groups",
                ["key", *(g.label for g in groups)],
                [[k, *(fmt.param(g.config.get(k)) for g in groups)] for k in keys],
                label_columns=(0,),
            )
        )
    if result.pairs:
        tables.append(pairs_table(result))
    tables.append(metrics_table(result))
    return tables


def hover(groups: list[Group]) -> list[str]:
    return ["\n".join(r.source for r in g.runs) for g in groups]


def groups_table(result: Comparison) -> Table:
    goal = result.objective
    shown, _ = key_columns(result)
    header = [
        "#",
        "group",
        *shown,
        "protocol",
        "seeds",
        f"best {goal.val}",
        goal.test,
        "95% CI seeds",
        "95% CI episodes",
    ]
    rows = []
    for g in result.groups:
        ci = headline_ci(g)
        rows.append(
            [
                str(g.rank),
                g.label,
                *(fmt.param(g.config.get(k)) for k in shown),
                g.protocol,
                str(g.seeds),
                fmt.metric(g.val, g.val_ci) if g.val is not None else fmt.DASH,
                fmt.at_precision(g.test, ci),
                f"± {fmt.at_precision(g.test_ci, g.test_ci)}" if g.seeds > 1 else "– (1 seed)",
                f"± {fmt.at_precision(g.episode_ci, g.episode_ci)}"
                if fmt.finite(g.episode_ci)
                else fmt.DASH,
            ]
        )
    split = "validation" if result.chosen_by == goal.val else "TEST (no validation)"
    title = (
        f"{len(result.groups)} groups of {sum(g.seeds for g in result.groups)} runs, ranked "
        f"on {split}: best {result.chosen_by} first (mean over seeds; CIs are 95%)"
    )
    return Table(title, header, rows, hover(result.groups), highlight=0)


def pairs_table(result: Comparison) -> Table:
    pairs = result.pairs
    metric = pairs[0].metric
    header = [
        "chosen",
        "other",
        f"Δ {metric} (chosen − other)",
        "95% CI",
        "p",
        "p (Holm)",
        "episodes",
        "significant",
    ]
    rows = []
    for p in pairs:
        low, high = p.mean - p.ci95, p.mean + p.ci95
        rows.append(
            [
                p.chosen.label,
                p.other.label,
                fmt.signed(p.mean, p.ci95),
                f"[{fmt.signed(low, p.ci95)}, {fmt.signed(high, p.ci95)}]",
                fmt.pvalue(p.p),
                fmt.pvalue(p.p_holm),
                str(p.episodes),
                "yes" if p.significant else "no",
            ]
        )
    family = max(p.family for p in pairs)
    return Table(
        f"Paired t test on the same test episodes (seed-averaged per episode), p "
        f"Holm-corrected over {family} comparison{'s' * (family > 1)}; significant: "
        "p (Holm) < 0.05",
        header,
        rows,
        label_columns=(0, 1),
    )


def metrics_table(result: Comparison) -> Table:
    """The other test metrics and the speed, mean over seeds."""
    goal = result.objective
    names = sorted(
        {
            m
            for g in result.groups
            for r in g.runs
            for m in r.results
            if m.startswith(RESULTS) and not m.endswith(("_ci95", "/episodes")) and m != goal.test
        },
        key=lambda m: (not m.startswith("test/"), m),
    )
    rows = []
    for g in result.groups:
        row = [g.label]
        for m in names:
            values = [r.results[m] for r in g.runs if fmt.finite(r.results.get(m))]
            if not values:
                row.append(fmt.DASH)
                continue
            mean = sum(values) / len(values)
            own = g.runs[0].results.get(f"{m}_ci95") if g.seeds == 1 else None
            row.append(fmt.metric(mean, own) if own else fmt.sig(mean))
        rows.append(row)
    return Table(
        "Other test metrics and speed (mean over seeds)",
        ["group", *names],
        rows,
        hover(result.groups),
        (0,),
    )


def rich_table(table: Table) -> RichTable:
    rich = RichTable(title=table.title, title_justify="left")
    for i, name in enumerate(table.header):
        rich.add_column(name, justify="left" if i in table.label_columns else "right")
    for row in table.rows:
        rich.add_row(*row)
    return rich

"""Seed groups, the choice on validation, and paired comparisons between groups.

Runs whose configs differ only in `seed` (and keys the user ignores) form a group; a group is
summarised by its mean over seeds, the 95% CI across seeds (t, n - 1 degrees of freedom) and the
95% CI over the test episodes of the seed-averaged per-episode results. Groups are ranked by their
best validation metric (what a sweep optimises), never by test; the chosen group is compared with
every other group tested on the same episodes (paired t test on the seed-averaged per-episode
results, Holm-corrected across the comparisons).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from metalab.compare.records import CompareError, RunRecord
from metalab.compare.statistics import holm, mean_ci95, paired_t_test, t_ci95
from metalab.errors import ConfigError
from metalab.tasks import KINDS

# config keys that differ between runs for reasons other than the experiment
IGNORED = ("paths.", "logger.", "hydra.", "ckpt_path", "resume", "run_name")
SEED = "seed"
ALPHA = 0.05


@dataclass
class Objective:
    test: str  # test/acc or test/mse
    higher: bool  # higher is better

    @property
    def val(self) -> str:
        return self.test.replace("test/", "val/")

    @property
    def column(self) -> str:  # the column of test_episodes.csv
        return self.test.removeprefix("test/")


@dataclass
class Group:
    runs: list[RunRecord]
    label: str = ""
    test: float = math.nan  # mean over seeds
    test_ci: float = math.nan  # across seeds (t); NaN for one seed
    episode_ci: float = math.nan  # over the episodes of the seed-averaged results
    val: float | None = None  # mean over seeds of each run's best validation value
    val_ci: float = math.nan
    episodes: list[float] | None = None  # seed-averaged, per test episode
    rank: int = 0

    @property
    def seeds(self) -> int:
        return len(self.runs)

    @property
    def protocol(self) -> str:
        return self.runs[0].protocol

    @property
    def config(self) -> dict:
        return self.runs[0].config


@dataclass
class Pairing:
    chosen: Group
    other: Group
    metric: str  # column of test_episodes.csv
    mean: float  # mean over the episodes of chosen - other
    ci95: float  # half-width (t)
    t: float
    p: float
    episodes: int
    p_holm: float = math.nan
    family: int = 1  # comparisons Holm corrects across

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA


@dataclass
class Comparison:
    objective: Objective
    groups: list[Group]  # ranked, chosen first
    chosen_by: str  # the metric that ranked them: val/acc, or test/acc when there is no val
    pairs: list[Pairing] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


#: each task kind's headline test metric and whether higher is better
OBJECTIVES = tuple((f"test/{kind.metric}", kind.higher_is_better) for kind in KINDS.values())


def objective(records: list[RunRecord]) -> Objective:
    """The metric runs are compared on, and whether higher is better."""
    for metric, higher in OBJECTIVES:
        if all(metric in r.results for r in records):
            return Objective(metric, higher)
    for r in records:
        if not {metric for metric, _ in OBJECTIVES} & set(r.results):
            where = f"{r.source}/results.json" if Path(r.source).is_dir() else f"W&B run {r.source}"
            raise CompareError(f"{where}: no test/acc, test/mse or test/return")
    raise CompareError(
        "the runs share no test metric (test/acc for classification, test/mse "
        "for regression, test/return for reinforcement learning): compare those "
        "apart"
    )


def episode_keys(record: RunRecord) -> dict:
    """What defines the test episodes and how they are evaluated: runs that share these were
    tested on the same episodes, in the same order, the same way, and only they pair."""
    keys = {
        k: v
        for k, v in record.config.items()
        if k in ("eval_seed", "test_episodes")
        or (
            k.startswith("dataset.")
            and not k.startswith("dataset.train_")
            and not k.endswith(("cache_dir", "download"))
        )
    }
    protocol = record.protocol
    stats = record.config.get("inductive_stats") or "support"
    if protocol == "inductive" and stats != "support":  # its mechanisms give different numbers
        protocol = f"inductive ({stats})"
    return {"protocol": protocol, **keys}


def check_keys(records: list[RunRecord], option: str, keys: list[str]) -> None:
    for key in keys:
        if not any(k == key or k.startswith(f"{key}.") for r in records for k in r.config):
            raise ConfigError(
                option,
                key,
                "no run has this config key; keys that differ "
                f"between the runs: {', '.join(differing_keys(records)) or 'none'}",
            )


def differing_keys(records: list[RunRecord], keys: list[str] | None = None) -> list[str]:
    if keys is None:
        keys = sorted({k for r in records for k in r.config if not k.startswith(IGNORED)})
    return [k for k in keys if len({repr(r.config.get(k)) for r in records}) > 1]


def group_runs(
    records: list[RunRecord], group_by: list[str] | None = None, ignore: list[str] = ()
) -> list[Group]:
    """Runs that differ only in `seed` and the ignored keys (or agree on every `group_by` key)
    and share their test episodes and protocol, in order of first appearance."""
    check_keys(records, "--group-by", group_by or [])
    check_keys(records, "--ignore", list(ignore))
    skip = (*IGNORED, *ignore, *(f"{k}." for k in ignore))

    def identity(r: RunRecord) -> str:
        if group_by:
            keys = {
                k: v
                for k, v in r.config.items()
                if k in group_by or k.startswith(tuple(f"{g}." for g in group_by))
            }
        else:
            keys = {k: v for k, v in r.config.items() if k != SEED and not k.startswith(skip)}
        return repr(sorted({**keys, **episode_keys(r)}.items()))

    groups: dict[str, Group] = {}
    for r in records:
        groups.setdefault(identity(r), Group([])).runs.append(r)
    return list(groups.values())


def summarise(group: Group, goal: Objective) -> None:
    group.test, group.test_ci = t_ci95([r.results[goal.test] for r in group.runs])
    best = [r.best_val(goal.val, goal.higher) for r in group.runs]
    if all(v is not None for v in best):
        group.val, group.val_ci = t_ci95(best)
    per_run = [r.episodes.get(goal.column) if r.episodes else None for r in group.runs]
    if all(e is not None for e in per_run) and len({len(e) for e in per_run}) == 1:
        group.episodes = [math.fsum(values) / len(values) for values in zip(*per_run)]
        group.episode_ci = mean_ci95(group.episodes)[1]
    elif group.seeds == 1:  # W&B keeps only the run's own CI
        group.episode_ci = group.runs[0].results.get(f"{goal.test}_ci95", math.nan)


def compare(
    records: list[RunRecord],
    group_by: list[str] | None = None,
    ignore: list[str] = (),
    paired: bool = True,
) -> Comparison:
    goal = objective(records)
    label_runs(records)
    groups = group_runs(records, group_by, ignore)
    for g in groups:
        g.label = label_group(g)
        summarise(g, goal)
    notes = []
    no_val = [g for g in groups if g.val is None]
    chosen_by = goal.val if not no_val else goal.test
    if no_val:
        notes.append(
            f"WARNING: no {goal.val} in {len(no_val)} of {len(groups)} groups "
            f"({labels(no_val)}): ranked and chosen on {goal.test} instead, which "
            "favours the luckiest on the test episodes (selection bias); train with "
            "val_episodes > 0 to choose on validation"
        )

    def score(g: Group) -> float:
        value = g.val if chosen_by == goal.val else g.test
        if value is None or math.isnan(value):
            return math.inf
        return -value if goal.higher else value

    groups.sort(key=score)
    for rank, g in enumerate(groups, 1):
        g.rank = rank
    one_seed = [g for g in groups if g.seeds == 1]
    if one_seed:
        which = "every group" if len(one_seed) == len(groups) else labels(one_seed)
        notes.append(
            f"one seed only, so no CI across seeds: {which} (train several seeds, "
            "e.g. seed=0,1,2, to see the spread between training runs)"
        )
    result = Comparison(goal, groups, chosen_by, notes=notes)
    if paired:
        result.pairs, pair_notes = pair_groups(groups, goal)
        result.notes += pair_notes
    return result


def label_runs(records: list[RunRecord]) -> None:
    """Short run labels: the shortest ending of the run names (paths below the folder compared)
    that tells the runs apart, e.g. a sweep's job numbers."""
    parts = [r.name.split("/") for r in records]
    for depth in range(1, max(map(len, parts)) + 1):
        ends = ["/".join(p[-depth:]) for p in parts]
        if len(set(ends)) == len(ends):
            break
    for r, end in zip(records, ends):
        r.label = end


def label_group(group: Group) -> str:
    names = [r.label for r in group.runs]
    if len(names) == 1:
        return names[0]
    joined = ",".join(names)
    return joined if len(joined) <= 16 else f"{names[0]} +{len(names) - 1}"


def labels(groups: list[Group]) -> str:
    return ", ".join(g.label for g in groups)


def differences(group: Group, other: Group) -> str:
    """How two groups' test episodes or protocol differ, for one line."""
    a, b = episode_keys(group.runs[0]), episode_keys(other.runs[0])
    keys = [
        k
        for k in sorted({*a, *b}, key=lambda k: (k != "protocol", k))
        if repr(a.get(k)) != repr(b.get(k))
    ]
    return ", ".join(f"{k} ({a.get(k, '–')} vs {b.get(k, '–')})" for k in keys)


def pair_groups(groups: list[Group], goal: Objective) -> tuple[list[Pairing], list[str]]:
    """The best group (by the ranking) of each set of comparable groups against every other
    one, Holm-corrected within each set. ``groups`` are ranked."""
    missing = [g for g in groups if g.episodes is None]
    notes = (
        [
            f"not paired, no per-episode results (test_episodes.csv; W&B keeps none): "
            f"{labels(missing)}"
        ]
        if missing
        else []
    )
    classes: dict[str, list[Group]] = {}
    for g in groups:
        if g.episodes is not None:
            classes.setdefault(repr(sorted(episode_keys(g.runs[0]).items())), []).append(g)
    pairs = []
    for best, *others in classes.values():
        family = []
        for other in others:
            if len(other.episodes) != len(best.episodes):
                raise CompareError(
                    f"{best.label} and {other.label}: test_episodes.csv should "
                    f"hold the same number of '{goal.column}' values"
                )
            diffs = [a - b for a, b in zip(best.episodes, other.episodes)]
            family.append(Pairing(best, other, goal.column, *paired_t_test(diffs), len(diffs)))
        for pairing, adjusted in zip(family, holm([p.p for p in family])):
            pairing.p_holm, pairing.family = adjusted, len(family)
        pairs += family
    if len(classes) > 1:
        tested = [g for g in groups if g.episodes is not None]
        first = tested[0]
        if not pairs:
            raise CompareError(
                f"no two groups were tested on the same episodes the same way ({first.label} and "
                f"{tested[1].label} differ in {differences(first, tested[1])}), so none can be "
                "paired; add --no-paired to compare them without a paired test"
            )
        for members in classes.values():
            if first in members:
                continue
            notes += [
                f"{g.label}: not paired with {first.label}, not comparable: differs in "
                f"{differences(g, first)}"
                for g in members
            ]
            if len(members) > 1:
                notes.append(
                    f"{labels(members[1:])}: paired with {members[0].label} instead, "
                    "the best of the groups tested the same way"
                )
    return pairs, notes

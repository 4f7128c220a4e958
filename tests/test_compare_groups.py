"""metalab-compare on synthetic run folders with known answers: seed groups and their statistics
(checked against scipy.stats), the choice on validation, what may be paired, damaged files,
skipped folders and bad arguments."""

import json
import math
import re

import numpy as np
import optuna
import pytest
import scipy.stats
import yaml

from helpers import run_cli
from helpers.report import Tables
from metalab.compare import cli
from metalab.compare.groups import compare
from metalab.compare.records import from_wandb_run, load_run

EPISODES = 30


def write_run(
    folder,
    algorithm="protonet",
    seed=0,
    lr=0.001,
    accs=None,
    val=None,
    val_in_results=False,
    protocol=None,
    shots=1,
    task="classification",
):
    """A finished run folder as metalab-train leaves it: config.yaml, results.json,
    test_episodes.csv and a metrics.csv with a validation curve ``val`` (one value per check)."""
    metric = {"classification": "acc", "regression": "mse", "rl": "return"}[task]
    folder.mkdir(parents=True)
    config = {
        "dataset": {"name": "glyphs", "task": task, "ways": 5, "shots": shots, "queries": 15},
        "algorithm": {"name": algorithm, "optimizer": {"lr": lr}},
        "seed": seed,
        "eval_seed": 2024,
        "test_episodes": EPISODES,
        "paths": {"output_dir": str(folder)},
    }
    if protocol:
        config["protocol"] = protocol
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    accs = [float(a) for a in accs]
    results = {
        f"test/{metric}": float(np.mean(accs)),
        f"test/{metric}_ci95": 0.01,
        "test/episodes": float(len(accs)),
        "perf/tasks_per_sec": 12.5,
    }
    if val and val_in_results:
        results[f"val/{metric}_best"] = (min if metric == "mse" else max)(val)
    if protocol:
        results["protocol"] = protocol
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "test_episodes.csv").write_text(
        f"episode,{metric}\n" + "".join(f"{i},{a!r}\n" for i, a in enumerate(accs))
    )
    rows = [f"0,{step},0.5," for step in range(4)]
    rows += [f"0,{2 * i + 1},,{v!r}" for i, v in enumerate(val or [])]
    (folder / "metrics.csv").write_text(
        f"epoch,step,train/loss,val/{metric}\n" + "\n".join(rows) + "\n"
    )
    return folder


def episodes(rng, mean):
    return np.clip(rng.normal(mean, 0.08, EPISODES), 0, 1).tolist()


@pytest.fixture
def seeds_sweep(tmp_path):
    """3 algorithms x 3 seeds (9 job folders, as a grid sweep numbers them); maml is best on
    validation, protonet best on test."""
    rng = np.random.default_rng(1)
    sweep, job = tmp_path / "sweep", 0
    for algorithm, test, val in (
        ("maml", 0.70, 0.90),
        ("protonet", 0.80, 0.70),
        ("reptile", 0.60, 0.50),
    ):
        for seed in range(3):
            write_run(
                sweep / str(job),
                algorithm,
                seed,
                accs=episodes(rng, test),
                val=[val - 0.1, val + 0.01 * seed],
                val_in_results=algorithm == "maml",
            )
            job += 1
    return sweep


def by_algorithm(result):
    return {g.config["algorithm.name"]: g for g in result.groups}


def test_a_diverged_run_is_listed_last(tmp_path, capsys):
    rng = np.random.default_rng(8)
    for job in range(2):
        write_run(tmp_path / str(job), f"algo{job}", accs=episodes(rng, 0.7), val=[0.5, 0.6])
    results = json.loads((tmp_path / "0" / "results.json").read_text())
    (tmp_path / "0" / "results.json").write_text(json.dumps({**results, "test/acc": None}))
    (tmp_path / "0" / "metrics.csv").write_text("epoch,step,val/acc\n0,1,NaN\n")
    cli.main([str(tmp_path), "--no-paired"])
    header, *rows = Tables((tmp_path / "compare.html").read_text()).tables[0]
    assert [row[1] for row in rows] == ["1", "0"]
    assert rows[1][header.index("test/acc")] == rows[1][header.index("best val/acc")] == "–"


def test_seed_groups_and_their_statistics_match_scipy(seeds_sweep, capsys):
    records = [load_run(d, d.name) for d in sorted(seeds_sweep.iterdir())]
    result = compare(records)
    assert [g.seeds for g in result.groups] == [3, 3, 3]
    groups = by_algorithm(result)
    for algorithm, group in groups.items():
        tests = np.array([r.results["test/acc"] for r in group.runs])
        low, high = scipy.stats.t.interval(0.95, 2, loc=tests.mean(), scale=scipy.stats.sem(tests))
        assert group.test == pytest.approx(tests.mean())
        assert (group.test - group.test_ci, group.test + group.test_ci) == pytest.approx(
            (low, high)
        )
        per_episode = np.mean([r.episodes["acc"] for r in group.runs], axis=0)
        assert group.episode_ci == pytest.approx(
            1.96 * per_episode.std(ddof=1) / math.sqrt(EPISODES)
        )
        assert algorithm in {r.config["algorithm.name"] for r in group.runs}
    # paired t tests of the chosen group (maml) against the others, on seed-averaged episodes
    chosen = np.mean([r.episodes["acc"] for r in groups["maml"].runs], axis=0)
    pvalues = {}
    for pair in result.pairs:
        assert pair.chosen is groups["maml"]
        other = np.mean([r.episodes["acc"] for r in pair.other.runs], axis=0)
        want = scipy.stats.ttest_rel(chosen, other)
        assert (pair.t, pair.p) == pytest.approx((want.statistic, want.pvalue))
        assert pair.ci95 == pytest.approx(
            scipy.stats.t.ppf(0.975, EPISODES - 1) * scipy.stats.sem(chosen - other)
        )
        pvalues[pair.other.config["algorithm.name"]] = pair
    # Holm over the two comparisons: the smaller p times 2, the larger at least that
    small, large = sorted(pvalues.values(), key=lambda p: p.p)
    assert small.p_holm == pytest.approx(min(1, 2 * small.p))
    assert large.p_holm == pytest.approx(max(small.p_holm, large.p))


def test_the_chosen_group_is_the_validation_best_not_the_test_best(seeds_sweep, capsys):
    cli.main([str(seeds_sweep)])
    out = capsys.readouterr().out
    page = Tables((seeds_sweep / "compare.html").read_text())
    header, *rows = page.tables[0]
    assert len(rows) == 3  # 9 runs, 3 groups
    name = header.index("algorithm.name")
    # ranked by validation: maml (0.9) > protonet (0.7) > reptile (0.5), whatever the test
    assert [row[name] for row in rows] == ["maml", "protonet", "reptile"]
    test = [float(row[header.index("test/acc")]) for row in rows]
    assert test[1] > test[0]  # protonet is the better on test, and is not chosen
    assert "Chosen on validation" in out and "Chosen: 0,1,2 (algorithm.name=maml)" in out
    assert rows[0][header.index("seeds")] == "3"
    pairs_header, *pairs = page.tables[1]
    assert {p[0] for p in pairs} == {"0,1,2"} and len(pairs) == 2
    # maml's runs recorded val/acc_best in results.json, the others only have the curve
    assert rows[0][header.index("best val/acc")].startswith("0.9")
    assert rows[1][header.index("best val/acc")].startswith("0.7")


def test_regression_is_chosen_on_the_lowest_validation_mse(tmp_path, capsys):
    rng = np.random.default_rng(2)
    for job, (test, val) in enumerate(((0.2, 0.5), (0.3, 0.1))):
        write_run(
            tmp_path / str(job),
            f"algo{job}",
            accs=rng.uniform(test, test + 0.1, 30),
            val=[val + 0.2, val],
            task="regression",
        )
    cli.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "Chosen: 1 (algorithm.name=algo1)" in out and "best val/mse" in out


def test_reinforcement_learning_runs_are_chosen_on_the_highest_validation_return(tmp_path, capsys):
    rng = np.random.default_rng(4)
    for job, (test, val) in enumerate(((-20.0, -30.0), (-25.0, -10.0))):
        write_run(
            tmp_path / str(job),
            f"algo{job}",
            accs=rng.normal(test, 2.0, 30),
            val=[val - 5, val],
            task="rl",
        )
    cli.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "Chosen: 1 (algorithm.name=algo1)" in out and "best val/return" in out
    pairs = Tables((tmp_path / "compare.html").read_text()).tables[1][1:]
    assert [(p[0], p[1]) for p in pairs] == [("1", "0")]


def test_without_validation_the_choice_falls_back_to_test_with_a_warning(tmp_path, capsys):
    rng = np.random.default_rng(3)
    for job, mean in enumerate((0.6, 0.8)):
        write_run(tmp_path / str(job), f"algo{job}", accs=episodes(rng, mean))
    cli.main([str(tmp_path)])
    out = capsys.readouterr().out
    assert re.search(r"WARNING: no val/acc in 2 of 2 groups .*ranked and chosen on test/acc", out)
    assert "Chosen: 1 (algorithm.name=algo1)" in out
    page = (tmp_path / "compare.html").read_text()
    assert '<p class="warning">WARNING: no val/acc' in page


def test_parameters_and_metrics_are_formatted_for_people(tmp_path, capsys):
    rng = np.random.default_rng(4)
    for job, lr in enumerate((0.0012479065886745896, 0.00031)):
        write_run(tmp_path / str(job), lr=lr, accs=episodes(rng, 0.7), val=[0.5, 0.6 + job / 10])
    cli.main([str(tmp_path)])
    header, *rows = Tables((tmp_path / "compare.html").read_text()).tables[0]
    lr = header.index("algorithm.optimizer.lr")
    assert sorted(row[lr] for row in rows) == ["0.00031", "0.00125"]
    for row in rows:  # one seed: quoted to the precision of the CI over the episodes
        ci = row[header.index("95% CI episodes")]
        assert re.fullmatch(r"± 0\.0\d{1,2}", ci)
        decimals = len(ci.split(".")[1])
        assert len(row[header.index("test/acc")].split(".")[1]) == decimals
        assert row[header.index("95% CI seeds")] == "– (1 seed)"


def test_groups_from_wandb_runs(seeds_sweep, tmp_path, monkeypatch, capsys):
    import wandb

    class ApiRun:  # as wandb.Api().runs() yields it: config, summary, history
        def __init__(self, folder):
            run = load_run(folder, folder.name)
            self.config = yaml.safe_load((folder / "config.yaml").read_text())
            self.summary, self.name = dict(run.results), "run"
            self.path = ["me", "metalab", f"id{folder.name}"]
            self._history = [
                {"trainer/global_step": s, "val/acc": v} for s, v in run.curves["val/acc"]
            ]

        def history(self, samples=500, pandas=True):
            return self._history

    class Api:
        def runs(self, path, filters=None):
            return [ApiRun(d) for d in sorted(seeds_sweep.iterdir())]

    monkeypatch.setattr(wandb, "Api", Api)
    assert from_wandb_run(ApiRun(seeds_sweep / "0")).curves["val/acc"]
    cli.main(["--wandb", "me/metalab", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    header, *rows = Tables((tmp_path / "compare.html").read_text()).tables[0]
    assert len(rows) == 3 and {row[header.index("seeds")] for row in rows} == {"3"}
    assert rows[0][header.index("algorithm.name")] == "maml"
    assert "no per-episode results" in out


def test_runs_that_are_not_comparable_are_listed_but_not_paired(tmp_path, capsys):
    rng = np.random.default_rng(5)
    for job, (algorithm, protocol) in enumerate(
        (("a", None), ("b", "transductive"), ("c", "inductive"))
    ):
        write_run(
            tmp_path / str(job),
            algorithm,
            accs=episodes(rng, 0.7),
            protocol=protocol,
            val=[0.9 - job / 10],
        )
    cli.main([str(tmp_path)])
    out = capsys.readouterr().out
    header, *rows = Tables((tmp_path / "compare.html").read_text()).tables[0]
    assert len(rows) == 3  # all listed
    # runs from before the protocol key count as transductive
    assert [row[header.index("protocol")] for row in rows] == [
        "transductive",
        "transductive",
        "inductive",
    ]
    pairs = Tables((tmp_path / "compare.html").read_text()).tables[1][1:]
    assert [(p[0], p[1]) for p in pairs] == [("0", "1")]
    assert (
        "2: not paired with 0, not comparable: differs in protocol (inductive vs transductive)"
    ) in out


def test_inductive_runs_of_different_batch_norm_statistics_are_not_paired(tmp_path, capsys):
    rng = np.random.default_rng(7)
    for job, stats in enumerate(("support", "support", "support_plus_query")):
        write_run(
            tmp_path / str(job),
            f"a{job}",
            accs=episodes(rng, 0.7),
            protocol="inductive",
            val=[0.9 - job / 10],
        )
        config = yaml.safe_load((tmp_path / str(job) / "config.yaml").read_text())
        config["inductive_stats"] = stats
        (tmp_path / str(job) / "config.yaml").write_text(yaml.safe_dump(config))
        results = json.loads((tmp_path / str(job) / "results.json").read_text())
        results["inductive_stats"] = stats  # as metalab-train writes it: a name, not a number
        (tmp_path / str(job) / "results.json").write_text(json.dumps(results))
    cli.main([str(tmp_path)])
    out = capsys.readouterr().out
    pairs = Tables((tmp_path / "compare.html").read_text()).tables[1][1:]
    assert [(p[0], p[1]) for p in pairs] == [("0", "1")]
    assert "differs in protocol (inductive (support_plus_query) vs inductive)" in out


def test_groups_that_cannot_be_paired_at_all_are_one_line(tmp_path, capsys):
    rng = np.random.default_rng(6)
    write_run(tmp_path / "0", "a", accs=episodes(rng, 0.7), protocol="inductive", val=[0.5])
    write_run(tmp_path / "1", "b", accs=episodes(rng, 0.7), shots=5, val=[0.6])
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert (
        "no two groups were tested on the same episodes the same way (1 and 0 differ in "
        "protocol (transductive vs inductive), dataset.shots (5 vs 1))"
    ) in err
    assert "--no-paired" in err
    cli.main([str(tmp_path), "--no-paired"])
    assert len(Tables((tmp_path / "compare.html").read_text()).tables[0]) == 3


def test_group_by_and_ignore(seeds_sweep, capsys):
    (seeds_sweep / "0" / "config.yaml").write_text(
        (seeds_sweep / "0" / "config.yaml").read_text().replace("lr: 0.001", "lr: 0.002")
    )
    records = [load_run(d, d.name) for d in sorted(seeds_sweep.iterdir())]
    assert len(compare(records).groups) == 4  # job 0 has another learning rate
    assert len(compare(records, ignore=["algorithm.optimizer"]).groups) == 3
    assert len(compare(records, group_by=["algorithm.name"]).groups) == 3
    assert len(compare(records, group_by=["algorithm.optimizer.lr"]).groups) == 2


@pytest.mark.parametrize("option", ["--group-by", "--ignore"])
def test_a_key_no_run_has_is_one_line(seeds_sweep, option, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(seeds_sweep), option, "algorithm.name,algorithm.nope"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"{option}=algorithm.nope: no run has this config key" in err


def test_no_runs_is_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for args, message in (
        ([str(tmp_path / "empty")], "no runs (folders with results.json"),
        ([str(tmp_path / "missing")], "missing: no such folder"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(args)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("results.json", '{"test/acc": 0.8', "results.json: not valid JSON"),
        ("results.json", '{"test/acc": "high"}', "results.json: test/acc='high' is not a number"),
        (
            "test_episodes.csv",
            "episode,acc\n0,0.5\n1,abc\n",
            "test_episodes.csv: line 3, column acc: 'abc' is not a number",
        ),
        ("config.yaml", "dataset: {name: [glyphs\n", "config.yaml: not valid YAML at line 2"),
        ("config.yaml", "- a list\n", "config.yaml: expected a mapping of config keys"),
        (
            "results.json",
            '{"perf/tasks_per_sec": 3}',
            "results.json: no test/acc, test/mse or test/return",
        ),
    ],
)
def test_a_damaged_file_is_one_line_naming_it(tmp_path, capsys, file, text, message):
    rng = np.random.default_rng(7)
    for job in range(2):
        write_run(tmp_path / str(job), accs=episodes(rng, 0.7), val=[0.5], seed=job)
    (tmp_path / "1" / file).write_text(text)
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"metalab-compare: error: {tmp_path / '1' / message}" in err


def test_a_damaged_file_ends_without_a_traceback(tmp_path):
    write_run(tmp_path / "0", accs=[0.5, 0.7], val=[0.5])
    (tmp_path / "0" / "results.json").write_text("{")
    proc = run_cli("compare", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f"metalab-compare: error: {tmp_path / '0' / 'results.json'}: "
        "not valid JSON (Expecting property name enclosed in double "
        "quotes: line 1 column 2 (char 1))"
    )


def test_a_report_that_cannot_be_written_is_one_line(seeds_sweep, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(seeds_sweep), "--out", str(tmp_path / "file" / "report")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path / 'file' / 'report' / 'compare.html'}: cannot write the report" in err


def test_skipped_folders_are_noted(seeds_sweep, capsys):
    killed = seeds_sweep / "9"
    (killed / ".hydra").mkdir(parents=True)
    (killed / "config.yaml").write_text("seed: 0\n")
    failed = seeds_sweep / "10"
    failed.mkdir()
    (failed / "error.txt").write_text(
        "Traceback...\nConfigError: dataset.shots=0: must be a positive integer\n"
    )
    pruned = seeds_sweep / "11"
    (pruned / ".hydra").mkdir(parents=True)
    (pruned / "pruned.txt").write_text("pruned at step 3 (val/acc=0.2)\n")
    cli.main([str(seeds_sweep)])
    out = capsys.readouterr().out
    assert "note: skipped sweep/9: no results.json (unfinished, killed or still running)" in out
    assert (
        "note: skipped sweep/10: failed: ConfigError: dataset.shots=0: must be a positive integer"
    ) in out
    assert "note: skipped sweep/11: pruned: pruned at step 3 (val/acc=0.2)" in out
    page = (seeds_sweep / "compare.html").read_text()
    assert "skipped sweep/9" in page and "skipped sweep/10" in page


def test_optuna_studies_are_plotted_from_sqlite_and_journal_files(seeds_sweep, capsys):
    def objective(trial):
        return trial.suggest_float("algorithm.optimizer.lr", 1e-4, 1e-2, log=True) * 10

    storages = [
        f"sqlite:///{seeds_sweep}/optuna.db",
        optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(seeds_sweep / "optuna.journal"))
        ),
    ]
    for storage in storages:
        study = optuna.create_study(study_name="protonet", storage=storage, direction="maximize")
        study.optimize(objective, n_trials=3)
    cli.main([str(seeds_sweep)])
    page = (seeds_sweep / "compare.html").read_text()
    section = page[page.index("<h2>Optuna study</h2>") :]
    # per study: Optuna's optimisation history and its slice plot (objective per parameter)
    assert section.count("Plotly.newPlot(") == 4
    assert section.count("study protonet: Optimization History Plot") == 2
    assert section.count("study protonet: Slice Plot") == 2


def test_an_unreadable_optuna_file_is_a_note(seeds_sweep, capsys):
    (seeds_sweep / "optuna.db").write_bytes(b"not a database")
    cli.main([str(seeds_sweep)])
    out = capsys.readouterr().out
    assert f"note: {seeds_sweep / 'optuna.db'}: no Optuna study read" in out
    assert "<h2>Optuna study</h2>" not in (seeds_sweep / "compare.html").read_text()


def test_group_labels_are_short_and_hover_shows_the_folders(seeds_sweep):
    cli.main([str(seeds_sweep)])
    page = (seeds_sweep / "compare.html").read_text()
    assert f'<td class="label" title="{seeds_sweep / "0"}\n{seeds_sweep / "1"}\n' in page


def test_hostile_strings_are_escaped_in_the_report(tmp_path, capsys):
    rng = np.random.default_rng(9)
    hostile = "</script><img src=x onerror=alert(1)>"
    for job, algorithm in enumerate((hostile, "b")):
        write_run(tmp_path / str(job), algorithm, accs=episodes(rng, 0.7), val=[0.5, 0.6 + job])
    cli.main([str(tmp_path)])
    page = (tmp_path / "compare.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page

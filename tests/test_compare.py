"""metalab-compare on real sweeps: a 3-seed x 2-algorithm sweep on glyphs (two groups), the 2x2
grid of test_sweeps (W&B records of real runs), and the HTML report opened in headless Chromium."""

import json
import math
import re
import shutil
import subprocess

import pytest
import wandb
import yaml

from helpers import TINY, run_cli
from helpers.report import Tables, wandb_records
from metalab.compare import cli
from metalab.compare.figures import CURVES
from metalab.compare.records import from_wandb_run, load_run, scan

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (CI installs Debian's chromium package)"
)


@pytest.fixture(scope="module")
def grid(grid_sweep):
    return grid_sweep


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    """ProtoNet and MAML, 3 seeds each, on glyphs: 6 jobs of a tiny budget."""
    sweep = tmp_path_factory.mktemp("seeds") / "algos"
    proc = run_cli(
        "run.train",
        "-m",
        f"hydra.sweep.dir={sweep}",
        "algorithm=protonet,maml",
        "seed=0,1,2",
        *TINY,
        "logger=csv",
        "algorithm.meta_batch=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_a_seed_sweep_groups_into_one_row_per_algorithm(seed_sweep, capsys):
    cli.main([str(seed_sweep)])
    out = capsys.readouterr().out
    page = Tables((seed_sweep / "compare.html").read_text())
    header, *rows = page.tables[0]
    assert len(rows) == 2
    assert [row[header.index("seeds")] for row in rows] == ["3", "3"]
    assert {row[header.index("protocol")] for row in rows} == {"transductive"}
    jobs = {}  # algorithm -> the three job folders, read from the files themselves
    for job in sorted(p for p in seed_sweep.iterdir() if p.is_dir()):
        config = yaml.safe_load((job / "config.yaml").read_text())
        jobs.setdefault(config["algorithm"]["name"], []).append(job)
    assert sorted(len(v) for v in jobs.values()) == [3, 3]

    def mean(algorithm, key):
        return sum(results(j)[key] for j in jobs[algorithm]) / 3

    # chosen on the mean best validation accuracy, which results.json records per run
    chosen = max(jobs, key=lambda a: mean(a, "val/acc_best"))
    assert rows[0][header.index("algorithm.name")] == chosen
    assert f"Chosen: {','.join(j.name for j in jobs[chosen])}" in out
    for row in rows:
        test = mean(row[header.index("algorithm.name")], "test/acc")
        shown = row[header.index("test/acc")]
        assert float(shown) == pytest.approx(test, abs=0.6 * 10 ** -len(shown.split(".")[1]))
    pairs = page.tables[2][1:]  # after the table of the config keys that differ
    assert len(pairs) == 1 and pairs[0][6] == "10"


def chromium(page, *extra):
    """The page's DOM after its scripts ran, and the console lines, from headless Chromium."""
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--enable-logging=stderr",
            "--v=0",
            *extra,
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def plot_traces(dom):
    """The number of traces Plotly drew in each figure of the page."""
    figures = re.split(r'<div id="[^"]*" class="plotly-graph-div js-plotly-plot"', dom)[1:]
    return [len(re.findall(r'<g class="trace scatter', f)) for f in figures]


@needs_chromium
def test_the_report_works_in_a_browser(seed_sweep, tmp_path):
    cli.main([str(seed_sweep), "--out", str(tmp_path)])
    page = tmp_path / "compare.html"
    test_acc = Tables(page.read_text()).tables[0][0].index("test/acc")
    clicked = tmp_path / "clicked.html"  # the same page, with a click on the test/acc header
    clicked.write_text(
        page.read_text().replace(
            "</body>",
            "<script>document.querySelectorAll('table.sortable')[0]"
            f".querySelectorAll('th')[{test_acc}].click()</script></body>",
        )
    )
    dom, console = chromium(clicked)
    assert console == []  # no JavaScript error, nor any other message
    header, *rows = Tables(dom).tables[0]
    assert len(rows) == 2
    accs = [float(row[test_acc]) for row in rows]
    assert accs == sorted(accs)  # sorted ascending by the click
    # learning curves: per curve, 2 groups of 3 seeds, each a mean line and a band (2 traces);
    # then the per-episode scatter: one group against the chosen one, and the diagonal
    logged = (seed_sweep / "0" / "metrics.csv").read_text().splitlines()[0].split(",")
    curves = [c for c in CURVES if c in logged]
    assert len(curves) >= 4
    assert plot_traces(dom) == [6] * len(curves) + [2]


@needs_chromium
def test_a_javascript_error_would_be_seen(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>undefinedFunction()</script></body></html>")
    assert "undefinedFunction is not defined" in "".join(chromium(page)[1])


def test_compare_the_grid_pairs_only_what_shares_its_episodes(grid, capsys):
    cli.main([str(grid)])
    out = capsys.readouterr().out
    page = Tables((grid / "compare.html").read_text())
    header, *rows = page.tables[0]
    assert len(rows) == 4 and [row[header.index("seeds")] for row in rows] == ["1"] * 4
    assert {"algorithm.optimizer.lr", "dataset.shots"} <= set(header)
    assert not any(h.startswith(("paths.", "logger.")) for h in header)
    # ranked by the best validation accuracy each run recorded
    best_val = [results(grid / row[1])["val/acc_best"] for row in rows]
    assert best_val == sorted(best_val, reverse=True)
    # each run is paired with the best run of its own shots: 2 pairs, and a note for the rest
    pairs = page.tables[1][1:]
    assert len(pairs) == 2
    shots = header.index("dataset.shots")
    shots_of = {row[1]: row[shots] for row in rows}
    assert all(shots_of[a] == shots_of[b] for a, b, *_ in pairs)
    assert f"not paired with {rows[0][1]}, not comparable: differs in dataset.shots" in out
    assert "one seed only, so no CI across seeds: every group" in out


class ApiRun:
    """A run as wandb.Api().runs() yields it, built from a job's offline W&B records."""

    def __init__(self, run_dir):
        records = wandb_records(run_dir)
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        self.config, self.id = run["config"]["update"], run["run_id"]
        self.name, self.path = self.config["run_name"], ["me", run["project"], self.id]
        self.summary = {}
        for r in records:
            if r["type"] == "summary":
                self.summary.update(r["summary"].get("update", {}))
        self._history = [r["history"]["item"] for r in records if r["type"] == "history"]

    def history(self, samples=500, pandas=True):
        assert not pandas
        return self._history[:samples]


def test_wandb_runs_give_the_records_of_their_folders(grid):
    run_dirs, skipped = scan([str(grid)])
    assert len(run_dirs) == 4 and skipped == []
    for run_dir in run_dirs:
        folder, online = load_run(run_dir, "x"), from_wandb_run(ApiRun(run_dir))
        assert online.results == pytest.approx(folder.results)
        assert online.config == folder.config
        for metric in ("val/acc", "train/loss"):
            (steps, values), (want_steps, want_values) = (
                zip(*online.curves[metric]),
                zip(*folder.curves[metric]),
            )
            assert steps == want_steps and values == pytest.approx(want_values)
        assert online.best_val("val/acc", True) == pytest.approx(folder.best_val("val/acc", True))
        assert online.episodes is None  # W&B keeps no per-episode results


def test_compare_wandb_project(grid, tmp_path, monkeypatch, capsys):
    calls = []

    class Api:
        def runs(self, path, filters=None):
            calls.append((path, filters))
            return [ApiRun(d) for d in scan([str(grid)])[0]]

    monkeypatch.setattr(wandb, "Api", Api)
    cli.main(["--wandb", "me/metalab", "--group", grid.name, "--out", str(tmp_path)])
    assert calls == [("me/metalab", {"state": "finished", "group": grid.name})]
    header, *rows = Tables((tmp_path / "compare.html").read_text()).tables[0]
    assert len(rows) == 4 and "dataset.shots" in header
    assert "no per-episode results" in capsys.readouterr().out
    # one seed each: the CI over the episodes is the run's own, from its summary
    ci = [row[header.index("95% CI episodes")] for row in rows]
    assert all(re.fullmatch(r"± 0\.\d+", c) for c in ci)
    assert not any(math.isnan(float(c[2:])) for c in ci)


def test_classification_and_regression_runs_are_not_ranked_together(grid, tmp_path, capsys):
    for job, metric in (("0", "test/acc"), ("1", "test/mse")):  # a copy as a regression run
        shutil.copytree(grid / job, tmp_path / job)
        (tmp_path / job / "results.json").write_text(json.dumps({metric: 0.5}))
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(tmp_path)])
    assert exit_.value.code == 2
    assert "share no test metric" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give run folders, or --wandb ENTITY/PROJECT"),
        (["--wandb", "metalab"], "--wandb=metalab: expected ENTITY/PROJECT"),
        (["somewhere", "--group", "g"], "--group=g: only with --wandb"),
    ],
)
def test_bad_arguments_are_one_clear_line(args, message, capsys):
    with pytest.raises(SystemExit):
        cli.main(args)
    assert message in capsys.readouterr().err


def test_no_finished_wandb_runs_is_a_clear_error(monkeypatch, capsys):
    class Api:
        def runs(self, path, filters=None):
            return []

    monkeypatch.setattr(wandb, "Api", Api)
    with pytest.raises(SystemExit):
        cli.main(["--wandb", "me/metalab", "--group", "g"])
    assert "no finished runs in me/metalab (group g)" in capsys.readouterr().err

"""metalab-compare on real run folders (the 2x2 grid of test_sweeps) and on W&B API runs built
from the same runs' offline W&B records."""

import csv
import json
import math
import shutil
import statistics
from html.parser import HTMLParser

import pytest
import wandb

from metalab import compare
from metalab.records import find_run_dirs, from_wandb_run, load_run
from test_sweeps import grid_sweep, wandb_records


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return grid_sweep(tmp_path_factory)


class Tables(HTMLParser):
    """The tables of an HTML page as lists of rows of cell texts, and its images."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.images, self._cell = [], [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_compare_a_sweep_folder(grid, capsys):
    compare.main([str(grid)])
    out = capsys.readouterr().out
    page = Tables((grid / "compare.html").read_text())
    header, *rows = page.tables[0]
    assert len(rows) == 4
    names = [f"{grid.name}/{n}" for n in "0123"]
    assert sorted(row[1] for row in rows) == names and all(n in out for n in names)
    assert {"algorithm.optimizer.lr", "dataset.shots"} <= set(header)
    assert not any(h.startswith(("paths.", "logger.")) for h in header)
    # sorted by test accuracy, best first, with the numbers of results.json
    accs = [results(grid.parent / row[1])["test/acc"] for row in rows]
    assert accs == sorted(accs, reverse=True)
    col = header.index("test/acc")
    assert [row[col].split(" ± ")[0] for row in rows] == [f"{a:.4f}" for a in accs]
    # learning curves: PNG files, also embedded in the page
    for name in ("curves_val_acc.png", "curves_train_loss.png"):
        png = (grid / name).read_bytes()
        assert png.startswith(b"\x89PNG")
    assert len(page.images) >= 2 and all(i.startswith("data:image/png;base64,")
                                         for i in page.images)


def episode_accs(run_dir):
    with open(run_dir / "test_episodes.csv", newline="") as f:
        return [float(row["acc"]) for row in csv.DictReader(f)]


def test_paired_comparison_on_the_same_episodes(grid, tmp_path, capsys):
    same_shots = [grid / "1", grid / "3"]  # dataset.shots=2, two learning rates
    compare.main([str(p) for p in same_shots] + ["--out", str(tmp_path)])
    out = capsys.readouterr().out
    header, row = Tables((tmp_path / "compare.html").read_text()).tables[1]
    best, other = (grid.parent / row[0]), (grid.parent / row[1])
    assert results(best)["test/acc"] >= results(other)["test/acc"]
    diffs = [a - b for a, b in zip(episode_accs(best), episode_accs(other))]
    mean = statistics.fmean(diffs)
    half = 1.96 * statistics.stdev(diffs) / math.sqrt(len(diffs))
    assert float(row[2]) == pytest.approx(mean, abs=1e-4)
    low, high = (float(x) for x in row[3].strip("[]").split(","))
    assert (low, high) == pytest.approx((mean - half, mean + half), abs=1e-4)
    assert row[4] == str(len(diffs)) == "10"
    assert row[5].startswith("yes" if abs(mean) > half else "no")
    assert row[2] in out and row[3] in out


def test_runs_on_different_episodes_cannot_be_paired(grid, tmp_path, capsys):
    different_shots = [str(grid / "0"), str(grid / "1")]
    with pytest.raises(SystemExit, match="differ in dataset.shots.*--no-paired"):
        compare.main([*different_shots, "--out", str(tmp_path)])
    compare.main([*different_shots, "--out", str(tmp_path), "--no-paired"])
    assert len(Tables((tmp_path / "compare.html").read_text()).tables) == 1


@pytest.mark.parametrize(("args", "message"), [
    (["{tmp}"], "no runs (folders with results.json and config.yaml) in"),
    (["{tmp}/missing"], "missing: no such folder"),
    (["{tmp}/nothing-*"], "nothing-*: no such folder"),
])
def test_no_runs_is_a_clear_error(tmp_path, args, message):
    with pytest.raises(SystemExit, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("*", r"\*")):
        compare.main([a.format(tmp=tmp_path) for a in args])


@pytest.mark.parametrize(("args", "message"), [
    ([], "give run folders, or --wandb ENTITY/PROJECT"),
    (["--wandb", "metalab"], "--wandb=metalab: expected ENTITY/PROJECT"),
    (["somewhere", "--group", "g"], "--group=g: only with --wandb"),
])
def test_bad_arguments_are_one_clear_line(args, message, capsys):
    with pytest.raises(SystemExit):
        compare.main(args)
    assert message in capsys.readouterr().err


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
    for run_dir in find_run_dirs([str(grid)]):
        folder, online = load_run(run_dir, "x"), from_wandb_run(ApiRun(run_dir))
        assert online.results == pytest.approx(folder.results)
        assert online.config == folder.config
        for metric in ("val/acc", "train/loss"):
            (steps, values), (want_steps, want_values) = (
                zip(*online.curves[metric]), zip(*folder.curves[metric]))
            assert steps == want_steps and values == pytest.approx(want_values)
        assert online.episodes is None  # W&B keeps no per-episode results


def test_compare_wandb_project(grid, tmp_path, monkeypatch, capsys):
    calls = []

    class Api:
        def runs(self, path, filters=None):
            calls.append((path, filters))
            return [ApiRun(d) for d in find_run_dirs([str(grid)])]

    monkeypatch.setattr(wandb, "Api", Api)
    compare.main(["--wandb", "me/metalab", "--group", grid.name, "--out", str(tmp_path)])
    assert calls == [("me/metalab", {"state": "finished", "group": grid.name})]
    header, *rows = Tables((tmp_path / "compare.html").read_text()).tables[0]
    assert len(rows) == 4 and "dataset.shots" in header
    assert "no per-episode results" in capsys.readouterr().out


def test_classification_and_regression_runs_are_not_ranked_together(grid, tmp_path):
    for job, metric in (("0", "test/acc"), ("1", "test/mse")):  # a copy as a regression run
        shutil.copytree(grid / job, tmp_path / job)
        (tmp_path / job / "results.json").write_text(json.dumps({metric: 0.5}))
    with pytest.raises(SystemExit, match="share no test metric .*compare those apart"):
        compare.main([str(tmp_path)])


def test_no_finished_wandb_runs_is_a_clear_error(monkeypatch):
    class Api:
        def runs(self, path, filters=None):
            return []

    monkeypatch.setattr(wandb, "Api", Api)
    with pytest.raises(SystemExit, match=r"no finished runs in me/metalab \(group g\)"):
        compare.main(["--wandb", "me/metalab", "--group", "g"])

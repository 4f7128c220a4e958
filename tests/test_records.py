"""Run records (what metalab-compare reads) from real run-folder files written here."""

import csv
import json
import math

import pytest
import yaml

from metalab.compare.records import (
    CompareError,
    RunRecord,
    curves_from_rows,
    expand,
    flatten,
    from_wandb_run,
    load_run,
    read_curves,
    read_episodes,
    scan,
)


def write_run(folder, acc=0.5, episodes=((0, 0.4, 1.2), (1, 0.6, 0.9))):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(
        yaml.safe_dump({"seed": 1, "algorithm": {"name": "maml", "optimizer": {"lr": 0.001}}})
    )
    (folder / "results.json").write_text(json.dumps({"test/acc": acc, "test/episodes": 2}))
    with open(folder / "test_episodes.csv", "w", newline="") as f:
        csv.writer(f).writerows([("episode", "acc", "loss"), *episodes])
    with open(folder / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [
                ("epoch", "step", "train/loss", "val/acc", "val/acc_ci95", "val/episodes"),
                (0, 0, 1.5, "", "", ""),
                (0, 1, 1.25, "", "", ""),
                (0, 1, "", 0.5, 0.1, 4),
                (1, "", 9.0, "", "", ""),
            ]
        )  # a row without a step is no curve point
    return folder


def test_flatten_joins_nested_keys_with_dots():
    assert flatten({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}) == {
        "a.b.c": 1,
        "a.d": [1, 2],
        "e": None,
    }


def test_load_run_reads_every_file(tmp_path):
    run = load_run(write_run(tmp_path / "run"), "name")
    assert run.name == "name" and run.source == str(tmp_path / "run")
    assert run.config == {"seed": 1, "algorithm.name": "maml", "algorithm.optimizer.lr": 0.001}
    assert run.results == {"test/acc": 0.5, "test/episodes": 2}
    assert run.episodes == {"acc": [0.4, 0.6], "loss": [1.2, 0.9]}
    # CIs and episode counts are no curves; rows without a value or a step are skipped
    assert run.curves == {"train/loss": [(0.0, 1.5), (1.0, 1.25)], "val/acc": [(1.0, 0.5)]}


def test_missing_files_give_no_curves_and_no_episodes(tmp_path):
    assert read_curves(tmp_path / "metrics.csv") == {}
    assert read_episodes(tmp_path / "test_episodes.csv") is None
    (tmp_path / "one.csv").write_text("episode,acc\n0,0.5\n")
    assert read_episodes(tmp_path / "one.csv") == {"acc": [0.5]}
    (tmp_path / "empty.csv").write_text("episode\n")
    with pytest.raises(CompareError, match="empty.csv: no episodes"):  # a damaged file: named
        read_episodes(tmp_path / "empty.csv")
    rows = [
        {"_step": "3", "train/acc": "0.5", "test/acc": "0.9", "val/loss": None, "val/acc_best": 1}
    ]  # the best value so far is a result, not a point of the curve
    assert curves_from_rows(rows, step_key="_step") == {"train/acc": [(3.0, 0.5)]}


def test_run_folders_are_found_below_folders_and_globs(tmp_path):
    a = write_run(tmp_path / "sweep" / "0")
    b = write_run(tmp_path / "sweep" / "1" / "nested")
    (tmp_path / "sweep" / "2").mkdir()
    (tmp_path / "sweep" / "2" / "results.json").write_text("{}")  # no config.yaml: not a run
    runs, skipped = scan([str(tmp_path / "sweep")])
    assert runs == [a, b]
    assert skipped == [(tmp_path / "sweep" / "2", "results.json without config.yaml")]
    assert scan([str(tmp_path / "sweep" / "*")])[0] == [a, b]
    assert scan([str(tmp_path / "sweep" / "0"), str(tmp_path / "sweep")])[0] == [a, b]
    assert expand([str(a), str(b)]) == [a, b]  # every pattern's folders
    with pytest.raises(CompareError, match="no_such: no such folder"):
        expand([str(tmp_path / "no_such")])
    with pytest.raises(CompareError, match="no such folder"):
        expand([str(tmp_path / "none*")])
    with pytest.raises(CompareError, match="^: no such folder$"):  # not the current folder
        expand([""])


def test_failed_jobs_report_the_last_line_of_their_error(tmp_path):
    write_run(tmp_path / "0")
    for job, text in (("1", "Traceback\n  ...\nValueError: bad\n"), ("2", "")):
        (tmp_path / job).mkdir()
        (tmp_path / job / "error.txt").write_text(text)
    assert scan([str(tmp_path)])[1] == [
        (tmp_path / "1", "failed: ValueError: bad"),
        (tmp_path / "2", "failed: see error.txt"),
    ]


def test_pruned_and_unfinished_runs_are_named_with_their_reason(tmp_path):
    write_run(tmp_path / "0")
    for job, name, content in (
        ("1", "pruned.txt", b"val/acc 0.2 at step 4 \xff\n"),
        ("2", "pruned.txt", b""),
        ("3", "error.txt", b"RuntimeError: bad \xff\n"),
        ("4", ".hydra", None),
        ("5", "train.log", b""),
        ("6", "config.yaml", b"seed: 1\n"),
    ):
        (tmp_path / job).mkdir()
        if content is None:
            (tmp_path / job / name).mkdir()
        else:
            (tmp_path / job / name).write_bytes(content)
    unfinished = "no results.json (unfinished, killed or still running)"
    assert scan([str(tmp_path)])[1] == [
        (tmp_path / "1", "pruned: val/acc 0.2 at step 4 \ufffd"),
        (tmp_path / "2", "pruned: stopped early by the Optuna pruner"),
        (tmp_path / "3", "failed: RuntimeError: bad \ufffd"),  # undecodable bytes replaced
        (tmp_path / "4", unfinished),
        (tmp_path / "5", unfinished),
        (tmp_path / "6", unfinished),
    ]


class ApiRun:
    """The parts of a wandb.Api() run that records read (the W&B client's own shapes)."""

    def __init__(self, path=("team", "metalab", "abc123")):
        self.name, self.path = "maml-glyphs-conv4", list(path) if path else None
        self.config = {"_wandb": {"x": 1}, "algorithm": {"name": "maml", "_hidden": 2}}
        self.summary = {
            "test/acc": 0.75,
            "test/episodes": 600,
            "perf/tasks_per_sec": 3,
            "val/acc": 0.7,
            "val/acc_best": 0.72,
            "test/note": "text",
            "_step": 9,
        }
        self.histories = []

    def history(self, samples, pandas):
        self.histories.append((samples, pandas))
        return [
            {"trainer/global_step": 1, "train/loss": 2.0, "_step": 0},
            {"trainer/global_step": 4, "val/acc": 0.5, "val/acc_ci95": 0.1},
        ]


def test_wandb_runs_become_records_without_episodes():
    run = ApiRun()
    record = from_wandb_run(run)
    assert record.name == "maml-glyphs-conv4" and record.source == "team/metalab/abc123"
    assert record.config == {"algorithm.name": "maml", "algorithm._hidden": 2}
    assert record.results == {
        "test/acc": 0.75,
        "test/episodes": 600.0,
        "perf/tasks_per_sec": 3.0,
        "val/acc_best": 0.72,  # what best.ckpt was chosen by
    }
    assert record.curves == {"train/loss": [(1.0, 2.0)], "val/acc": [(4.0, 0.5)]}
    assert record.episodes is None and record.protocol == "transductive"
    assert run.histories == [(100_000, False)]  # the whole history, as plain rows
    assert from_wandb_run(ApiRun(path=None)).source == "maml-glyphs-conv4"
    pathless = ApiRun()
    del pathless.path
    assert from_wandb_run(pathless).source == "maml-glyphs-conv4"


def test_a_wandb_run_without_the_protocol_in_its_config_has_the_summarys():
    run = ApiRun()
    run.summary["protocol"] = "inductive"  # results.json's keys are the run's summary
    assert from_wandb_run(run).protocol == "inductive"
    run.config["protocol"] = "transductive"  # the config names it: it wins
    assert from_wandb_run(run).protocol == "transductive"


def test_wandb_records_ask_for_finished_runs_of_a_group(monkeypatch):
    import wandb

    from metalab.compare.records import wandb_records

    asked = []

    class Api:
        def runs(self, path, filters):
            asked.append((path, filters))
            return [ApiRun()]

    monkeypatch.setattr(wandb, "Api", Api)
    (record,) = wandb_records("team/metalab", "2026-01-01_12-00-00")
    assert record.results["test/acc"] == 0.75
    wandb_records("team/metalab", None)
    assert asked == [
        ("team/metalab", {"state": "finished", "group": "2026-01-01_12-00-00"}),
        ("team/metalab", {"state": "finished"}),
    ]


def test_the_protocol_comes_from_the_config_and_is_no_result(tmp_path):
    run_dir = write_run(tmp_path / "run")
    (run_dir / "results.json").write_text(
        json.dumps(
            {
                "protocol": "inductive",
                "test/acc": None,
                "inductive_stats": "support",
                "test/episodes": 2,
            }
        )
    )
    run = load_run(run_dir, "name")
    assert run.protocol == "transductive"  # config.yaml names it; runs from before: this
    assert list(run.results) == ["test/acc", "test/episodes"]  # null: a non-finite number
    assert run.results["test/acc"] != run.results["test/acc"] and run.results["test/episodes"] == 2
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, "protocol": "inductive_bn"}))
    assert load_run(run_dir, "name").protocol == "inductive_bn"


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        (
            "config.yaml",
            "dataset: {name: [glyphs\n",
            "config.yaml: not valid YAML at line 2 (expected ',' or ']', but got '<stream end>')",
        ),
        ("config.yaml", "- a list\n", "config.yaml: expected a mapping of config keys, found list"),
        (
            "results.json",
            '{"test/acc": 0.8',
            "results.json: not valid JSON (Expecting ',' delimiter: line 1 column 17 (char 16))",
        ),
        ("results.json", "[0.8]", "results.json: expected an object of metrics, found list"),
        ("results.json", '{"test/acc": "high"}', "results.json: test/acc='high' is not a number"),
        ("results.json", '{"test/acc": true}', "results.json: test/acc=True is not a number"),
        (
            "test_episodes.csv",
            "episode,acc\n0,0.5\n1,abc\n",
            "test_episodes.csv: line 3, column acc: 'abc' is not a number",
        ),
        (
            "metrics.csv",
            "step,train/loss\n0,abc\n",
            "metrics.csv: line 2, column train/loss: 'abc' is not a number",
        ),
        (
            "metrics.csv",
            "step,train/loss\n0,1.5\nlast,1.25\n",
            "metrics.csv: line 3, column step: 'last' is not a number",
        ),
        (
            "metrics.csv",
            "step,train/loss\n0,1.5\xff\n",
            "metrics.csv: not a readable CSV file "
            "('utf-8' codec can't decode byte 0xff in position 21: invalid start byte)",
        ),
        # a reader error has no line mark and no problem: the error itself, without a line
        (
            "config.yaml",
            "seed: 1\x07\n",
            "config.yaml: not valid YAML (unacceptable character "
            '#x0007: special characters are not allowed\n  in "<unicode string>", position 7)',
        ),
    ],
)
def test_a_damaged_file_is_named_with_what_is_wrong(tmp_path, file, text, message):
    run_dir = write_run(tmp_path / "run")
    (run_dir / file).write_bytes(text.encode("latin-1"))
    with pytest.raises(CompareError) as err:
        load_run(run_dir, "name")
    assert str(err.value) == f"{run_dir / message}"


def test_the_best_validation_value_is_the_recorded_one_else_the_curves_best():
    """results.json's `<metric>_best` (the value best.ckpt was chosen by) when it is a number,
    else the highest (lowest) finite point of the validation curve, else none."""
    nan = math.nan
    run = RunRecord(
        name="run",
        config={},
        results={"test/acc": 0.6, "val/loss_best": nan},  # null in results.json
        curves={
            "val/acc": [(1.0, 0.5), (2.0, nan), (3.0, 0.75), (4.0, 0.625)],
            "val/loss": [(1.0, 0.9), (2.0, 0.25), (3.0, nan), (4.0, 0.5)],
            "val/mse": [(1.0, nan)],
        },
    )
    assert run.best_val("val/acc", higher=True) == 0.75
    assert run.best_val("val/loss", higher=False) == 0.25
    assert run.best_val("val/mse", higher=False) is None  # no finite point
    assert run.best_val("val/f1", higher=True) is None  # no curve
    run.results["val/acc_best"] = 0.7  # recorded: it wins over the (logged) curve
    assert run.best_val("val/acc", higher=True) == 0.7

"""Run records (what metalab-compare reads) from real run-folder files written here."""

import csv
import json

import pytest
import yaml

from metalab.records import (
    curves_from_rows,
    expand,
    failed_jobs,
    find_run_dirs,
    flatten,
    load_run,
    read_curves,
    read_episodes,
)


def write_run(folder, acc=0.5, episodes=((0, 0.4, 1.2), (1, 0.6, 0.9))):
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(
        {"seed": 1, "algorithm": {"name": "maml", "optimizer": {"lr": 0.001}}}))
    (folder / "results.json").write_text(json.dumps({"test/acc": acc, "test/episodes": 2}))
    with open(folder / "test_episodes.csv", "w", newline="") as f:
        csv.writer(f).writerows([("episode", "acc", "loss"), *episodes])
    with open(folder / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows([
            ("epoch", "step", "train/loss", "val/acc", "val/acc_ci95", "val/episodes"),
            (0, 0, 1.5, "", "", ""), (0, 1, 1.25, "", "", ""), (0, 1, "", 0.5, 0.1, 4),
            (1, "", 9.0, "", "", "")])  # a row without a step is no curve point
    return folder


def test_flatten_joins_nested_keys_with_dots():
    assert flatten({"a": {"b": {"c": 1}, "d": [1, 2]}, "e": None}) == {
        "a.b.c": 1, "a.d": [1, 2], "e": None}


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
    (tmp_path / "empty.csv").write_text("episode\n")
    assert read_episodes(tmp_path / "empty.csv") == {}
    rows = [{"_step": "3", "train/acc": "0.5", "test/acc": "0.9", "val/loss": None}]
    assert curves_from_rows(rows, step_key="_step") == {"train/acc": [(3.0, 0.5)]}


def test_run_folders_are_found_below_folders_and_globs(tmp_path):
    a = write_run(tmp_path / "sweep" / "0")
    b = write_run(tmp_path / "sweep" / "1" / "nested")
    (tmp_path / "sweep" / "2").mkdir()
    (tmp_path / "sweep" / "2" / "results.json").write_text("{}")  # no config.yaml: not a run
    assert find_run_dirs([str(tmp_path / "sweep")]) == [a, b]
    assert find_run_dirs([str(tmp_path / "sweep" / "*")]) == [a, b]
    assert find_run_dirs([str(tmp_path / "sweep" / "0"), str(tmp_path / "sweep")]) == [a, b]
    with pytest.raises(SystemExit, match="no_such: no such folder"):
        expand([str(tmp_path / "no_such")])
    with pytest.raises(SystemExit, match="no such folder"):
        expand([str(tmp_path / "none*")])


def test_failed_jobs_report_the_last_line_of_their_error(tmp_path):
    write_run(tmp_path / "0")
    for job, text in (("1", "Traceback\n  ...\nValueError: bad\n"), ("2", "")):
        (tmp_path / job).mkdir()
        (tmp_path / job / "error.txt").write_text(text)
    assert failed_jobs([str(tmp_path)]) == [(tmp_path / "1", "ValueError: bad"),
                                            (tmp_path / "2", "")]

"""Shared fixtures: compose the real Hydra config and run the real entry points."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from metalab.config import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT_SMALL = (ROOT / "../shared/data/omniglot-small").resolve()
OMNIGLOT_ARGS = [
    f"dataset.root={OMNIGLOT_SMALL}",
    "dataset.background=[images_background_small1]",
    "dataset.evaluation=[images_background_small2]",
]
# A training budget small enough for the default suite.
TINY = ["steps=6", "val_every=3", "val_episodes=6", "test_episodes=10", "eval_batch=5",
        "log_every=1"]

# CI always has ../shared beside the checkout: there a missing data folder fails the run.
IN_CI = os.environ.get("CI", "").lower() == "true"
needs_omniglot = pytest.mark.omniglot


def pytest_runtest_setup(item):
    if item.get_closest_marker("omniglot") and not OMNIGLOT_SMALL.is_dir():
        message = f"real Omniglot subsets not found at {OMNIGLOT_SMALL}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the shared data folder must be there)")
        pytest.skip(message)


# `make mutants`: a mutant of a core module runs, of the tests mutmut found calling the mutated
# function, only those in that module's own fast test files (mutmut sets MUTANT_UNDER_TEST to
# the mutant's name; "stats", "" and "fail" in its other phases). Longest prefix first.
MUTANT_TESTS = {
    "metalab.inner_loop.": ["test_inner_loop"],
    "metalab.data.sampler.": ["test_sampler"],
    "metalab.data.datamodule.": ["test_datamodule", "test_ddp"],
    "metalab.algorithms.base.": ["test_base", "test_protonet"],
    "metalab.algorithms.maml_rl.": ["test_rl"],
    "metalab.algorithms.maml.": ["test_maml"],
    "metalab.algorithms.reptile.": ["test_reptile"],
    "metalab.algorithms.protonet.": ["test_protonet"],
    "metalab.algorithms.embedding.": ["test_protonet", "test_matching_relation"],
    "metalab.algorithms.matching.": ["test_matching_relation"],
    "metalab.algorithms.relation.": ["test_matching_relation"],
    "metalab.algorithms.anil.": ["test_anil"],
    "metalab.algorithms.metaoptnet.": ["test_metaoptnet"],
    "metalab.stats.": ["test_stats", "test_compare_stats"],
    "metalab.compare.records.": ["test_records"],
}


def pytest_collection_modifyitems(config, items):
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    prefix = next((p for p in MUTANT_TESTS if mutant.startswith(p)), None)
    if prefix is None:
        return
    files = {f"{name}.py" for name in MUTANT_TESTS[prefix]}
    keep = [item for item in items if item.path.name in files]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep  # none left: exit code 5, which mutmut counts as "no tests"


@pytest.fixture(autouse=True)
def restore_environ():
    """Each test starts from the same environment: a run in the test process leaves variables
    behind (Lightning's PL_GLOBAL_SEED and PL_SEED_WORKERS, torch's TORCHINDUCTOR_CACHE_DIR;
    a rank's LOCAL_RANK, WORLD_SIZE, MASTER_ADDR... should it fail before cleaning up), and
    LOCAL_RANK or RANK would make every later run think it is a rank of a launched job."""
    saved = dict(os.environ)
    yield
    for key in os.environ.keys() - saved.keys():
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@pytest.fixture
def one_thread():
    """One intra-op thread: small kernels on a shared 2-core machine stall on thread hand-offs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_train(overrides=(), output_dir: Path | None = None):
    """The run config exactly as metalab-train would build it, with the run folder given."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        extra = [f"paths.output_dir={output_dir}"] if output_dir else []
        return compose("train", overrides=[*overrides, *extra])


def trained_model(cfg, run_dir: Path, ckpt: str = "best"):
    """A finished run's model with the weights of one of its checkpoints, and its DataModule."""
    import torch

    from metalab.run import build_datamodule, build_model

    datamodule = build_datamodule(cfg)
    datamodule.load()
    model = build_model(cfg)
    state = torch.load(run_dir / "checkpoints" / f"{ckpt}.ckpt", weights_only=False)
    model.load_state_dict(state["state_dict"])
    return model, datamodule


def run_cli(module: str, *args: str, cwd: Path = ROOT, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    """Run an entry point (``python -m metalab.<module>``) as a user would."""
    return subprocess.run(
        [sys.executable, "-m", f"metalab.{module}", *args], cwd=cwd, capture_output=True,
        text=True, timeout=timeout, env={**os.environ, "WANDB_MODE": "offline", **(env or {})},
    )


def train_cli(run_dir: Path, *overrides: str, **kwargs) -> subprocess.CompletedProcess:
    return run_cli("train", f"hydra.run.dir={run_dir}", *overrides, **kwargs)


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_best_checkpoint(run_dir: Path, metric: str, best=max) -> int:
    """best.ckpt holds the validation with the best ``metric`` in metrics.csv (the first of
    equals), and that validation differs from the last one's; returns its step."""
    import torch

    values = {}  # validation step -> value, a step logged twice keeps its last value
    for row in read_csv(run_dir / "metrics.csv"):
        if row.get(metric):
            values[int(row["step"])] = float(row[metric])
    steps = sorted(values)
    chosen = best(steps, key=lambda s: (values[s], -s if best is max else s))
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=False)
    assert ckpt["global_step"] == chosen + 1, (values, ckpt["global_step"])
    return chosen


def assert_results_are_the_episode_means(run_dir: Path, metric: str = "acc") -> dict:
    """results.json's test mean and 95% CI equal those of test_episodes.csv's column, computed
    with scipy (1.96 standard errors, the few-shot convention), to the CSV's 6 digits."""
    from scipy import stats

    results = read_results(run_dir)
    values = [float(row[metric]) for row in read_csv(run_dir / "test_episodes.csv")]
    assert len(values) == results["test/episodes"]
    assert results[f"test/{metric}"] == pytest.approx(sum(values) / len(values), rel=1e-5)
    assert results[f"test/{metric}_ci95"] == pytest.approx(1.96 * stats.sem(values), rel=1e-4)
    return results

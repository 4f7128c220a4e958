"""Shared fixtures and markers; the shared helpers are in tests/helpers/."""

from __future__ import annotations

import os
import sys

import pytest

from helpers import IN_CI, OMNIGLOT_SMALL, TINY, run_cli


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
    "metalab.algorithms.inner_loop.": ["test_inner_loop", "test_speed_paths"],
    "metalab.data.sampler.": ["test_sampler"],
    "metalab.data.datamodule.": ["test_datamodule", "test_ddp"],
    "metalab.algorithms.base.": ["test_base", "test_protonet"],
    "metalab.algorithms.maml_rl.": ["test_rl"],
    "metalab.algorithms.maml.": ["test_maml"],
    "metalab.algorithms.reptile.": ["test_reptile"],
    "metalab.algorithms.protonet.": ["test_protonet"],
    "metalab.algorithms.embedding.": ["test_protonet", "test_matching_relation", "test_protocols"],
    "metalab.algorithms.matching.": ["test_matching_relation"],
    "metalab.algorithms.relation.": ["test_matching_relation"],
    "metalab.algorithms.anil.": ["test_anil"],
    "metalab.algorithms.first_step.": ["test_speed_paths", "test_inner_loop"],
    "metalab.algorithms.gradient.": ["test_maml", "test_reptile", "test_anil"],
    "metalab.algorithms.metaoptnet.": ["test_metaoptnet"],
    "metalab.algorithms.episode_heads.": ["test_episode_heads"],
    "metalab.algorithms.protocols.": ["test_protocols"],
    "metalab.algorithms.pretrain.": ["test_pretrain"],
    "metalab.algorithms.baselines.": ["test_baselines"],
    "metalab.compare.statistics.": ["test_stats", "test_compare_stats"],
    "metalab.compare.records.": ["test_records"],
    "metalab.tasks.": ["test_base", "test_protonet", "test_inner_loop", "test_reptile", "test_rl"],
}


def mutant_test_files() -> set[str] | None:
    """The test files of the module whose mutant runs, or None (not a mutant's run)."""
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    prefix = next((p for p in MUTANT_TESTS if mutant.startswith(p)), None)
    return None if prefix is None else {f"{name}.py" for name in MUTANT_TESTS[prefix]}


def pytest_configure(config):
    files = mutant_test_files()
    if files is not None:  # the other files' tests are not even collected
        config.args[:] = [a for a in config.args if a.split("::")[0].rsplit("/", 1)[-1] in files]


def pytest_collection_modifyitems(config, items):
    files = mutant_test_files()
    if files is None:
        return
    from mutmut.state import state  # the stats run's test durations, loaded in the fork server

    seconds = state().duration_by_test
    keep = sorted(
        (item for item in items if item.path.name in files),
        key=lambda item: seconds.get(item.nodeid, 0.0),
    )
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep  # fastest first (mutmut's fork server does not sort); none left: exit 5,
    # which mutmut counts as "no tests"


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


@pytest.fixture(autouse=True)
def lightning_rank_zero():
    """Each test starts, and leaves, Lightning at rank 0. A Trainer built in the test process as
    rank 1 of a DDP job (test_ddp) sets Lightning's process-wide ``rank_zero_only.rank`` to 1,
    and only a DDP strategy sets it again: every later run in the process would skip what only
    rank 0 does (its loggers write no metrics.csv, its rank-zero messages never show)."""

    def reset():
        rank_zero = sys.modules.get("lightning_utilities.core.rank_zero")
        if rank_zero is not None:  # not imported yet: Lightning's import reads the environment
            rank_zero.rank_zero_only.rank = 0

    reset()
    yield
    reset()


@pytest.fixture
def one_thread():
    """One intra-op thread: small kernels on a shared 2-core machine stall on thread hand-offs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def grid_sweep(tmp_path_factory):
    """A 2x2 grid on glyphs with the default loggers (W&B offline and CSV), run once per test
    session: test_sweeps checks its jobs, test_compare compares it."""
    sweep_dir = tmp_path_factory.mktemp("grid") / "lr-shots"
    proc = run_cli(
        "run.train",
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "algorithm.optimizer.lr=0.001,0.002",
        "dataset.shots=1,2",
        *TINY,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir

"""Shared fixtures and markers; the shared helpers are in tests/helpers/."""

from __future__ import annotations

import pytest

from helpers import IN_CI, OMNIGLOT_SMALL, TINY, run_cli


def pytest_runtest_setup(item):
    if item.get_closest_marker("omniglot") and not OMNIGLOT_SMALL.is_dir():
        message = f"real Omniglot subsets not found at {OMNIGLOT_SMALL}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true: the shared data folder must be there)")
        pytest.skip(message)


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
    proc = run_cli("run.train", "-m", f"hydra.sweep.dir={sweep_dir}",
                   "algorithm.optimizer.lr=0.001,0.002", "dataset.shots=1,2", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir

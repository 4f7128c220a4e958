"""Each test starts from the same process state, whatever the tests before it did in this process
(tests/conftest.py's autouse fixtures)."""

from __future__ import annotations

import logging

import pytest
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from helpers import read_csv
from helpers.ddp import rank_1_of_2_trainer
from metalab.tracking.csv import CSVLogger


@pytest.fixture(scope="module")
def rank_1_trainer():
    """A Trainer built in this process as rank 1 of a DDP job (as test_ddp builds one), before
    the test starts (module fixtures come first): it leaves Lightning's process-wide rank at 1."""
    with pytest.MonkeyPatch.context() as env:
        return rank_1_of_2_trainer(env)


def test_a_test_after_a_rank_1_trainer_logs_as_rank_0(rank_1_trainer, tmp_path, caplog):
    """Without the reset a run in this process writes checkpoints but no metrics.csv and hides
    Lightning's rank-zero lines (test_reliability's SIGKILL and unreadable-checkpoint tests
    failed so after the whole suite)."""
    logger = CSVLogger(save_dir=tmp_path, name="", version="")
    logger.log_metrics({"train/loss": 0.5}, step=0)
    logger.save()
    assert read_csv(tmp_path / "metrics.csv") == [{"train/loss": "0.5", "step": "0"}]
    with caplog.at_level(logging.INFO):
        rank_zero_info("Restoring states from the checkpoint path at x.ckpt")
    assert "Restoring states" in caplog.text

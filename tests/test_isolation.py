"""Each test starts from the same process state, whatever the tests before it did in this process
(tests/conftest.py's autouse fixtures)."""

from __future__ import annotations

import logging

import pytest
import pytorch_lightning as pl
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from helpers import read_csv
from metalab.tracking.csv import CSVLogger

RANK_1_OF_2 = {  # the launcher's environment, as under torchrun (test_ddp builds one such Trainer)
    "LOCAL_RANK": "1",
    "RANK": "1",
    "WORLD_SIZE": "2",
    "NODE_RANK": "0",
    "MASTER_ADDR": "127.0.0.1",
    "MASTER_PORT": "29400",
    "CUDA_VISIBLE_DEVICES": "",
}


@pytest.fixture(scope="module")
def rank_1_trainer():
    """A Trainer built in this process as rank 1 of a DDP job, before the test starts (module
    fixtures come first): it leaves Lightning's process-wide rank at 1."""
    with pytest.MonkeyPatch.context() as env:
        for var, value in RANK_1_OF_2.items():
            env.setenv(var, value)
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=2,
            strategy="ddp",
            logger=False,
            enable_progress_bar=False,
            enable_checkpointing=False,
        )
    assert trainer.global_rank == 1
    return trainer


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

"""The meta-batch is global: two CPU processes (DDP over gloo) and one process end a run with the
same parameters and the same test metrics, episode for episode, in one run folder; each rank
computes its half of the meta-batch and evaluates its share of the episodes."""

import pytest
import torch

from helpers import compose
from helpers.ddp import SMALL, one_and_two_processes_agree, rank_1_of_2_trainer
from metalab.errors import ConfigError
from metalab.run.training import build_datamodule


@pytest.mark.e2e
@pytest.mark.parametrize("algorithm", sorted(SMALL))
def test_two_processes_equal_one(tmp_path, algorithm):
    """Also episode for episode: the gathered episodes come back in episode order. Mutant it
    catches (rank 0's episodes 0, 2, 4 first, then rank 1's; src/metalab/algorithms/base.py,
    MetaLearner._eval_epoch_end)::

        -        order = ids.argsort()
        +        order = torch.arange(len(ids))
    """
    one_and_two_processes_agree(tmp_path, algorithm, SMALL[algorithm])


def test_each_rank_takes_its_half_of_the_meta_batch(monkeypatch):
    """The DataModule under a real Lightning Trainer that is rank 1 of 2 (as under torchrun:
    the launcher's environment, no process group needed to ask it): its training batches are
    the second half of each global meta-batch, its evaluation episodes every other one. Mutant
    it catches (each rank computes the whole batch, and DDP's mean gradient is unchanged, so
    test_two_processes_equal_one passes; src/metalab/data/datamodule.py, train_episodes)::

        -        return self.sources["train"].episodes(plan[first:last], self.train_shape[1], gens)
        +        return self.sources["train"].episodes(plan, self.train_shape[1], gens)
    """
    overrides = [
        "algorithm.meta_batch=4",
        "val_every=2",
        "val_episodes=3",
        "test_episodes=7",
        "dataset.queries=2",
        "logger=none",
    ]
    whole = build_datamodule(compose(overrides))
    whole.load()
    trainer = rank_1_of_2_trainer(monkeypatch)
    rank1 = build_datamodule(compose(overrides))
    rank1.trainer = trainer
    rank1.setup("fit")
    # augmentation draws from each task's own generator: the same on any number of ranks
    for dm in (whole, rank1):
        dm.sources["train"].augment = lambda x, g: x + torch.rand((), generator=g)
    batches = list(rank1.train_dataloader())  # steps 0 and 1 (global_step is 0)
    assert [b.num_tasks for b in batches] == [2, 2]
    for step, batch in enumerate(batches):
        assert torch.equal(batch.query_x, whole.train_episodes(step).query_x[2:])
    assert [ids.tolist() for ids in rank1.eval_ids("test")] == [[1, 3, 5]]
    odd = build_datamodule(compose([*overrides, "algorithm.meta_batch=3"]))
    odd.trainer = trainer
    with pytest.raises(ConfigError) as err:
        odd.setup("fit")
    assert (err.value.key, err.value.value) == ("algorithm.meta_batch", 3)
    assert "must divide by the number of processes (2)" in str(err.value)

"""The DataModule over real configs: fixed evaluation episodes, per-step tasks, rank shares."""

import torch

from helpers import compose
from metalab.run.training import build_datamodule


def datamodule(*overrides):
    dm = build_datamodule(compose(["test_episodes=30", "val_episodes=10", *overrides]))
    dm.load()
    return dm


def test_evaluation_episodes_identical_across_runs_seeds_and_algorithms():
    a = datamodule("seed=1")
    b = datamodule("seed=2", "algorithm.meta_batch=4", "dataset.train_ways=10")
    assert torch.equal(a.plans["test"], b.plans["test"])
    assert torch.equal(a.plans["val"], b.plans["val"])
    assert not torch.equal(a.train_episodes(0).support_x, b.train_episodes(0).support_x)
    # a longer evaluation extends the same episodes
    c = datamodule("test_episodes=60")
    assert torch.equal(c.plans["test"][:30], a.plans["test"])
    assert not torch.equal(datamodule("eval_seed=7").plans["test"], a.plans["test"])


def test_training_tasks_follow_the_step_and_ranks_split_the_global_batch():
    dm = datamodule("algorithm.meta_batch=4", "dataset.train_shots=2", "dataset.train_queries=3")
    whole = dm.train_episodes(5)
    ways = dm.train_shape[0]  # support and query sets of the training shape
    assert whole.support_x.shape[:2] == (4, 2 * ways) and whole.query_x.shape[:2] == (4, 3 * ways)
    assert torch.equal(whole.query_x, dm.train_episodes(5).query_x)
    assert not torch.equal(whole.query_x, dm.train_episodes(6).query_x)
    shares = []
    for rank in range(2):
        dm.rank, dm.world = rank, 2
        shares.append(dm.train_episodes(5))
    assert torch.equal(torch.cat([s.query_x for s in shares]), whole.query_x)
    ids = [torch.cat(dm.eval_ids("test")) for dm.rank in range(2)]
    assert sorted(torch.cat(ids).tolist()) == list(range(30))


def test_evaluation_loaders_serve_every_fixed_episode_in_batches():
    """val/test loaders: batches of eval_batch episode ids with their episodes, each episode
    the one its id names in the fixed plan (eval_seed, split, episode)."""
    from metalab.data.sampler import generator

    dm = datamodule("eval_batch=4", "dataset.queries=2")
    for split, loader, n, salt in (
        ("test", dm.test_dataloader(), 30, 2),
        ("val", dm.val_dataloader(), 10, 1),
    ):
        batches = list(loader)
        assert len(loader) == len(batches) == -(-n // 4)
        assert torch.cat([ids for ids, _ in batches]).tolist() == list(range(n))
        ids, episodes = batches[-1]
        assert episodes.num_tasks == len(ids) == n % 4
        for i, e in enumerate(ids.tolist()):
            plan = dm.sources[split].plan(generator(dm.eval_seed, salt, e), 1, 5, 1, 2)
            one = dm.sources[split].episodes(plan, shots=1)
            assert torch.equal(episodes.query_x[i], one.query_x[0])
            assert torch.equal(episodes.support_y[i], one.support_y[0])


def test_augmentation_applies_to_training_episodes_only():
    from metalab.data.augment import Augment

    dm = datamodule("+dataset.augment={flip: true, crop_padding: 2}")
    assert isinstance(dm.sources["train"].augment, Augment)
    assert dm.sources["val"].augment is None and dm.sources["test"].augment is None
    augmented = dm.train_episodes(0).support_x
    dm.sources["train"].augment = None
    assert not torch.equal(augmented, dm.train_episodes(0).support_x)
    assert datamodule().sources["train"].augment is None  # glyphs: none configured
    # training tasks depend on the seed (and only the seed and the step)
    assert not torch.equal(
        datamodule("seed=1").train_episodes(0).query_x,
        datamodule("seed=2").train_episodes(0).query_x,
    )

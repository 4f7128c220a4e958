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


# -- a small in-memory image dataset: the DataModule's contract without generating glyphs -------
def small_images(image_size, load=None, *args, classes=(5, 4, 3), per_class=3, **kwargs):
    """A loader (``dataset.load._target_``): train/val/test splits of 5, 4 and 3 classes of
    random ``1 x image_size x image_size`` images. Its ``load``, ``*args`` and ``**kwargs`` are
    there to be left alone by loader_arguments."""
    from metalab.data.tensors import ImageDataset, ImageSplit

    g = torch.Generator().manual_seed(0)
    splits = [
        ImageSplit(
            torch.randint(0, 256, (n * per_class, 1, image_size, image_size), generator=g).byte(),
            torch.arange(n).repeat_interleave(per_class),
            [f"c{i}" for i in range(n)],
        )
        for n in classes
    ]
    return ImageDataset(*splits, mean=(0.5,), std=(0.25,))


def small_dataset(**keys):
    from omegaconf import OmegaConf

    cfg = dict(name="small", task="classification", channels=1, image_size=4, per_class=3)
    cfg |= dict(ways=3, shots=1, queries=1, train_ways=4, train_shots=1, train_queries=1)
    cfg["load"] = {"_target_": f"{__name__}.small_images", "per_class": 2}  # kept: 2, not 3
    return OmegaConf.create(cfg | keys)


def small_datamodule(val_episodes=2, **keys):
    from metalab.data.datamodule import EpisodeDataModule

    dm = EpisodeDataModule(
        small_dataset(**keys), meta_batch=3, seed=5, eval_seed=0, steps_per_epoch=2,
        val_episodes=val_episodes, test_episodes=4, eval_batch=2,
    )  # fmt: skip
    dm.load()
    return dm


def test_the_loader_takes_the_dataset_keys_it_names():
    """Its named parameters (positional or keyword-only) that the dataset sets, a key also given
    under ``load`` keeping that value; never ``load`` itself, ``*args`` or ``**kwargs``."""
    from metalab.data.datamodule import loader_arguments

    cfg = small_dataset(args=1, kwargs=2, classes=[3, 3, 3])
    assert loader_arguments(cfg) == {"image_size": 4, "classes": [3, 3, 3]}
    dm = small_datamodule()  # the loader got image_size=4 and its own per_class=2
    assert dm.sources["train"].images.shape == (5 * 2, 1, 4, 4)
    assert dm.sources["test"].images.shape == (3 * 2, 1, 4, 4)


def test_each_split_is_checked_with_its_own_shape_and_named_in_the_errors():
    import pytest

    from metalab.errors import ConfigError

    for keys, message in (
        ({"ways": 4}, "dataset.ways=4: the test split has only 3 classes"),
        ({"train_ways": 6}, "dataset.train_ways=6: the train split has only 5 classes"),
        (
            {"train_queries": 2},
            "dataset.train_shots + dataset.train_queries=3: "
            "the train split has classes with only 2 samples",
        ),
    ):
        with pytest.raises(ConfigError) as err:
            small_datamodule(**keys)
        assert str(err.value) == message


def test_no_validation_episodes_make_an_empty_plan():
    """val_episodes=0 (no validation; the Trainer then runs no validation batch) plans none."""
    dm = small_datamodule(val_episodes=0)
    assert dm.plans["val"].shape == (0,)
    assert dm.plans["test"].shape == (4, 3, 2)  # [episodes, ways, shots + queries]


def test_training_batches_start_at_the_trainers_step_and_augment_each_task_by_its_own_stream():
    """An epoch's batches are those of steps global_step, global_step + 1... (so a resumed run
    goes on with the next tasks); task t of step s is augmented with the generator of
    (seed, s, t), the same on any number of ranks."""
    from types import SimpleNamespace

    from metalab.data.sampler import generator

    dm = small_datamodule()
    dm.trainer = SimpleNamespace(global_step=3)  # only its step counter is read
    batches = list(dm.train_dataloader())
    assert len(batches) == 2 and batches[0].query_x.shape[0] == 3
    for batch, step in zip(batches, (3, 4)):
        assert torch.equal(batch.query_x, dm.train_episodes(step).query_x)
    assert not torch.equal(batches[0].query_x, dm.train_episodes(0).query_x)
    plain = dm.train_episodes(7)
    dm.sources["train"].augment = lambda x, g: x + torch.rand((), generator=g)
    augmented = dm.train_episodes(7)
    for t in range(3):
        shift = torch.rand((), generator=generator(5, 7, t)) / 0.25  # normalised by std 0.25
        torch.testing.assert_close(augmented.query_x[t], plain.query_x[t] + shift)


def test_evaluation_task_streams_depend_on_eval_seed_split_and_episode_only():
    """Meta-RL's evaluation tasks carry the seed of their own random stream (action noise,
    resets): the same for an episode whichever batch (or rank) serves it, different for other
    episodes, splits and eval seeds, and different from the training tasks' streams even when
    seed equals eval_seed."""
    from helpers import compose
    from metalab.run.training import build_datamodule

    rl = ["dataset=nav2d", "algorithm=maml_rl", "backbone=policy", "algorithm.meta_batch=4"]

    def rl_datamodule(*overrides):
        dm = build_datamodule(compose([*rl, "val_episodes=4", "test_episodes=4", *overrides]))
        dm.load()
        return dm

    dm = rl_datamodule("seed=0", "eval_seed=0")
    seeds = dm.eval_episodes("test", torch.arange(4)).seeds
    assert len(set(seeds.tolist())) == 4
    assert dm.eval_episodes("test", torch.tensor([3])).seeds.tolist() == [seeds[3].item()]
    assert torch.equal(dm.eval_episodes("test", torch.tensor([2, 3])).seeds, seeds[2:])
    val = dm.eval_episodes("val", torch.arange(4)).seeds
    assert not set(val.tolist()) & set(seeds.tolist())
    train = dm.train_episodes(1).seeds  # step 1 = the val salt, tasks 0..3
    assert not set(train.tolist()) & set(val.tolist())
    other = rl_datamodule("seed=0", "eval_seed=1").eval_episodes("test", torch.arange(4)).seeds
    assert not set(other.tolist()) & set(seeds.tolist())

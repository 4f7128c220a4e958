"""The episode sampler: shapes, label remapping, disjointness, seeding, rank shares, checks."""

import pytest
import torch

from metalab.data.episodes import EpisodeShape
from metalab.data.sampler import ClassIndex, ImageEpisodes, generator
from metalab.data.tensors import ImageSplit
from metalab.errors import ConfigError


def make_split(n_classes=10, per_class=8, uneven=False):
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    if uneven:  # drop samples so class sizes differ
        labels = labels[(torch.arange(len(labels)) % 5 != 0) | (labels % 2 == 0)]
    # each image encodes its own index, so gathered pixels identify the sample
    ids = torch.arange(len(labels))
    images = torch.stack([ids % 256, ids // 256], 1).to(torch.uint8).view(-1, 1, 1, 2)
    return ImageSplit(images, labels, [f"c{i}" for i in range(n_classes)])


def sample_ids(episodes_x):
    x = episodes_x.round().long()  # mean 0, std 1: pixel values come back exactly
    return x[..., 0, 0, 0] + 256 * x[..., 0, 0, 1]


@pytest.mark.parametrize("uneven", [False, True])
def test_episodes_have_distinct_classes_and_disjoint_support_query(uneven):
    split = make_split(uneven=uneven)
    source = ImageEpisodes(split, mean=(0.0,), std=(1 / 255,))
    plan = source.plan(generator(0, 1), 8, 5, 2, 3)
    assert plan.shape == (8, 5, 5)
    ep = source.episodes(plan, shots=2)
    assert ep.support_x.shape == (8, 10, 1, 1, 2) and ep.query_x.shape == (8, 15, 1, 1, 2)
    s_ids, q_ids = sample_ids(ep.support_x), sample_ids(ep.query_x)
    for t in range(8):
        assert not set(s_ids[t].tolist()) & set(q_ids[t].tolist())
        task_classes = split.labels[torch.cat([s_ids[t], q_ids[t]])]
        assert len(set(task_classes.tolist())) == 5
        # labels are remapped to 0..ways-1, consistently between support and query
        for ids, y in ((s_ids[t], ep.support_y[t]), (q_ids[t], ep.query_y[t])):
            mapping = dict(zip(split.labels[ids].tolist(), y.tolist()))
            assert sorted(mapping.values()) == list(range(5))
            assert all(mapping[c] == y_ for c, y_ in zip(split.labels[ids].tolist(), y.tolist()))
    assert ep.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_same_seed_same_tasks_other_seed_other_tasks():
    index = ClassIndex(make_split().labels, 10)
    a = index.draw(generator(3, 7), 4, 5, 3)
    assert torch.equal(a, index.draw(generator(3, 7), 4, 5, 3))
    assert not torch.equal(a, index.draw(generator(3, 8), 4, 5, 3))
    assert not torch.equal(a, index.draw(generator(4, 7), 4, 5, 3))


def test_class_index_checks_feasibility():
    labels = make_split(n_classes=4, per_class=6, uneven=True).labels
    fewest = int(torch.bincount(labels).min())
    assert fewest < 6
    index = ClassIndex(labels, 4)
    with pytest.raises(ConfigError, match=r"dataset.ways=5: the test split has only 4 classes"):
        index.check("test", EpisodeShape(5, 1, 1))
    message = rf"train_shots \+ dataset.train_queries={fewest + 1}.*only {fewest} samples"
    with pytest.raises(ConfigError, match=message):
        index.check("train", EpisodeShape(3, 1, fewest, training=True))
    index.check("test", EpisodeShape(4, 1, fewest - 1))  # exactly enough is fine


def test_tasks_of_different_steps_differ():
    """Every (seed, step) has its own generator: no two of the first 1,000 steps (or seeds)
    draw the same tasks, as a small modulus in the seed mixing would make them."""
    firsts = {repr(torch.rand(2, generator=generator(0, step)).tolist()) for step in range(1000)}
    assert len(firsts) == 1000
    assert len({repr(torch.rand(2, generator=generator(s, 7)).tolist()) for s in range(50)}) == 50


def test_augment_gets_each_task_with_its_own_generator():
    split = make_split()
    source = ImageEpisodes(split, mean=(0.0,), std=(1 / 255,))
    plan = source.plan(generator(0, 1), 3, 5, 1, 2)
    plain = source.episodes(plan, shots=1, gens=[generator(9, t) for t in range(3)])
    torch.testing.assert_close(plain.query_x, source.episodes(plan, shots=1).query_x)
    seen = []

    def augment(x, g):  # x: one task's images [W*(S+Q), C, H, W] in [0, 1]
        seen.append(len(x))
        return x + torch.randint(1, 4, (), generator=g) / 255

    source.augment = augment
    shifted = source.episodes(plan, shots=1, gens=[generator(9, t) for t in range(3)])
    assert seen == [15, 15, 15]
    for t in range(3):  # each task moved by the draw of its own generator
        step = int(torch.randint(1, 4, (), generator=generator(9, t)))
        assert torch.equal(shifted.query_x[t].round(), plain.query_x[t].round() + step)
    assert torch.equal(source.episodes(plan, shots=1).query_x, plain.query_x)  # no gens: none


def test_a_task_needs_two_classes():
    index_source = ImageEpisodes(make_split(), mean=(0.0,), std=(1.0,), name="val")
    with pytest.raises(ConfigError) as err:
        index_source.check(EpisodeShape(1, 1, 1, training=True))
    assert str(err.value) == "dataset.train_ways=1: a classification task needs ways >= 2"


def test_tasks_take_only_their_allowed_classes():
    """``allowed`` (e.g. one domain per task): every task's classes are among its own."""
    index = ClassIndex(make_split().labels, 10)
    allowed = torch.zeros(6, 10, dtype=torch.bool)
    allowed[::2, :5] = True  # even tasks: classes 0-4, odd tasks: 5-9
    allowed[1::2, 5:] = True
    idx = index.draw(generator(2, 3), 6, 3, 2, allowed)
    classes = make_split().labels[idx]  # [T, ways, per_class]
    for t in range(6):
        assert set(classes[t].flatten().tolist()) <= set(allowed[t].nonzero()[:, 0].tolist())
        assert len(set(classes[t, :, 0].tolist())) == 3


def test_colour_images_are_normalised_per_channel():
    """x = (pixel / 255 - mean_c) / std_c, channel by channel, on 3-channel images."""
    labels = torch.arange(4).repeat_interleave(3)
    images = torch.randint(0, 256, (12, 3, 2, 2), generator=generator(5), dtype=torch.uint8)
    split = ImageSplit(images, labels, [f"c{i}" for i in range(4)])
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    source = ImageEpisodes(split, mean=mean, std=std)
    plan = source.plan(generator(0), 2, 4, 1, 2)
    ep = source.episodes(plan, shots=1)
    want = images[plan.flatten()].double() / 255
    want = (want - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    want = want.view(2, 4, 3, 3, 2, 2)  # [T, ways, shots + queries, C, H, W]
    torch.testing.assert_close(ep.support_x.double(), want[:, :, :1].flatten(1, 2))
    torch.testing.assert_close(ep.query_x.double(), want[:, :, 1:].flatten(1, 2))
    assert ep.query_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_two_ways_are_enough():
    source = ImageEpisodes(make_split(), mean=(0.0,), std=(1.0,))
    source.check(EpisodeShape(2, 1, 1, training=True))
    for what in ("ways", "shots", "queries"):
        sizes = dict(ways=2, shots=1, queries=1) | {what: 0}
        with pytest.raises(ConfigError) as err:
            source.check(EpisodeShape(**sizes))
        assert str(err.value) == f"dataset.{what}=0: must be a positive integer"


def test_tasks_draw_their_samples_independently_and_every_sample_can_be_drawn():
    """Each task draws its own samples of each class: two classes, 3 of 8 samples each, 40
    tasks give many different sets of a class's samples (one score draw shared by all tasks
    gives one set per class position: at most 2); and over the tasks every sample of the split is
    drawn, the split's first (index 0) included."""
    index = ClassIndex(make_split(n_classes=2).labels, 2)
    idx = index.draw(generator(1), 40, 2, 3)  # [T, ways, per_class]
    labels = make_split(n_classes=2).labels
    sets_of_class_0 = {tuple(sorted(t[labels[t[:, 0]] == 0].flatten().tolist())) for t in idx}
    assert len(sets_of_class_0) > 10  # of C(8, 3) = 56
    index = ClassIndex(make_split().labels, 10)
    drawn = index.draw(generator(2), 40, 10, 7)  # 7 of each class's 8 samples: one left out
    assert set(drawn.flatten().tolist()) == set(range(80))


def test_a_source_keeps_its_split_name_its_augment_and_its_generator():
    """The constructor's split name shows in the check's errors; its augment is applied to the
    episodes made with generators; a plan is the class index's draw from the given generator."""
    split = make_split()

    def augment(x, g):  # one pixel step up
        return x + 1 / 255

    source = ImageEpisodes(split, mean=(0.0,), std=(1 / 255,), name="val", augment=augment)
    with pytest.raises(ConfigError) as err:
        source.check(EpisodeShape(11, 1, 1))
    assert str(err.value) == "dataset.ways=11: the val split has only 10 classes"
    plan = source.plan(generator(4), 3, 5, 1, 2)
    assert torch.equal(plan, ClassIndex(split.labels, 10).draw(generator(4), 3, 5, 3))
    plain = source.episodes(plan, shots=1)
    assert source.to(torch.device("cpu")) is source  # the DataModule's device placement
    shifted = source.episodes(plan, shots=1, gens=[generator(t) for t in range(3)])
    assert torch.equal(shifted.query_x.round(), plain.query_x.round() + 1)

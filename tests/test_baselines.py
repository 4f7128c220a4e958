"""The no-learning reference points of every test evaluation: 1-nearest-neighbour on raw
pixels and on bags of words, against scikit-learn's nearest-neighbour classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalab.algorithms.baselines import (
    bag_of_words_nearest_neighbour,
    pixel_nearest_neighbour,
    raw_input_baselines,
)
from metalab.data.episodes import Episodes


def image_episodes(tasks=4, ways=3, shots=2, queries=5, shape=(2, 3, 4), seed=0) -> Episodes:
    """Noisy class templates, noisy enough that 1-NN gets some queries wrong: several
    channels and a non-square image, classes in a different order in support and query."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randn(tasks, ways, *shape, generator=g)
    ys = torch.arange(ways).repeat(shots).expand(tasks, -1)
    yq = torch.arange(ways).flip(0).repeat_interleave(queries).expand(tasks, -1)

    def draw(y):
        picked = torch.stack([templates[t, y[t]] for t in range(tasks)])
        return picked + 1.2 * torch.randn(picked.shape, generator=g)

    return Episodes(draw(ys), ys.clone(), draw(yq), yq.clone())


def test_pixel_baseline_is_scikit_learn_euclidean_1nn():
    from sklearn.neighbors import KNeighborsClassifier

    eps = image_episodes()
    ours = pixel_nearest_neighbour(eps)
    refs = []
    for t in range(eps.num_tasks):
        knn = KNeighborsClassifier(1, algorithm="brute").fit(
            eps.support_x[t].flatten(1).numpy(), eps.support_y[t].numpy()
        )
        refs.append(
            (knn.predict(eps.query_x[t].flatten(1).numpy()) == eps.query_y[t].numpy()).mean()
        )
    assert ours.shape == (eps.num_tasks,) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), refs, atol=1e-6)
    assert 0 < min(refs) < 1 and len(set(refs)) > 1  # the data tell right from wrong


def token_episodes(tasks=3, n_support=6, n_query=9, length=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 40, (tasks, n_support + n_query, length), generator=gen)
    ids[:, :, 5:] *= torch.randint(0, 2, (tasks, n_support + n_query, 2), generator=gen)  # pads
    y = torch.arange(n_support + n_query).remainder(3).expand(tasks, -1)
    return (
        ids,
        y,
        Episodes(ids[:, :n_support], y[:, :n_support], ids[:, n_support:], y[:, n_support:]),
    )


def test_bag_of_words_baseline_matches_scikit_learn():
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.neighbors import KNeighborsClassifier

    n_support = 6
    ids, y, eps = token_episodes(n_support=n_support)
    ours = bag_of_words_nearest_neighbour(eps)
    for t in range(eps.num_tasks):
        docs = [" ".join(f"t{i}" for i in row if i > 0) for row in ids[t].tolist()]
        counts = CountVectorizer(token_pattern=r"\S+").fit_transform(docs)
        knn = KNeighborsClassifier(1, metric="cosine", algorithm="brute")
        knn.fit(counts[:n_support], y[t, :n_support].numpy())
        ref = (knn.predict(counts[n_support:]) == y[t, n_support:].numpy()).mean()
        assert ours[t].item() == pytest.approx(ref)


def test_each_input_kind_gets_its_baseline():
    """Images: the pixel baseline; token ids: bag of words; regression (float points): none."""
    images = image_episodes(tasks=2)
    assert raw_input_baselines(images).keys() == {"pixel_1nn_acc"}
    assert torch.equal(
        raw_input_baselines(images)["pixel_1nn_acc"], pixel_nearest_neighbour(images)
    )
    _, _, tokens = token_episodes()
    assert raw_input_baselines(tokens).keys() == {"bow_1nn_acc"}
    assert torch.equal(
        raw_input_baselines(tokens)["bow_1nn_acc"], bag_of_words_nearest_neighbour(tokens)
    )
    x = torch.randn(2, 5, 1)
    assert raw_input_baselines(Episodes(x, x, x, x)) == {}


def test_padding_is_no_word():
    """Hand-made: the query "a" is nearest to "a b b b" (cosine 1/sqrt(10)), not to "c", with
    which it shares only padding (id 0); counted as a word, padding would make "c" nearest."""
    a, b, c = 5, 6, 7
    support = torch.tensor([[[a, b, b, b], [c, 0, 0, 0]]])
    query = torch.tensor([[[a, 0, 0, 0]]])
    eps = Episodes(support, torch.tensor([[0, 1]]), query, torch.tensor([[0]]))
    assert bag_of_words_nearest_neighbour(eps).tolist() == [1.0]

"""Prototypical Networks against a hand-computed prototype classifier; Meta-Baseline's cosine
variant against scikit-learn's cosine similarity."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics.pairwise import cosine_similarity

from metalab.algorithms.protonet import ProtoNet, prototype_logits
from metalab.backbones.conv4 import Conv4
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError


def test_prototype_logits_by_hand():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1, 1])  # prototypes (1, 0) and (0, 3)
    query = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    expected = -torch.tensor([[0.0 + 1.0, 1.0 + 4.0], [4.0 + 9.0, 9.0 + 0.0]])
    assert torch.allclose(prototype_logits(support, labels, query, 2), expected)


class Identity(torch.nn.Module):
    def embed(self, x):
        return x.flatten(1)


def test_protonet_predict_uses_each_task_own_prototypes():
    model = ProtoNet(backbone=lambda out_dim: Identity(), optimizer=None)
    g = torch.Generator().manual_seed(0)
    sx, qx = torch.randn(3, 6, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    sy = torch.tensor([0, 0, 1, 1, 2, 2]).expand(3, 6)
    logits = model.predict(Episodes(sx, sy, qx, torch.zeros(3, 5, dtype=torch.long)), False)
    for t in range(3):
        protos = sx[t].view(3, 2, 4).mean(1)
        assert torch.allclose(logits[t], -torch.cdist(qx[t], protos).pow(2), atol=1e-5)


@pytest.mark.parametrize("learn_scale", [True, False])
def test_cosine_protonet_is_meta_baselines_scaled_cosine_to_prototypes(learn_scale):
    """distance=cosine: the temperature times the cosine similarity (scikit-learn's) of each
    query to its task's class means; the temperature is trained unless learn_scale=false."""
    model = ProtoNet(
        backbone=lambda out_dim: Identity(),
        distance="cosine",
        scale=4.0,
        learn_scale=learn_scale,
        optimizer=None,
    )
    assert [n for n, _ in model.named_parameters()] == (["scale"] if learn_scale else [])
    assert list(model.state_dict()) == ["scale"]
    g = torch.Generator().manual_seed(1)
    sx, qx = torch.randn(2, 6, 4, generator=g), torch.randn(2, 5, 4, generator=g)
    sy = torch.tensor([0, 1, 2, 0, 1, 2]).expand(2, 6)
    logits = model.predict(Episodes(sx, sy, qx, torch.zeros(2, 5, dtype=torch.long)), False)
    for t in range(2):
        protos = torch.stack([sx[t][sy[t] == c].mean(0) for c in range(3)])
        want = 4.0 * cosine_similarity(qx[t].numpy(), protos.numpy())
        np.testing.assert_allclose(logits[t].detach().numpy(), want, rtol=1e-5, atol=1e-6)


def test_unknown_distance_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        ProtoNet(backbone=lambda out_dim: Identity(), distance="manhattan", optimizer=None)
    assert str(err.value) == "algorithm.distance=manhattan: allowed: euclidean, cosine"


def test_training_embeds_support_and_queries_in_one_batch_under_any_protocol():
    """Training predicts as the papers train: with batch norm, the statistics of a task's support
    and query sets in one batch, also when evaluation is inductive (support statistics only,
    which gives other logits here); the meta-loss is the cross-entropy of those logits."""
    torch.manual_seed(0)
    backbone = functools.partial(Conv4, (1, 8, 8), hidden=4, layers=2)
    model = ProtoNet(backbone=backbone, protocol="inductive", optimizer=None)
    g = torch.Generator().manual_seed(2)
    sx, qx = torch.randn(2, 6, 1, 8, 8, generator=g), torch.randn(2, 4, 1, 8, 8, generator=g)
    sy, qy = torch.tensor([0, 0, 1, 1, 2, 2]).expand(2, 6), torch.tensor([0, 1, 2, 0]).expand(2, 4)
    eps = Episodes(sx, sy, qx, qy)
    want = []
    for t in range(2):  # by hand: one forward of [support, queries], class means, distances
        z = model.net.embed(torch.cat([sx[t], qx[t]]))
        want.append(-torch.cdist(z[6:], z[:6].view(3, 2, -1).mean(1)).pow(2))
    want = torch.stack(want)
    torch.testing.assert_close(model.predict(eps, training=True), want, rtol=1e-4, atol=1e-4)
    loss, _ = model.meta_loss(eps)
    torch.testing.assert_close(loss, F.cross_entropy(want.flatten(0, 1), qy.flatten()))
    assert not torch.allclose(model.predict(eps, training=False), want, atol=1e-2)

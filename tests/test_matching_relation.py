"""Matching and Relation Networks: forward outputs equal easyfsl's implementations given the
same backbone and the same weights (easyfsl is used only here, as the reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from easyfsl.methods import MatchingNetworks as EasyMatching
from easyfsl.methods import RelationNetworks as EasyRelation
from easyfsl.modules.predesigned_modules import default_relation_module
from torch import nn

from metalab.algorithms.matching import MatchingNetworks
from metalab.algorithms.relation import RelationNetworks
from metalab.backbones.base import Backbone, batch_norm
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError

WAYS, SHOTS, QUERIES, SHAPE = 4, 3, 2, (1, 8, 8)


def backbone(out_dim=None) -> Backbone:
    """A conv backbone without batch norm: easyfsl embeds support and query sets in separate
    forwards, metalab in one, which only batch statistics could tell apart."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    return Backbone(features, SHAPE, out_dim)


def episode(seed=0) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(1, WAYS * SHOTS, *SHAPE, generator=g)
    qx = torch.randn(1, WAYS * QUERIES, *SHAPE, generator=g)
    sy = torch.arange(WAYS).repeat_interleave(SHOTS)[None]
    qy = torch.arange(WAYS).repeat(QUERIES)[None]
    return Episodes(sx, sy, qx, qy)


def reference(model: nn.Module, ep: Episodes) -> torch.Tensor:
    model.process_support_set(ep.support_x[0], ep.support_y[0])
    return model(ep.query_x[0])


@pytest.mark.parametrize("fce", [False, True])
def test_matching_networks_equal_easyfsl(fce):
    torch.manual_seed(1)
    ours = MatchingNetworks(backbone, fce=fce, optimizer=None)
    dim = ours.net.feature_dim
    if fce:  # the same encoders, the same weights
        theirs = EasyMatching(nn.Sequential(ours.net.features, nn.Flatten()), feature_dimension=dim)
        theirs.support_features_encoder.load_state_dict(ours.support_encoder.state_dict())
        theirs.query_features_encoding_cell.load_state_dict(ours.query_encoder.state_dict())
    else:  # encoders that add nothing: easyfsl's contextualisation becomes the identity
        theirs = EasyMatching(
            nn.Sequential(ours.net.features, nn.Flatten()),
            feature_dimension=dim,
            support_encoder=Zeros(2 * dim),
            query_encoder=ZeroCell(),
        )
    ep = episode()
    expected = reference(theirs, ep)
    got = ours.predict(ep, training=False)[0]
    assert expected.shape == got.shape == (WAYS * QUERIES, WAYS)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the scores are log-probabilities: cross-entropy on them is the negative log-likelihood
    assert torch.allclose(got.exp().sum(1), torch.ones(len(got)), atol=1e-4)


class Zeros(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.width = width

    def forward(self, x):
        return (x.new_zeros(*x.shape[:-1], self.width),)


class ZeroCell(nn.Module):
    def forward(self, x, state):
        return torch.zeros_like(state[0]), state[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_relation_networks_equal_easyfsl(dtype):
    torch.manual_seed(2)
    ours = RelationNetworks(backbone, hidden=5, optimizer=None)
    module = default_relation_module(6, inner_channels=5)
    # the same layers: easyfsl's batch norms also keep running statistics, unused in train mode
    missing, unexpected = module.load_state_dict(ours.relation.state_dict(), strict=False)
    assert not unexpected and all("running" in k or "num_batches" in k for k in missing)
    theirs = EasyRelation(ours.net.features, feature_dimension=6, relation_module=module).train()
    ours.to(dtype)  # a network in float64 scores in float64
    theirs.to(dtype)
    ep = episode(seed=3)
    ep = Episodes(ep.support_x.to(dtype), ep.support_y, ep.query_x.to(dtype), ep.query_y)
    expected = reference(theirs, ep)
    got = ours.predict(ep, training=True)[0]
    assert got.shape == (WAYS * QUERIES, WAYS)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # the loss is the paper's mean squared error to the one-hot labels
    metrics = ours.task_metrics(got[None], ep.query_y)
    onehot = F.one_hot(ep.query_y[0], WAYS).to(dtype)
    assert got.dtype == metrics["loss"].dtype == dtype
    torch.testing.assert_close(metrics["loss"][0], F.mse_loss(got, onehot))
    assert metrics["acc"][0] == (got.argmax(1) == ep.query_y[0]).float().mean()


def test_relation_networks_need_a_backbone_that_keeps_feature_maps():
    from metalab.backbones.conv4 import Conv4
    from metalab.backbones.external import TimmBackbone
    from metalab.backbones.mlp import MLP

    class Maps(Backbone):  # not an image backbone, but one that says it keeps its maps
        inputs, feature_maps = ("text",), True

    for backbone in (Conv4, Maps):
        RelationNetworks.check_backbone(backbone, "ok")
    for backbone, name in ((MLP, "mlp"), (TimmBackbone, "timm"), (len, "len")):
        with pytest.raises(ConfigError) as err:
            RelationNetworks.check_backbone(backbone, name)
        assert (err.value.key, err.value.value, err.value.allowed) == (
            "backbone",
            name,
            "Relation Networks compare feature maps: they need a "
            "convolutional backbone (conv4, resnet12, wrn, resnet18)",
        )


def test_relation_networks_need_a_positive_hidden_width():
    with pytest.raises(ConfigError) as err:
        RelationNetworks(backbone, hidden=0, optimizer=None)
    assert (err.value.key, err.value.value) == ("algorithm.hidden", 0)


def test_training_embeds_support_and_queries_in_one_batch_under_any_protocol():
    """Training predicts as the papers train: with batch norm, the statistics of a task's support
    and query sets in one batch, also when evaluation is inductive (support statistics only,
    which gives other scores here). By hand: Matching Networks' attention over that batch."""

    def bn_backbone(out_dim=None) -> Backbone:
        torch.manual_seed(0)
        features = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), batch_norm(6), nn.MaxPool2d(2))
        return Backbone(features, SHAPE, out_dim)

    model = MatchingNetworks(bn_backbone, protocol="inductive", optimizer=None)
    ep = episode()
    z = model.net.embed(torch.cat([ep.support_x[0], ep.query_x[0]]))
    zs, zq = z[: WAYS * SHOTS], z[WAYS * SHOTS :]
    attention = torch.softmax(zq @ F.normalize(zs, dim=1).T, dim=1)
    want = (attention @ F.one_hot(ep.support_y[0], WAYS).float() + 1e-6).log()
    torch.testing.assert_close(model.predict(ep, training=True)[0], want)
    assert not torch.allclose(model.predict(ep, training=False)[0], want, atol=1e-2)

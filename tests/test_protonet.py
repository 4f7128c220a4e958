"""Prototypical Networks against a hand-computed prototype classifier."""

import torch

from metalab.algorithms.protonet import ProtoNet, prototype_logits
from metalab.data.episodes import Episodes


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

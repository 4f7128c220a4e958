"""ANIL: its meta-gradients equal learn2learn's MAML wrapped around the head alone, with the
backbone's features computed outside it (float64, both engines, first and second order)."""

from __future__ import annotations

from functools import partial

import learn2learn as l2l
import pytest
import torch
import torch.nn.functional as F

from helpers.tasks import (
    _float64_one_thread,  # noqa: F401  (autouse: float64, one thread)
    assert_same,
    image_tasks,
    query_loss,
    record_engines,
    sine_tasks,
)
from metalab.algorithms.anil import ANIL
from metalab.backbones.conv4 import Conv4
from metalab.backbones.mlp import MLP
from metalab.data.episodes import Episodes

CASES = {
    "conv4": (partial(Conv4, (1, 28, 28), hidden=8), 5, "classification", image_tasks),
    "mlp": (partial(MLP, (1,), hidden=(40, 40)), 1, "regression", sine_tasks),
}


def anil(case: str, **kwargs) -> ANIL:
    backbone, ways, task, _ = CASES[case]
    torch.manual_seed(0)
    return ANIL(backbone, ways=ways, task=task, optimizer=None, inner_lr=0.4, **kwargs)


def reference_grad(model: ANIL, task: str, tasks, steps: int, first_order: bool):
    """learn2learn's MAML around the head; features from the backbone, outside of it."""
    sx, sy, qx, qy = tasks
    net = model.net
    maml = l2l.algorithms.MAML(net.head, lr=model.inner_lr, first_order=first_order)
    preds = []
    for i in range(len(sx)):
        support, query = net.embed(sx[i]), net.embed(qx[i])
        learner = maml.clone()
        for _ in range(steps):
            learner.adapt(query_loss(task, learner(support)[None], sy[i][None]))
        preds.append(learner(query))
    loss = query_loss(task, torch.stack(preds), qy)
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(net.parameters()))])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_equals_learn2learn_maml_around_the_head(case, first_order, steps):
    task, data = CASES[case][2], CASES[case][3]
    tasks = data()
    model = anil(case, inner_steps=steps, first_order=first_order)
    reference = reference_grad(model, task, tasks, steps, first_order)
    backbone = sum(p.numel() for p in model.net.features.parameters())
    assert reference[:backbone].norm() > 0  # the backbone learns through the features
    for engine in ("loop", "vmap"):
        model.engine = engine
        preds = model.predict(Episodes(*tasks), training=True)
        loss = query_loss(task, preds, tasks[3])
        grads = torch.autograd.grad(loss, list(model.net.parameters()))
        got = torch.cat([g.flatten() for g in grads])
        assert_same(got, reference)


def test_only_the_head_is_adapted_and_evaluation_is_detached():
    sx, sy, qx, qy = tasks = image_tasks()
    model = anil("conv4", eval_inner_steps=2, inner_steps=2, eval_ways=5)
    trained = model.predict(Episodes(*tasks), training=True)
    with torch.no_grad():
        evaluated = model.predict(Episodes(*tasks), training=False)
    assert evaluated.grad_fn is None
    torch.testing.assert_close(evaluated, trained.detach(), rtol=1e-10, atol=1e-10)
    # by hand: two SGD steps on the head's weights over the task's fixed features
    net, i = model.net, 1
    with torch.no_grad():
        support, query = net.embed(sx[i]), net.embed(qx[i])
    w, b = (p.detach().clone().requires_grad_() for p in (net.head.weight, net.head.bias))
    for _ in range(2):
        gw, gb = torch.autograd.grad(F.cross_entropy(support @ w.T + b, sy[i]), (w, b))
        w, b = w - 0.4 * gw, b - 0.4 * gb
    torch.testing.assert_close(evaluated[i], query @ w.T + b, rtol=1e-10, atol=1e-10)


def test_inductive_evaluation_normalises_queries_with_the_support_statistics():
    """protocol=inductive: the queries' features take each batch norm's mean and variance of the
    support set alone (by hand, block by block), and the head adapted on the support features
    scores them; a query's scores do not depend on the other queries."""
    torch.manual_seed(0)
    backbone = partial(Conv4, (1, 8, 8), hidden=4, layers=2)
    settings = dict(ways=3, inner_lr=0.4, inner_steps=1, eval_inner_steps=1, protocol="inductive")
    model = ANIL(backbone, optimizer=None, **settings)
    g = torch.Generator().manual_seed(4)
    sx, qx = torch.randn(1, 3, 1, 8, 8, generator=g), torch.randn(1, 6, 1, 8, 8, generator=g)
    sy = torch.arange(3)
    episodes = Episodes(sx, sy[None], qx, sy.repeat(2)[None])
    got = model.predict(episodes, training=False)[0]
    with torch.no_grad():
        x = torch.cat([sx[0], qx[0]])
        for conv, bn, relu, pool in model.net.features:
            x = conv(x)
            mean = x[:3].mean((0, 2, 3), keepdim=True)
            var = x[:3].var((0, 2, 3), unbiased=False, keepdim=True)
            x = (x - mean) / (var + bn.eps).sqrt()
            x = x * bn.weight[:, None, None] + bn.bias[:, None, None]
            x = pool(relu(x))
        query, support = x[3:].flatten(1), model.net.embed(sx[0])
    head = model.net.head
    w, b = (p.detach().clone().requires_grad_() for p in (head.weight, head.bias))
    gw, gb = torch.autograd.grad(F.cross_entropy(support @ w.T + b, sy), (w, b))
    torch.testing.assert_close(got, query @ (w - 0.4 * gw).T + b - 0.4 * gb)
    alone = model.predict(Episodes(sx, sy[None], qx[:, :1], sy[None, :1]), training=False)[0]
    torch.testing.assert_close(alone, got[:1])
    # training (one inner step too) predicts as the paper trains: the query set alone
    query = model.net.embed(qx[0]).detach()
    trained = model.predict(episodes, training=True)[0].detach()
    torch.testing.assert_close(trained, query @ (w - 0.4 * gw).T + b - 0.4 * gb)


def test_the_configured_engine_runs_the_inner_loop(monkeypatch):
    engines = record_engines(monkeypatch)
    model = anil("mlp", engine="loop")
    tasks = Episodes(*sine_tasks())
    model.predict(tasks, training=True)
    model.predict(tasks, training=False)
    assert engines == ["loop", "loop"]

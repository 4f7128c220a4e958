"""Random few-shot tasks as plain tensors (images, sinusoids) for the inner-loop and algorithm
tests, their query loss, and a float64 one-thread fixture for gradient comparisons."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.algorithms.inner_loop import SGD, InnerLoop


@pytest.fixture(autouse=True)
def _float64_one_thread():
    # one intra-op thread: small kernels on a shared 2-core machine stall on thread hand-offs
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def image_tasks(num_tasks=3, ways=5, shots=1, queries=3, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(num_tasks, ways * shots, 1, size, size, generator=g)
    qx = torch.randn(num_tasks, ways * queries, 1, size, size, generator=g)
    sy = torch.arange(ways).repeat_interleave(shots).expand(num_tasks, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(num_tasks, -1).contiguous()
    return sx, sy, qx, qy


def sine_tasks(num_tasks=4, shots=10, queries=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    amp = 0.1 + 4.9 * torch.rand(num_tasks, 1, 1, generator=g)
    phase = torch.pi * torch.rand(num_tasks, 1, 1, generator=g)
    x = 10 * torch.rand(num_tasks, shots + queries, 1, generator=g) - 5
    y = amp * torch.sin(x - phase)
    return x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:]


def query_loss(task, preds, qy):
    if task == "regression":
        return F.mse_loss(preds, qy)
    return F.cross_entropy(preds.flatten(0, 1), qy.flatten())


def assert_same(actual, expected, rtol=1e-6):
    err = (actual - expected).norm() / expected.norm()
    assert err < rtol, f"relative error {err:.2e}"
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * expected.abs().max())


def meta_grad(net, task, tasks, engine, mode, steps=1, lr=0.4, lrs=None):
    """Flat meta-gradient of the mean query loss wrt the initial parameters (and lrs)."""
    sx, sy, qx, qy = tasks
    inner = InnerLoop(net, task)
    net.zero_grad(set_to_none=True)
    preds, _ = inner.run(inner.params(), sx, sy, qx, steps, SGD(lrs or lr), mode, engine)
    loss = query_loss(task, preds, qy)
    wrt = list(net.parameters()) + (list(lrs.values()) if lrs else [])
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, wrt)])


def record_engines(monkeypatch) -> list[str]:
    """The engine of each ``InnerLoop.run`` call from now on (the calls go through)."""
    engines = []
    run_inner = InnerLoop.run
    monkeypatch.setattr(
        InnerLoop,
        "run",
        lambda self, *args, **kwargs: engines.append(args[7]) or run_inner(self, *args, **kwargs),
    )  # params, support, support_y, query, steps, rule, mode, engine
    return engines


def assert_training_predicts_the_query_set_alone(learner, **kwargs) -> None:
    """Training adapts and predicts as the papers train: with a batch-norm backbone, the adapted
    network takes the statistics of the query set alone, also when evaluation is inductive
    (support statistics, which give other predictions here). By hand: one torch.optim.SGD step
    of a copy on the support set, then the query set forwarded alone."""
    import copy
    import functools

    from metalab.backbones.conv4 import Conv4
    from metalab.data.episodes import Episodes

    torch.manual_seed(0)
    model = learner(
        backbone=functools.partial(Conv4, (1, 8, 8), hidden=4, layers=2),
        optimizer=None,
        ways=3,
        inner_lr=0.5,
        inner_steps=1,
        eval_inner_steps=1,
        protocol="inductive",
        **kwargs,
    )
    g = torch.Generator().manual_seed(3)
    sx, qx = torch.randn(1, 3, 1, 8, 8, generator=g), torch.randn(1, 6, 1, 8, 8, generator=g)
    episodes = Episodes(sx, torch.arange(3)[None], qx, torch.arange(3).repeat(2)[None])
    clone = copy.deepcopy(model.net)
    opt = torch.optim.SGD(clone.parameters(), lr=0.5)
    F.cross_entropy(clone(sx[0]), episodes.support_y[0]).backward()
    opt.step()
    with torch.no_grad():
        want = clone(qx[0])
    torch.testing.assert_close(model.predict(episodes, training=True)[0].detach(), want)
    evaluated = model.predict(episodes, training=False)[0].detach()
    assert not torch.allclose(evaluated, want, atol=1e-2)

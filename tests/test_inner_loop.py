"""The inner-loop engine: meta-gradients of ``loop`` and ``vmap`` against learn2learn's MAML and
against finite differences (float64), update rules against torch.optim, detached evaluation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.tasks import (
    _float64_one_thread,  # noqa: F401  (autouse: float64, one thread)
    assert_same,
    image_tasks,
    meta_grad,
    query_loss,
    sine_tasks,
)
from metalab.algorithms.inner_loop import CPU_ENGINE, SGD, Adam, InnerLoop, Mode, resolve_engine
from metalab.backbones.conv4 import Conv4
from metalab.backbones.mlp import MLP
from metalab.errors import ConfigError

ENGINES = ("loop", "fused", "vmap")


CASES = {
    "conv4": (lambda: Conv4((1, 28, 28), out_dim=5, hidden=8), "classification", image_tasks),
    "mlp": (lambda: MLP((1,), out_dim=1, hidden=(40, 40)), "regression", sine_tasks),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("mode", [Mode.SECOND_ORDER, Mode.FIRST_ORDER])
@pytest.mark.parametrize("steps", [1, 2])
def test_meta_gradient_equals_learn2learn(case, mode, steps):
    make, task, data = CASES[case]
    torch.manual_seed(0)
    net, tasks = make(), data()
    reference = meta_grad(net, task, tasks, "learn2learn", mode, steps)
    assert reference.norm() > 0
    for engine in ENGINES:
        assert_same(meta_grad(net, task, tasks, engine, mode, steps), reference)


def test_second_order_meta_gradient_matches_finite_differences():
    """Central differences of the post-adaptation query loss wrt the initial parameters and
    the (Meta-SGD) inner learning rates: the second-order term is right, and it matters."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1))
    tasks = sine_tasks(num_tasks=2, shots=5, queries=5)
    lrs = {
        k: torch.full_like(p, 0.05).add_(0.01 * torch.rand_like(p)).requires_grad_()
        for k, p in net.named_parameters()
    }
    sx, sy, qx, qy = tasks
    inner = InnerLoop(net, "regression")

    def loss_at() -> float:
        with torch.no_grad():
            preds, _ = inner.run(inner.params(), sx, sy, qx, 2, SGD(lrs), Mode.DETACHED, "loop")
        return query_loss("regression", preds, qy).item()

    numeric = []
    for t in [*net.parameters(), *lrs.values()]:
        flat = t.data.view(-1)
        for i in range(flat.numel()):
            old, eps = flat[i].item(), 1e-6
            flat[i] = old + eps
            up = loss_at()
            flat[i] = old - eps
            down = loss_at()
            flat[i] = old
            numeric.append((up - down) / (2 * eps))
    numeric = torch.tensor(numeric)
    for engine in ENGINES:
        analytic = meta_grad(net, "regression", tasks, engine, Mode.SECOND_ORDER, 2, lrs=lrs)
        assert_same(analytic, numeric)
    first_order = meta_grad(net, "regression", tasks, "loop", Mode.FIRST_ORDER, 2, lrs=lrs)
    assert (first_order - numeric).norm() / numeric.norm() > 1e-3


@pytest.mark.parametrize("engine", ENGINES)
def test_meta_sgd_meta_gradient_equals_learn2learn_meta_sgd(engine):
    """Meta-SGD: the gradient wrt the initial parameters and the learned per-entry rates equals
    learn2learn's MetaSGD (the same rates), two inner steps, float64."""
    import learn2learn as l2l

    torch.manual_seed(0)
    net, tasks = CASES["conv4"][0](), image_tasks()
    lrs = {k: (0.2 + 0.2 * torch.rand_like(p)).requires_grad_() for k, p in net.named_parameters()}
    got = meta_grad(net, "classification", tasks, engine, Mode.SECOND_ORDER, 2, lrs=lrs)
    sx, sy, qx, qy = tasks
    meta = l2l.algorithms.MetaSGD(
        copy.deepcopy(net),
        lrs=nn.ParameterList([nn.Parameter(lr.detach().clone()) for lr in lrs.values()]),
    )
    losses = []
    for i in range(sx.shape[0]):
        learner = meta.clone()
        for _ in range(2):
            learner.adapt(F.cross_entropy(learner(sx[i]), sy[i]))
        losses.append(F.cross_entropy(learner(qx[i]), qy[i], reduction="none"))
    want = torch.autograd.grad(torch.cat(losses).mean(), list(meta.parameters()))
    assert_same(got, torch.cat([g.flatten() for g in want]))


@pytest.mark.parametrize("engine", [*ENGINES, "learn2learn"])
def test_detached_evaluation_builds_no_graph_and_works_under_no_grad(engine):
    torch.manual_seed(0)
    net = CASES["conv4"][0]()
    sx, sy, qx, _ = image_tasks()
    inner = InnerLoop(net)
    expected, _ = inner.run(inner.params(), sx, sy, qx, 2, SGD(0.4), Mode.SECOND_ORDER, engine)
    with torch.no_grad():
        preds, _ = inner.run(inner.params(), sx, sy, qx, 2, SGD(0.4), Mode.DETACHED, engine)
    # and with gradients enabled: detached all the same
    outside, adapted = inner.run(inner.params(), sx, sy, qx, 2, SGD(0.4), Mode.DETACHED, engine)
    assert adapted is None  # not asked for
    for out in (preds, outside):
        assert out.grad_fn is None and not out.requires_grad
        torch.testing.assert_close(out, expected.detach(), rtol=1e-10, atol=1e-10)
    assert all(p.grad is None for p in net.parameters())


@pytest.mark.parametrize("mode", [Mode.DETACHED, Mode.SECOND_ORDER])
@pytest.mark.parametrize("betas", [(0.0, 0.999), (0.9, 0.99)])
@pytest.mark.parametrize("engine", ENGINES)
def test_adam_rule_equals_torch_adam_with_fresh_state_per_task(engine, betas, mode):
    torch.manual_seed(0)
    net = MLP((1,), out_dim=1, hidden=(8,))
    sx, sy, qx, qy = sine_tasks(num_tasks=3)
    inner = InnerLoop(net, "regression")
    _, adapted = inner.run(
        inner.params(), sx, sy, qx, 4, Adam(0.01, betas), mode, engine, return_params=True
    )
    adapted = {k: v.detach() for k, v in adapted.items()}
    for i in range(3):
        clone = copy.deepcopy(net)
        opt = torch.optim.Adam(clone.parameters(), lr=0.01, betas=betas, eps=1e-8)
        for _ in range(4):
            opt.zero_grad()
            F.mse_loss(clone(sx[i]), sy[i]).backward()
            opt.step()
        for name, p in clone.named_parameters():
            torch.testing.assert_close(adapted[name][i], p.detach(), rtol=1e-10, atol=1e-12)


def test_minibatches_and_returned_parameters_agree_between_engines():
    torch.manual_seed(0)
    net = MLP((1,), out_dim=1, hidden=(16,))
    sx, sy, qx, _ = sine_tasks()
    batches = [torch.tensor([0, 3, 5]), torch.tensor([1, 2, 9]), torch.tensor([4, 6, 7])]
    inner = InnerLoop(net, "regression")
    out = {
        e: inner.run(
            inner.params(),
            sx,
            sy,
            qx,
            3,
            SGD(0.05),
            Mode.DETACHED,
            e,
            batches=batches,
            return_params=True,
        )
        for e in ENGINES
    }
    torch.testing.assert_close(out["vmap"][0], out["loop"][0], rtol=1e-10, atol=1e-12)
    for name in out["loop"][1]:
        torch.testing.assert_close(
            out["vmap"][1][name], out["loop"][1][name], rtol=1e-10, atol=1e-12
        )
    # by hand, task 0: SGD on the chosen support points only
    clone = copy.deepcopy(net)
    opt = torch.optim.SGD(clone.parameters(), lr=0.05)
    for idx in batches:
        opt.zero_grad()
        F.mse_loss(clone(sx[0][idx]), sy[0][idx]).backward()
        opt.step()
    for name, p in clone.named_parameters():
        torch.testing.assert_close(out["loop"][1][name][0], p.detach(), rtol=1e-10, atol=1e-12)


def test_engine_choice():
    assert resolve_engine("auto", torch.device("cuda")) == "vmap"
    assert resolve_engine("auto", torch.device("cpu")) == CPU_ENGINE
    assert resolve_engine("vmap", torch.device("cpu")) == "vmap"
    with pytest.raises(ConfigError) as err:
        resolve_engine("jax", torch.device("cpu"))
    assert str(err.value) == ("algorithm.engine=jax: allowed: auto, loop, fused, vmap, learn2learn")
    with pytest.raises(ConfigError) as err:
        resolve_engine("vmap", torch.device("cpu"), checkpoint=True)
    assert str(err.value) == (
        "algorithm.checkpoint=True: checkpointing needs a per-task engine: loop, fused or auto"
    )
    assert err.value.value is True


def test_run_checks_its_engine_and_picks_auto_by_default():
    torch.manual_seed(0)
    inner = InnerLoop(MLP((1,), out_dim=1, hidden=(4,)), "regression")
    sx, sy, qx, _ = sine_tasks(num_tasks=2)
    batches = [torch.tensor([0, 1])]
    lrs = {k: torch.full_like(p, 0.1) for k, p in inner.params().items()}
    refused = {  # learn2learn runs plain MAML only
        "adam": dict(rule=Adam(0.1)),
        "learned rates": dict(rule=SGD(lrs)),
        "minibatches": dict(rule=SGD(0.1), batches=batches),
        "adapted parameters": dict(rule=SGD(0.1), return_params=True),
    }
    for case, kwargs in refused.items():
        with pytest.raises(ConfigError) as err:
            inner.run(
                inner.params(), sx, sy, qx, 1, mode=Mode.DETACHED, engine="learn2learn", **kwargs
            )
        assert str(err.value) == (
            "algorithm.engine=learn2learn: "
            "learn2learn runs plain MAML (SGD, one learning rate) only"
        ), case
    with pytest.raises(ConfigError, match="algorithm.checkpoint=True"):
        inner.run(
            inner.params(), sx, sy, qx, 1, SGD(0.1), Mode.SECOND_ORDER, "vmap", checkpoint=True
        )
    # the default engine, auto: the same predictions as the loop (and no parameters unasked)
    want, _ = inner.run(inner.params(), sx, sy, qx, 2, SGD(0.1), Mode.DETACHED, "loop")
    got, adapted = inner.run(inner.params(), sx, sy, qx, 2, SGD(0.1), Mode.DETACHED)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert adapted is None


@pytest.mark.parametrize("affine", [False, True])
def test_composite_layer_norm_equals_torch_layer_norm(affine):
    """The layer norm that CompositeBatchNorm puts in place of the fused kernel (exact under
    vmap's second derivatives) gives torch's values, over the last one or two dims (float64)."""
    from metalab.algorithms.inner_loop import CompositeBatchNorm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64) * 3 + 1
    for shape, eps in (((5,), 1e-5), ((4, 5), 0.5)):
        weight = torch.randn(shape, generator=g, dtype=torch.float64) if affine else None
        bias = torch.randn(shape, generator=g, dtype=torch.float64) if affine else None
        expected = F.layer_norm(x, shape, weight, bias, eps)
        with CompositeBatchNorm():
            out = F.layer_norm(x, shape, weight, bias, eps)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dims", [2, 3, 4])
def test_composite_batch_norm_equals_torch_batch_norm(affine, dims):
    """The batch norm that CompositeBatchNorm puts in place of the fused kernel gives torch's
    values on batch statistics (training, or no running statistics) and on running statistics
    (evaluation), and leaves updating running statistics to torch (float64)."""
    from metalab.algorithms.inner_loop import CompositeBatchNorm

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, *(4,) * (dims - 2), generator=g) * 3 + 1
    weight = torch.randn(3, generator=g) if affine else None
    bias = torch.randn(3, generator=g) if affine else None
    mean, var = torch.randn(3, generator=g), torch.rand(3, generator=g) + 0.5
    eps = 0.5
    # batch statistics: torch computes them in training mode; without running statistics the
    # composite takes them in evaluation mode too (nn.BatchNorm with track_running_stats=False)
    expected = F.batch_norm(x, None, None, weight, bias, True, 0.3, eps)
    for training in (True, False):
        with CompositeBatchNorm():
            out = F.batch_norm(x, None, None, weight, bias, training, 0.3, eps)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    expected = F.batch_norm(x, mean, var, weight, bias, False, 0.3, eps)
    with CompositeBatchNorm():
        out = F.batch_norm(x, mean, var, weight=weight, bias=bias, training=False, eps=eps)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # training with running statistics: torch's kernel, which also updates them
    ours, theirs = (mean.clone(), var.clone()), (mean.clone(), var.clone())
    expected = F.batch_norm(x, *theirs, weight, bias, True, 0.3, eps)
    with CompositeBatchNorm():
        out = F.batch_norm(x, *ours, weight, bias, True, 0.3, eps)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    assert not torch.equal(ours[0], mean)  # they were updated


def l2l_meta_gradient(net, tasks, mode, steps, lr, batches=None, features=None, wrt=()):
    """learn2learn's MAML on each task alone: the mean query MSE after ``steps`` SGD steps (on
    ``batches[t]`` of the support set at step t, if given) and its gradient wrt the network's
    parameters and ``wrt`` (``features``: a function the inputs first go through)."""
    import learn2learn as l2l

    sx, sy, qx, qy = tasks
    maml = l2l.algorithms.MAML(net, lr=lr, first_order=mode is not Mode.SECOND_ORDER)
    features = features or (lambda x: x)
    losses = []
    for i in range(sx.shape[0]):
        learner, x, y = maml.clone(), features(sx[i]), sy[i]
        for t in range(steps):
            rows = slice(None) if batches is None else batches[t]
            learner.adapt(F.mse_loss(learner(x[rows]), y[rows]))
        losses.append(F.mse_loss(learner(features(qx[i])), qy[i]))
    loss = torch.stack(losses).mean()
    grads = torch.autograd.grad(loss, [*net.parameters(), *wrt])
    return torch.cat([g.flatten() for g in grads])


def inner_meta_gradient(net, tasks, engine, mode, steps, lr, batches=None, features=None, wrt=()):
    """The same with InnerLoop.run (the mean of the per-task query MSEs: equal query sets)."""
    sx, sy, qx, qy = tasks
    features = features or (lambda x: x)
    inner = InnerLoop(net, "regression")
    preds, _ = inner.run(
        inner.params(),
        features(sx),
        sy,
        features(qx),
        steps,
        SGD(lr),
        mode,
        engine,
        batches=batches,
    )
    grads = torch.autograd.grad(F.mse_loss(preds, qy), [*net.parameters(), *wrt])
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("mode", [Mode.SECOND_ORDER, Mode.FIRST_ORDER])
def test_minibatch_meta_gradient_equals_learn2learn(mode):
    """Support minibatches (``batches[t]`` at step t) in the meta-gradient, the fused engine's
    first step included, against learn2learn adapting on the same rows."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 12), nn.Tanh(), nn.Linear(12, 1))
    tasks = sine_tasks(num_tasks=3)
    batches = [torch.tensor([0, 3, 5]), torch.tensor([1, 2, 9]), torch.tensor([4, 6, 7, 8])]
    want = l2l_meta_gradient(net, tasks, mode, 3, 0.05, batches)
    for engine in ENGINES:
        assert_same(inner_meta_gradient(net, tasks, engine, mode, 3, 0.05, batches), want)


def test_meta_gradient_through_inputs_with_a_graph_equals_learn2learn():
    """ANIL's case: the adapted network's inputs are features computed from parameters of the
    outer graph; the second-order meta-gradient wrt those parameters (through the inner
    gradients too) against learn2learn."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    body = nn.Linear(1, 6)
    tasks = sine_tasks(num_tasks=3)

    def features(x):
        return torch.tanh(body(x))

    wrt = list(body.parameters())
    want = l2l_meta_gradient(net, tasks, Mode.SECOND_ORDER, 2, 0.1, features=features, wrt=wrt)
    for engine in ENGINES:
        got = inner_meta_gradient(
            net, tasks, engine, Mode.SECOND_ORDER, 2, 0.1, features=features, wrt=wrt
        )
        assert_same(got, want)
        sx, sy, qx, _ = tasks
        inner = InnerLoop(net, "regression")
        detached, _ = inner.run(
            inner.params(), features(sx), sy, features(qx), 2, SGD(0.1), Mode.DETACHED, engine
        )
        assert detached.grad_fn is None  # evaluation: nothing recorded, the features' graph too


class WithSpare(nn.Module):
    """A network with a parameter its forward never uses (a head of another task kind...)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
        self.spare = nn.Parameter(torch.randn(3))

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("mode", [Mode.SECOND_ORDER, Mode.FIRST_ORDER])
def test_a_parameter_the_loss_does_not_use_adapts_by_a_zero_gradient(mode):
    torch.manual_seed(0)
    net, tasks = WithSpare(), sine_tasks(num_tasks=2)
    want = l2l_meta_gradient(net.body, tasks, mode, 2, 0.05)
    sx, sy, qx, qy = tasks
    inner = InnerLoop(net, "regression")
    for engine in ENGINES:
        preds, adapted = inner.run(
            inner.params(), sx, sy, qx, 2, SGD(0.05), mode, engine, return_params=True
        )
        grads = torch.autograd.grad(F.mse_loss(preds, qy), list(net.body.parameters()))
        assert_same(torch.cat([g.flatten() for g in grads]), want)
        torch.testing.assert_close(adapted["spare"], net.spare.detach().expand(2, 3))


def support_statistics_copy(net, support):
    """A copy of ``net`` whose batch norms normalise with ``support``'s statistics: running
    statistics (momentum 1) taken from one training-mode forward of the support set, then
    evaluation mode. torch's running variance is the unbiased one; batch norm normalises with
    the biased one, so it is rescaled."""
    ref = copy.deepcopy(net)
    rows = {}
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.momentum = True, 1.0
            m.register_buffer("running_mean", torch.zeros(m.num_features))
            m.register_buffer("running_var", torch.ones(m.num_features))
            m.register_buffer("num_batches_tracked", torch.tensor(0))
            m.register_forward_hook(lambda m, i, o: rows.update({m: i[0][:, 0].numel()}))
    with torch.no_grad():
        ref(support)
    for m, n in rows.items():
        m.running_var.mul_((n - 1) / n)
    return ref.eval()


@pytest.mark.parametrize("engine", [*ENGINES, "learn2learn"])
def test_inductive_predictions_use_the_support_statistics(engine):
    """Under the inductive protocol (support statistics) the adapted network predicts each query
    with batch norm on its task's support statistics: against torch.optim.SGD steps and
    torch's batch norm in evaluation mode on running statistics set to the support's."""
    from metalab.algorithms.protocols import Protocol

    torch.manual_seed(0)
    net = CASES["conv4"][0]()
    sx, sy, qx, _ = image_tasks(num_tasks=2, queries=2)
    inner = InnerLoop(net)
    mode = Mode.SECOND_ORDER if engine == "fused" else Mode.DETACHED  # fused: training only
    preds, _ = inner.run(
        inner.params(), sx, sy, qx, 2, SGD(0.4), mode, engine, protocol=Protocol("inductive")
    )
    for i in range(2):
        clone = copy.deepcopy(net)
        opt = torch.optim.SGD(clone.parameters(), lr=0.4)
        for _ in range(2):
            opt.zero_grad()
            F.cross_entropy(clone(sx[i]), sy[i]).backward()
            opt.step()
        want = support_statistics_copy(clone, sx[i])(qx[i])
        torch.testing.assert_close(preds[i].detach(), want.detach(), rtol=1e-9, atol=1e-10)


def test_vmap_detached_adaptation_runs_in_full_precision_under_autocast():
    """Evaluation under bf16 autocast: the vmap engine (whose torch.func.grad fails on
    autocast's mixed dtypes) adapts and predicts in float32, the same predictions as without
    autocast (float32 network and tasks; a convolutional network: the failure needs one)."""
    torch.manual_seed(0)
    net = CASES["conv4"][0]().float()
    sx, sy, qx, _ = image_tasks(num_tasks=2)
    sx, qx = sx.float(), qx.float()
    inner = InnerLoop(net)
    expected, _ = inner.run(inner.params(), sx, sy, qx, 2, SGD(0.4), Mode.DETACHED, "vmap")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        preds, _ = inner.run(inner.params(), sx, sy, qx, 2, SGD(0.4), Mode.DETACHED, "vmap")
    assert expected.dtype == preds.dtype == torch.float32
    torch.testing.assert_close(preds, expected, rtol=1e-6, atol=1e-6)

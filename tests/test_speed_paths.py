"""The speed and memory paths of the inner loop, in float64: the fused first step's per-task
gradients against per-task autograd, and checkpointed meta-gradients against unchecked ones
(both engines are also run against learn2learn in test_inner_loop.py)."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from helpers.tasks import (
    _float64_one_thread,  # noqa: F401 (autouse: float64, one thread)
    assert_same,
    image_tasks,
    meta_grad,
    query_loss,
)
from metalab.algorithms.first_step import per_task_gradients
from metalab.algorithms.inner_loop import SGD, InnerLoop, Mode, resolve_engine
from metalab.algorithms.maml import MAML
from metalab.backbones.conv4 import Conv4
from metalab.backbones.resnet12 import ResNet12
from metalab.errors import ConfigError

NETS = {
    "conv4": lambda: Conv4((1, 28, 28), out_dim=5, hidden=8),
    "resnet12": lambda: ResNet12((1, 16, 16), out_dim=5, channels=(4, 6, 8, 8)),
}


def tasks_for(name):
    return image_tasks(num_tasks=3, shots=2, queries=2, size=28 if name == "conv4" else 16)


@pytest.mark.parametrize("name", NETS)
def test_fused_first_step_gradients_are_each_tasks_own(name):
    torch.manual_seed(0)
    net = NETS[name]()
    sx, sy, _, _ = tasks_for(name)
    inner = InnerLoop(net)
    params = inner.params()
    grads = per_task_gradients(inner.forward, F.cross_entropy, params, sx, sy, True)
    assert grads is not None  # every layer covered: the shared forward ran
    for t in range(sx.shape[0]):
        want = torch.autograd.grad(F.cross_entropy(net(sx[t]), sy[t]), list(params.values()))
        for (k, g), w in zip(grads.items(), want, strict=True):
            torch.testing.assert_close(g[t], w, rtol=1e-10, atol=1e-12, msg=k)


def test_fused_engine_falls_back_to_the_loop_on_layers_it_does_not_cover():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, groups=1), nn.PReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 5)
    )
    sx, sy, qx, _ = image_tasks(num_tasks=2)
    inner = InnerLoop(net)
    assert (
        per_task_gradients(inner.forward, F.cross_entropy, inner.params(), sx, sy, True) is None
    )  # PReLU's weight: not covered
    tasks = image_tasks(num_tasks=2)
    plain = meta_grad(net, "classification", tasks, "loop", Mode.SECOND_ORDER, lr=0.3)
    assert_same(meta_grad(net, "classification", tasks, "fused", Mode.SECOND_ORDER, lr=0.3), plain)
    assert_same(checked_meta_grad(net, tasks, "fused", True, 1), plain)  # checkpointed: SGD(0.3)


def checked_meta_grad(net, tasks, engine, checkpoint, steps):
    sx, sy, qx, qy = tasks
    inner = InnerLoop(net)
    preds, _ = inner.run(
        inner.params(),
        sx,
        sy,
        qx,
        steps,
        SGD(0.3),
        Mode.SECOND_ORDER,
        engine,
        checkpoint=checkpoint,
    )
    grads = torch.autograd.grad(query_loss("classification", preds, qy), list(net.parameters()))
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_checkpointed_meta_gradient_equals_the_unchecked_one(name, engine):
    torch.manual_seed(0)
    net, tasks = NETS[name](), tasks_for(name)
    plain = checked_meta_grad(net, tasks, "loop", False, 2)
    assert plain.norm() > 0
    assert_same(checked_meta_grad(net, tasks, engine, False, 2), plain)
    assert_same(checked_meta_grad(net, tasks, engine, True, 2), plain)


def test_checkpoint_config_errors():
    make = functools.partial(
        MAML,
        backbone=functools.partial(Conv4, (1, 28, 28), hidden=8),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
        ways=5,
    )
    with pytest.raises(ConfigError, match="algorithm.checkpoint") as err:
        make(checkpoint="yes")
    assert "true or false" in str(err.value)
    with pytest.raises(ConfigError, match="algorithm.checkpoint"):
        make(checkpoint=True, engine="vmap")
    assert make(checkpoint=True).checkpoint
    assert resolve_engine("auto", torch.device("cuda"), checkpoint=True) == "loop"


class MixedLayers(nn.Module):
    """Every form of layer the fused first step covers: convolutions with stride, padding and
    dilation, with and without bias, called as ``F.conv2d`` with its defaults and with keywords,
    one with a fixed kernel (a buffer); batch norm with and without affine parameters on 4-d and
    2-d inputs; a linear layer on 3-d inputs with its bias passed by keyword, one without bias,
    one applied twice (tied weights), one whose output the loss does not use; and a frozen
    parameter."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, stride=2, padding=1, dilation=2)
        self.register_buffer("blur", torch.full((4, 4, 2, 2), 1 / 16))
        self.bn1 = nn.BatchNorm2d(4, affine=False, track_running_stats=False)
        self.kernel = nn.Parameter(torch.randn(4, 4, 2, 2) / 4)
        self.kernel2 = nn.Parameter(torch.randn(4, 4, 3, 3) / 6)
        self.bn2 = nn.BatchNorm2d(4, track_running_stats=False)
        self.weight, self.bias = nn.Parameter(torch.randn(6, 4) / 2), nn.Parameter(torch.randn(6))
        self.tied = nn.Linear(6, 6)
        self.aux = nn.Linear(6, 2)
        self.bn3 = nn.BatchNorm1d(6, track_running_stats=False)
        self.head = nn.Linear(6, 5, bias=False)
        self.scale = nn.Parameter(torch.linspace(1, 2, 5), requires_grad=False)

    def forward(self, x):
        h = self.bn1(torch.relu(self.conv1(x)))  # the bias is not normalised away
        h = F.conv2d(F.conv2d(h, self.blur, padding=1), self.kernel)
        h = F.conv2d(torch.relu(h), self.kernel2, padding=1)
        h = torch.relu(self.bn2(h))
        h = F.linear(h.flatten(2).transpose(1, 2), self.weight, bias=self.bias)  # [N, L, 6]
        h = self.tied(torch.tanh(self.tied(torch.tanh(h).mean(1))))
        self.aux(h)  # an auxiliary output, not in the loss
        return self.head(self.bn3(h)) * self.scale


def test_fused_first_step_covers_every_form_of_its_layers():
    torch.manual_seed(0)
    net = MixedLayers()
    sx, sy, _, _ = image_tasks(num_tasks=3, shots=2, queries=1, size=12)
    params = dict(net.named_parameters())
    grads = per_task_gradients(
        lambda p, x: torch.func.functional_call(net, p, (x,)), F.cross_entropy, params, sx, sy, True
    )
    assert grads is not None and list(grads) == list(params)
    trained = [p for p in params.values() if p.requires_grad]
    for t in range(sx.shape[0]):
        loss = F.cross_entropy(net(sx[t]), sy[t])
        want = dict(zip(trained, torch.autograd.grad(loss, trained, allow_unused=True)))
        for (k, g), p in zip(grads.items(), params.values(), strict=True):
            w = want.get(p)
            w = torch.zeros_like(p) if w is None else w  # frozen or unused: zero
            assert g.shape == (3, *p.shape), k
            torch.testing.assert_close(g[t], w, rtol=1e-10, atol=1e-12, msg=k)
    assert grads["aux.weight"].abs().max() == 0 < grads["tied.weight"].abs().max()


@pytest.mark.parametrize(
    "conv",
    [
        lambda: nn.Conv2d(2, 4, 3, groups=2),
        lambda: nn.Conv2d(2, 4, 3, padding="same"),
    ],
    ids=["groups", "padding_same"],
)
def test_fused_first_step_refuses_grouped_and_same_padded_convolutions(conv):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 1), conv(), nn.Flatten(), nn.LazyLinear(5))
    sx, sy, _, _ = image_tasks(num_tasks=2, size=8)
    net(sx[0])  # materialise the lazy layer
    inner = InnerLoop(net)
    assert per_task_gradients(inner.forward, F.cross_entropy, inner.params(), sx, sy, True) is None


def convolutions(net, tasks, engine, checkpoint):
    """How many convolutions of ``net`` run in the forward and in the backward pass of a
    second-order meta-gradient (a checkpointed region's forward runs again in the backward)."""
    sx, sy, qx, qy = tasks
    calls = [0]
    hooks = [
        m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    inner = InnerLoop(net)
    preds, _ = inner.run(
        inner.params(), sx, sy, qx, 2, SGD(0.3), Mode.SECOND_ORDER, engine, checkpoint=checkpoint
    )
    forward, calls[0] = calls[0], 0
    torch.autograd.grad(query_loss("classification", preds, qy), list(net.parameters()))
    for hook in hooks:
        hook.remove()
    return forward, calls[0]


@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_checkpointing_recomputes_every_forward_and_only_when_asked(engine):
    torch.manual_seed(0)
    net, tasks = NETS["conv4"](), tasks_for("conv4")
    forward, backward = convolutions(net, tasks, engine, False)
    assert forward > 0 and backward == 0
    assert convolutions(net, tasks, engine, True)[1] == forward


class Counter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func is F.conv2d
        return func(*args, **(kwargs or {}))


def test_fused_first_step_is_one_forward_of_all_tasks():
    """Conv4 (4 convolutions), 3 tasks, one inner step: the loop convolves each task's support
    and query sets (24 convolutions), the fused engine all support sets at once (4 + 12)."""
    torch.manual_seed(0)
    net, (sx, sy, qx, _) = NETS["conv4"](), tasks_for("conv4")
    inner = InnerLoop(net)
    calls = {}
    for engine in ("loop", "fused"):
        with Counter() as counter:
            inner.run(inner.params(), sx, sy, qx, 1, SGD(0.3), Mode.SECOND_ORDER, engine)
        calls[engine] = counter.calls
    assert calls == {"loop": 24, "fused": 16}


class ParameterAsInput(nn.Module):
    """A parameter that enters as a layer's input (a learned prompt), not as its weight."""

    def __init__(self):
        super().__init__()
        self.prompt = nn.Parameter(torch.randn(2, 4))
        self.linear = nn.Linear(4, 5)
        self.embed = nn.Sequential(nn.Conv2d(1, 4, 3, stride=4), nn.Flatten(1), nn.LazyLinear(4))

    def forward(self, x):
        return self.linear(self.embed(x)) + self.linear(self.prompt).sum(0)


def test_fused_first_step_refuses_a_parameter_it_would_not_differentiate():
    torch.manual_seed(0)
    net = ParameterAsInput()
    tasks = image_tasks(num_tasks=2, size=12)
    net(tasks[0][0])  # materialise the lazy layer
    inner = InnerLoop(net)
    assert (
        per_task_gradients(inner.forward, F.cross_entropy, inner.params(), *tasks[:2], True) is None
    )
    assert_same(
        meta_grad(net, "classification", tasks, "fused", Mode.SECOND_ORDER),
        meta_grad(net, "classification", tasks, "loop", Mode.SECOND_ORDER),
    )


class FunctionalBatchNorm(nn.Module):
    """Batch norm on running statistics called as ``F.batch_norm`` in training mode."""

    def __init__(self, channels):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, training=True)


@pytest.mark.parametrize("norm", [nn.BatchNorm2d, FunctionalBatchNorm])
@pytest.mark.parametrize("engine", ["loop", "fused"])
def test_running_statistics_are_updated_once_per_forward_of_each_task(engine, norm):
    """Batch norm that tracks running statistics: the engines update them as plain PyTorch does
    (each task's support forward, then its query forward at the adapted weights); the fused
    engine leaves such a network to the loop and must not update them a second time."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), norm(3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    sx, sy, qx, _ = image_tasks(num_tasks=2, size=8)
    net(sx[0])  # materialise the lazy layer (and a first update)
    initial = copy.deepcopy(net)
    inner = InnerLoop(net)
    inner.run(inner.params(), sx, sy, qx, 1, SGD(0.3), Mode.SECOND_ORDER, engine)
    stats = dict(initial.named_buffers())
    for i in range(2):  # each task from the initial weights; the running statistics go on
        clone = copy.deepcopy(initial)
        clone.load_state_dict(stats, strict=False)
        opt = torch.optim.SGD(clone.parameters(), lr=0.3)
        F.cross_entropy(clone(sx[i]), sy[i]).backward()
        opt.step()
        clone(qx[i])
        stats = dict(clone.named_buffers())
    assert len(stats) == len(dict(net.named_buffers())) >= 2
    for name, buffer in net.named_buffers():
        torch.testing.assert_close(buffer, stats[name], msg=name)

"""The first inner step of all tasks at once, as one ordinary forward (the ``fused`` engine).

Every task starts from the same initial weights, so their first support forward is one forward
of the stacked support sets through the shared weights: one large convolution per layer instead
of one small one per task (``vmap`` would make it a grouped convolution). Batch norm keeps its
statistics per task. Each layer's inputs and outputs are recorded on the way; one backward pass
of the summed task losses gives the gradient at each layer's output, which is per task because
a task's loss depends only on its own samples; the per-task parameter gradients are then
contractions of those with the recorded inputs, task by task (``einsum`` over the task's
samples). All of it is ordinary differentiable tensor code, so with ``create_graph`` the
meta-gradient carries MAML's second-order term exactly as the per-task loop does.

Layers covered: ``conv2d`` (groups=1), ``linear`` and batch norm on batch statistics; a module
with any other parametrised operation returns ``None`` (the caller falls back to the loop); a
convolution or batch norm that is not covered stops the shared forward at once (running
statistics are then left to the loop: the shared forward must not update them too).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

Params = dict[str, Tensor]


class _Unsupported(Exception):
    """A convolution or batch norm the shared forward does not cover."""


class _Recorder(TorchFunctionMode):
    """Runs conv2d/linear/batch norm as usual (batch norm per task) and records, per call, the
    parameters used, the input (conv/linear) or normalised input (batch norm) and the output."""

    def __init__(self, tasks: int):
        self.tasks, self.calls = tasks, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            return self._conv(func, *args, **kwargs)
        if func is F.linear:
            out = func(*args, **kwargs)
            x, weight, bias = (list(args) + [kwargs.get("bias")])[:3]
            self.calls.append(("linear", weight, bias, x, out, None))
            return out
        if func is F.batch_norm:
            return self._batch_norm(*args, **kwargs)
        return func(*args, **kwargs)

    def _conv(self, func, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if groups != 1 or isinstance(padding, str):
            raise _Unsupported
        out = func(x, weight, bias, stride, padding, dilation, groups)
        self.calls.append(("conv", weight, bias, x, out, (stride, padding, dilation)))
        return out

    # F.batch_norm's arguments on two lines (taken over in inner_loop.py and protocols.py too)
    # fmt: off
    def _batch_norm(self, x, running_mean, running_var, weight=None, bias=None,
                    training=False, momentum=0.1, eps=1e-5):
    # fmt: on
        if running_mean is not None or not training:  # running statistics mix the tasks
            raise _Unsupported
        per_task = x.unflatten(0, (self.tasks, -1))  # [T, N, C, ...]
        dims = (1, *range(3, per_task.dim()))
        mean = per_task.mean(dims, keepdim=True)
        var = per_task.var(dims, unbiased=False, keepdim=True)
        normed = ((per_task - mean) * torch.rsqrt(var + eps)).flatten(0, 1)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        out = normed
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        self.calls.append(("bn", weight, bias, normed, out, None))
        return out


def per_channel(t: Tensor) -> Tensor:
    """``[T, N, C, ...]`` summed over the samples and the dims after the channel: ``[T, C]``."""
    return t.transpose(1, 2).flatten(2).sum(2)


def per_task_gradients(
    forward: Callable[[Params, Tensor], Tensor],
    loss,
    params: Params,
    x: Tensor,
    y: Tensor,
    create_graph: bool,
) -> Params | None:
    """``{name: [T, *shape]}``: the gradient of each task's ``loss`` (``x``: ``[T, N, ...]``)
    at the shared ``params``, or ``None`` where a layer is not covered."""
    tasks = x.shape[0]
    recorder = _Recorder(tasks)
    try:
        with recorder:
            out = forward(params, x.flatten(0, 1))
    except _Unsupported:
        return None
    ids = {id(p): k for k, p in params.items()}
    used = {id(t) for call in recorder.calls for t in call[1:3] if t is not None}
    if any(p.requires_grad and id(p) not in used for p in params.values()):
        return None  # a parameter enters through an operation not covered
    out = out.unflatten(0, (tasks, -1))
    total = sum(loss(out[t], y[t]) for t in range(tasks))
    outputs = [call[4] for call in recorder.calls]
    deltas = torch.autograd.grad(
        total, outputs, create_graph=create_graph, allow_unused=True, materialize_grads=True
    )
    grads: Params = {}

    def add(param, g):
        if param is None or id(param) not in ids:
            return
        k = ids[id(param)]
        grads[k] = grads[k] + g if k in grads else g

    for (kind, weight, bias, inp, _, conv_args), delta in zip(recorder.calls, deltas):
        d = delta.unflatten(0, (tasks, -1))  # [T, N, C_out, ...]
        if kind == "linear":
            add(bias, d.flatten(1, -2).sum(1))
        else:  # a channel per dim 2; batch norm's input may have no dims after it (2-d)
            add(bias, per_channel(d))
        if kind == "bn":
            add(weight, per_channel(d * inp.unflatten(0, (tasks, -1))))
        elif kind == "linear":
            a = inp.unflatten(0, (tasks, -1)).flatten(1, -2)  # [T, M, in]
            add(weight, torch.einsum("tmo,tmi->toi", d.flatten(1, -2), a))
        else:
            stride, padding, dilation = conv_args
            cols = F.unfold(inp, weight.shape[2:], dilation, padding, stride)  # [TN, Cin*k*k, L]
            cols = cols.unflatten(0, (tasks, -1))
            g = torch.einsum("tnol,tnil->toi", d.flatten(3), cols)
            add(weight, g.view(tasks, *weight.shape))
    return {k: grads[k] if k in grads else p.new_zeros(tasks, *p.shape) for k, p in params.items()}

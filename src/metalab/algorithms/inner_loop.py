"""The inner loop of gradient-based meta-learning (MAML, first-order MAML, Meta-SGD, Reptile).

A module is evaluated functionally with a dict of parameter tensors
(``torch.func.functional_call``), so adapted ("fast") weights are ordinary tensors computed from
the initial ones: the query predictions stay in the autograd graph of the initial parameters, and
``loss.backward()`` on them is the meta-gradient. Three ways to differentiate, by ``Mode``:

- ``SECOND_ORDER``: the inner gradients are themselves differentiable (``create_graph``), so the
  meta-gradient carries the Hessian term of MAML;
- ``FIRST_ORDER``: the inner gradients are constants (computed at detached weights), the adapted
  weights still depend on the initial ones through ``theta - lr * g`` (first-order MAML);
- ``DETACHED``: nothing is recorded for the outer graph (evaluation, Reptile's inner loop).

Engines (``engine=``):

- ``loop``: one task after another, ``torch.autograd.grad``;
- ``fused``: ``loop``, but the first inner step of all tasks comes from one shared forward
  (first_step.py: one large convolution, not one per task; SGD rules, training modes);
- ``vmap``: all tasks at once, ``torch.func.vmap`` over ``torch.func.grad``; convolutions with
  per-task weights become grouped convolutions; batch norm statistics stay per task;
- ``learn2learn``: ``l2l.algorithms.MAML(...).clone()`` / ``.adapt(loss)``, the reference
  implementation (plain SGD steps only);
- ``auto``: ``vmap`` on CUDA, ``CPU_ENGINE`` on CPU (the fastest, as measured); with
  ``checkpoint``, ``loop`` (fused's shared first step is recomputed for all tasks at once, and
  its unfolded inputs cost memory: ResNet-12 5-shot, 465 MiB per task against the loop's 197).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.overrides import TorchFunctionMode

from metalab.algorithms.first_step import per_task_gradients
from metalab.algorithms.protocols import TRANSDUCTIVE, Protocol
from metalab.errors import ConfigError
from metalab.tasks import task_kind

Params = dict[str, Tensor]

ENGINES = ("auto", "loop", "fused", "vmap", "learn2learn")
PER_TASK = ("loop", "fused")  # the engines that can checkpoint task by task
#: what ``auto`` picks on CPU, as measured (benchmarks/throughput.py --interleaved; second-order
#: MAML, conv4, 5-way 1-shot, 15 queries, meta-batch 32, one inner step, 2 threads, a shared
#: loaded machine): fused 0.69x the per-task loop's step time; vmap ~2.6x (on CPU its per-task
#: weights turn every convolution into a grouped one). On CUDA vmap is ~10x faster than loop.
CPU_ENGINE = "fused"


class Mode(enum.Enum):
    SECOND_ORDER = "second_order"
    FIRST_ORDER = "first_order"
    DETACHED = "detached"


def resolve_engine(engine: str, device: torch.device, checkpoint: bool = False) -> str:
    check_engine(engine)
    if checkpoint and engine not in ("auto", *PER_TASK):
        raise ConfigError(
            "algorithm.checkpoint",
            True,
            f"checkpointing needs a per-task engine: {', '.join(PER_TASK)} or auto",
        )
    if engine != "auto":
        return engine
    if checkpoint:  # per task, the transient of a recomputation is one task's
        return "loop"
    return "vmap" if device.type == "cuda" else CPU_ENGINE


def check_engine(engine: str, allowed: Sequence[str] = ENGINES) -> None:
    if engine not in allowed:
        raise ConfigError("algorithm.engine", engine, f"allowed: {', '.join(allowed)}")


def detach(params: Params) -> Params:
    return {k: v.detach() for k, v in params.items()}


class CompositeBatchNorm(TorchFunctionMode):
    """Batch norm on batch statistics from mean/var ops instead of the fused kernel.

    Under ``vmap``, the second derivative of the fused kernel with a per-task (batched) affine
    weight is wrong (the batching rule of its backward, pytorch/functorch#534): the
    meta-gradient of the layers below a batch norm was off by ~1-5%. The composite is exact.
    Layer norm has the same fault (~3% off below the layer norms of a transformer): composite too.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            return _batch_norm(func, *args, **kwargs)
        if func is F.layer_norm:
            return _layer_norm(*args, **kwargs)
        return func(*args, **kwargs)


def _layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = tuple(range(-len(normalized_shape), 0))
    mean = input.mean(dims, keepdim=True)
    out = (input - mean) * torch.rsqrt(input.var(dims, unbiased=False, keepdim=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


# F.batch_norm's arguments on two lines (taken over in protocols.py and first_step.py too)
# fmt: off
def _batch_norm(native, input, running_mean, running_var, weight=None, bias=None,
                training=False, momentum=0.1, eps=1e-5):
# fmt: on
    if running_mean is not None and training:  # updates running statistics: not a vmap case
        return native(input, running_mean, running_var, weight, bias, training, momentum, eps)
    shape = (1, -1) + (1,) * (input.dim() - 2)
    if training or running_mean is None:
        dims = (0, *range(2, input.dim()))
        mean = input.mean(dims, keepdim=True)
        var = input.var(dims, unbiased=False, keepdim=True)
    else:
        mean, var = running_mean.view(shape), running_var.view(shape)
    out = (input - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out


def _tracks_running_stats(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (
        module.training and module.track_running_stats
    )


# -- update rules: functional optimizers over parameter dicts, usable under vmap ------------------
class SGD:
    """``theta - lr * g``; ``lr`` a float or a dict of tensors (Meta-SGD's learned rates)."""

    def __init__(self, lr: float | Params):
        self.lr = lr

    def init(self, params: Params):
        return None

    def __call__(self, params: Params, grads: Params, state, step: int) -> tuple[Params, None]:
        lr = self.lr
        if isinstance(lr, dict):
            return {k: p - lr[k] * grads[k] for k, p in params.items()}, None
        return {k: p - lr * grads[k] for k, p in params.items()}, None

    def detached(self) -> SGD:
        return SGD(detach(self.lr) if isinstance(self.lr, dict) else self.lr)


class Adam:
    """Adam with fresh moments for every task (Reptile's inner optimizer, beta1=0 in the paper)."""

    def __init__(self, lr: float, betas: Sequence[float] = (0.0, 0.999), eps: float = 1e-8):
        self.lr, self.betas, self.eps = lr, tuple(betas), eps

    def init(self, params: Params):
        return {k: torch.zeros_like(p) for k, p in params.items()}, {
            k: torch.zeros_like(p) for k, p in params.items()
        }

    def __call__(self, params: Params, grads: Params, state, step: int):
        (b1, b2), m, v = self.betas, *state
        m = {k: b1 * m[k] + (1 - b1) * g for k, g in grads.items()}
        v = {k: b2 * v[k] + (1 - b2) * g * g for k, g in grads.items()}
        c1, c2 = 1 - b1 ** (step + 1), 1 - b2 ** (step + 1)
        new = {
            k: p - (self.lr / c1) * m[k] / ((v[k] / c2).sqrt() + self.eps)
            for k, p in params.items()
        }
        return new, (m, v)

    def detached(self) -> Adam:
        return self


def checkpointed(fn: Callable[[Params], Params | None], params: Params) -> Params | None:
    """``fn(params)`` under activation checkpointing: only its inputs are kept, its inside is
    recomputed in the backward pass (inner gradients included: the recomputation records the
    same second-order graph)."""
    from torch.utils.checkpoint import checkpoint

    names, keys = list(params), []

    def flat(*tensors):
        out = fn(dict(zip(names, tensors)))
        if out is None:
            return None
        keys[:] = list(out)
        return tuple(out.values())

    out = checkpoint(flat, *params.values(), use_reentrant=False)
    return None if out is None else dict(zip(keys, out))


# -- the engine -----------------------------------------------------------------------------------
class InnerLoop:
    """Adapts ``module``'s parameters to each task of a batch and predicts its query set."""

    def __init__(self, module: nn.Module, task: str = "classification"):
        self.module = module
        self.loss = task_kind(task).loss  # cross-entropy of logits, or MSE

    def forward(self, params: Params, x: Tensor) -> Tensor:
        return functional_call(self.module, params, (x,))

    def params(self) -> Params:
        return dict(self.module.named_parameters())

    def run(
        self,
        params: Params,
        support_x: Tensor,
        support_y: Tensor,
        query_x: Tensor,
        steps: int,
        rule: SGD | Adam,
        mode: Mode,
        engine: str = "auto",
        batches: Sequence[Tensor] | None = None,
        return_params: bool = False,
        protocol: Protocol = TRANSDUCTIVE,
        checkpoint: bool = False,
    ) -> tuple[Tensor, Params | None]:
        """Query predictions ``[B, Nq, out]`` after ``steps`` updates of ``rule`` on each task's
        support set (``batches[t]``: the support indices of step t, else the whole set), made
        under ``protocol`` (protocols.py), and the adapted parameters ``[B, ...]`` when
        ``return_params``. ``checkpoint``: keep only the inputs of each task's adaptation and
        query forward and recompute them in the backward pass (per-task engines; ``auto`` then
        picks ``loop``)."""
        engine = resolve_engine(engine, support_x.device, checkpoint)
        if mode is Mode.DETACHED:
            params, rule = detach(params), rule.detached()
        if engine == "learn2learn":
            if (
                return_params
                or batches is not None
                or not isinstance(rule, SGD)
                or isinstance(rule.lr, dict)
            ):
                raise ConfigError(
                    "algorithm.engine",
                    engine,
                    "learn2learn runs plain MAML (SGD, one learning rate) only",
                )
            return self._learn2learn(
                support_x, support_y, query_x, steps, rule.lr, mode, protocol
            ), None
        if engine == "vmap":
            # torch.func.grad differentiates under no_grad too: nothing recorded when detached
            with (
                torch.no_grad() if mode is Mode.DETACHED else torch.enable_grad(),
                CompositeBatchNorm() if mode is Mode.SECOND_ORDER else nullcontext(),
            ):
                preds, adapted = self._vmap(
                    params, support_x, support_y, query_x, steps, rule, mode, batches, protocol
                )
            return preds, (adapted if return_params else None)
        first = None
        if engine == "fused" and mode is not Mode.DETACHED and isinstance(rule, SGD):
            step = partial(
                self._first_step, x=support_x, y=support_y, rule=rule, mode=mode, batches=batches
            )
            first = checkpointed(step, params) if checkpoint else step(params)
        with torch.enable_grad():
            return self._loop(
                params,
                support_x,
                support_y,
                query_x,
                steps,
                rule,
                mode,
                batches,
                return_params,
                protocol,
                first,
                checkpoint,
            )

    # one task after another ----------------------------------------------------------------
    def _adapt(
        self,
        params: Params,
        x: Tensor,
        y: Tensor,
        steps: int,
        rule,
        mode: Mode,
        batches,
        start: int = 0,
    ) -> Params:
        state = rule.init(params)
        for t in range(start, steps):
            xs, ys = (x, y) if batches is None else (x[batches[t]], y[batches[t]])
            if mode is Mode.SECOND_ORDER:
                loss = self.loss(self.forward(params, xs), ys)
                grads = torch.autograd.grad(
                    loss,
                    tuple(params.values()),
                    create_graph=True,
                    allow_unused=True,
                    materialize_grads=True,
                )
            else:  # the gradient at detached weights: a constant for the outer graph
                at = {k: v.detach().requires_grad_() for k, v in params.items()}
                loss = self.loss(self.forward(at, xs), ys)
                grads = torch.autograd.grad(
                    loss, tuple(at.values()), allow_unused=True, materialize_grads=True
                )
            grads = dict(zip(params, grads))
            if mode is Mode.DETACHED:
                with torch.no_grad():
                    params, state = rule(params, grads, state, t)
            else:
                params, state = rule(params, grads, state, t)
        return params

    def _loop(
        self,
        params,
        support_x,
        support_y,
        query_x,
        steps,
        rule,
        mode,
        batches,
        return_params,
        protocol,
        first=None,
        checkpoint=False,
    ):
        preds, adapted = [], []
        for i in range(support_x.shape[0]):
            start = params if first is None else {k: v[i] for k, v in first.items()}
            # the fused engine has done the first step: the rest per task
            adapt = partial(
                self._adapt,
                x=support_x[i],
                y=support_y[i],
                steps=steps,
                rule=rule,
                mode=mode,
                batches=batches,
                start=0 if first is None else 1,
            )
            queries = partial(protocol.queries, support=support_x[i], query=query_x[i])
            if checkpoint and mode is not Mode.DETACHED:
                fast = checkpointed(adapt, start)
                preds.append(checkpointed(partial(self._named_queries, queries), fast)[""])
            else:
                fast = adapt(start)  # with gradients: the inner steps need them
                with torch.no_grad() if mode is Mode.DETACHED else nullcontext():
                    preds.append(queries(partial(self.forward, fast)))
            if return_params:
                adapted.append(fast)
        if not return_params:
            return torch.stack(preds), None
        return torch.stack(preds), {k: torch.stack([a[k] for a in adapted]) for k in params}

    def _named_queries(self, queries, params: Params) -> Params:
        return {"": queries(partial(self.forward, params))}  # checkpointed's dict in and out

    def _first_step(self, params, x, y, rule, mode, batches) -> Params | None:
        """The fused engine: every task's first update from one shared forward
        (first_step.py), ``[B, ...]`` per parameter; ``None`` where a layer is not covered (the
        loop then does the whole adaptation)."""
        if any(_tracks_running_stats(m) for m in self.module.modules()):
            return None  # one forward of all tasks would update them once more (and mix tasks)
        x, y = (x, y) if batches is None else (x[:, batches[0]], y[:, batches[0]])
        second = mode is Mode.SECOND_ORDER
        at = params if second else {k: v.detach().requires_grad_() for k, v in params.items()}
        with torch.enable_grad():
            grads = per_task_gradients(
                self.forward, self.loss, at, x if second else x.detach(), y, create_graph=second
            )
        if grads is None:
            return None
        if not second:
            grads = detach(grads)
        return rule(params, grads, None, 0)[0]

    # all tasks at once ---------------------------------------------------------------------
    def _vmap(self, params, support_x, support_y, query_x, steps, rule, mode, batches, protocol):
        def support_loss(p: Params, x: Tensor, y: Tensor) -> Tensor:
            return self.loss(self.forward(p, x), y)

        inner_grad = grad(support_loss)

        def one_task(x: Tensor, y: Tensor, qx: Tensor):
            p, state = params, rule.init(params)
            for t in range(steps):
                xs, ys = (x, y) if batches is None else (x[batches[t]], y[batches[t]])
                # first order: a constant, also when the inputs carry a graph (ANIL's features)
                g = (
                    inner_grad(p, xs, ys)
                    if mode is Mode.SECOND_ORDER
                    else inner_grad(detach(p), xs.detach(), ys)
                )
                p, state = rule(p, g, state, t)
            return protocol.queries(partial(self.forward, p), x, qx), p

        if mode is not Mode.DETACHED:
            return vmap(one_task)(support_x, support_y, query_x)
        # torch.func.grad under vmap fails on the mixed dtypes of autocast when no outer graph
        # is recorded (bf16-mixed evaluation): evaluation adapts in full precision instead
        with torch.autocast(support_x.device.type, enabled=False):
            return vmap(one_task)(support_x, support_y, query_x)

    # the reference ---------------------------------------------------------------------------
    def _learn2learn(self, support_x, support_y, query_x, steps, lr, mode, protocol):
        import learn2learn as l2l

        maml = l2l.algorithms.MAML(self.module, lr=lr, first_order=mode is not Mode.SECOND_ORDER)
        preds = []
        with torch.enable_grad():
            for i in range(support_x.shape[0]):
                learner = maml.clone()
                for _ in range(steps):
                    learner.adapt(self.loss(learner(support_x[i]), support_y[i]))
                out = protocol.queries(learner, support_x[i], query_x[i])
                preds.append(out.detach() if mode is Mode.DETACHED else out)
        return torch.stack(preds)

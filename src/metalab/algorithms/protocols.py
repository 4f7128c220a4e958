"""Evaluation protocols: how a task's query inputs meet the batch-norm statistics.

metalab's backbones normalise with the statistics of the batch they are given (no running
statistics, ``backbones/base.py``), so what shares a batch with a query decides what its
prediction may depend on:

- ``transductive``: the query set of a task in one batch, so a query's prediction depends on the
  other queries of its episode. MAML's and Reptile's transductive setting is the query set alone
  (``Protocol.queries``); Prototypical Networks embed support and queries in one batch
  (``Protocol.embed``). This is what every algorithm does in training.
- ``inductive``: a query's prediction depends only on the support set and that query. Where the
  statistics come from (``inductive_stats``):

  - ``support``: the support set's statistics normalise every query (one batch ``[support,
    queries]`` in which batch norm computes its mean and variance over the support rows only).
    Costs what transductive costs, and needs no running statistics, so it is the same under any
    engine (loop, vmap, learn2learn), on any number of DDP ranks, and for every algorithm.
  - ``support_plus_query``: Reptile's non-transductive evaluation (Nichol et al. 2018, code
    ``_test_predictions``): each query in its own batch with the support set, so the statistics
    are those of the support set plus that one query. Costs ``queries x (shots * ways + 1)``
    images per task instead of ``shots * ways + queries``.

Running statistics tracked in training (Prototypical Networks' own evaluation) are not offered:
they would differ between 1 and 2 DDP ranks (each rank sees other tasks) and need buffers passed
through ``torch.func`` under the vmap engine. The protocol applies to validation and test
episodes; training always predicts queries as the papers train (batch statistics, transductive).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from metalab.errors import ConfigError

PROTOCOLS = ("transductive", "inductive")
INDUCTIVE_STATS = ("support", "support_plus_query")

Forward = Callable[[Tensor], Tensor]


def check_protocol(protocol, inductive_stats="support") -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError("protocol", protocol, f"allowed: {', '.join(PROTOCOLS)}")
    if inductive_stats not in INDUCTIVE_STATS:
        raise ConfigError(
            "inductive_stats", inductive_stats, f"allowed: {', '.join(INDUCTIVE_STATS)}"
        )


class Protocol:
    def __init__(self, name: str = "transductive", inductive_stats: str = "support"):
        check_protocol(name, inductive_stats)
        self.name, self.inductive_stats = name, inductive_stats

    def __repr__(self) -> str:
        if self.name == "transductive":
            return "transductive"
        return f"inductive ({self.inductive_stats} statistics)"

    def embed(self, forward: Forward, support: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """``forward``'s outputs for one task's support ``[Ns, ...]`` and queries ``[Nq, ...]``.
        With ``support_plus_query`` the support outputs are those of each query's own batch,
        ``[Nq, Ns, ...]``."""
        ns, nq = len(support), len(query)
        if self.name == "transductive":
            z = forward(torch.cat([support, query]))
            return z[:ns], z[ns:]
        if self.inductive_stats == "support":
            with ReferenceBatchNorm(ns):
                z = forward(torch.cat([support, query]))
            return z[:ns], z[ns:]
        batches = torch.cat([support.expand(nq, *support.shape), query[:, None]], 1)
        with ReferenceBatchNorm(ns + 1, group=ns + 1):
            z = forward(batches.flatten(0, 1)).unflatten(0, (nq, ns + 1))
        return z[:, :ns], z[:, ns]

    def queries(self, forward: Forward, support: Tensor, query: Tensor) -> Tensor:
        """``forward``'s outputs for one task's queries (MAML, Reptile: the adapted network)."""
        if self.name == "transductive":
            return forward(query)
        return self.embed(forward, support, query)[1]


TRANSDUCTIVE = Protocol("transductive")


class ReferenceBatchNorm(TorchFunctionMode):
    """Batch norm whose batch statistics come from the first ``reference`` rows of each group of
    ``group`` consecutive rows (``group=None``: the whole batch is one group), and normalise
    every row of the group. Composite (mean/var ops), so it is exact under ``vmap`` and its
    second derivatives, like ``inner_loop.CompositeBatchNorm``."""

    def __init__(self, reference: int, group: int | None = None):
        super().__init__()
        self.reference, self.group = reference, group

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.batch_norm:
            return self._batch_norm(func, *args, **kwargs)
        return func(*args, **kwargs)

    # F.batch_norm's arguments on two lines (taken over in inner_loop.py and first_step.py too)
    # fmt: off
    def _batch_norm(self, native, input, running_mean, running_var, weight=None, bias=None,
                    training=False, momentum=0.1, eps=1e-5):
    # fmt: on
        if running_mean is not None:  # running statistics involve no batch: nothing to restrict
            return native(input, running_mean, running_var, weight, bias, training, momentum, eps)
        low = input.dtype in (torch.float16, torch.bfloat16)  # statistics in float32
        x = (input.float() if low else input).unflatten(0, (-1, self.group or len(input)))
        ref = x[:, : self.reference]
        dims = (1, *range(3, x.dim()))  # [groups, rows, channels, ...]: per group and channel
        mean = ref.mean(dims, keepdim=True)
        var = ref.var(dims, unbiased=False, keepdim=True)
        out = (x - mean) * torch.rsqrt(var + eps)
        shape = (1, 1, -1) + (1,) * (x.dim() - 3)
        if weight is not None:
            out = out * weight.view(shape)
        if bias is not None:
            out = out + bias.view(shape)
        return out.flatten(0, 1).to(input.dtype)

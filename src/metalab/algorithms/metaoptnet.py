"""Differentiable closed-form / convex heads on a meta-learned embedding.

- **R2-D2** (Bertinetto, Henriques, Torr & Vedaldi 2019, "Meta-learning with differentiable
  closed-form solvers"): ridge regression of the one-hot support labels on the support
  embeddings, in its dual (Woodbury) form ``W = X^T (X X^T + lambda I)^-1 Y``, an ``n x n``
  solve for ``n`` support examples whatever the embedding size; lambda is learned (log scale).
- **MetaOptNet-SVM** (Lee, Maji, Ravichandran & Soatto 2019): a multi-class (Crammer-Singer)
  linear SVM fitted to the support embeddings by solving its dual QP with qpth, differentiated
  through the QP's KKT conditions (Amos & Kolter 2017), as the MetaOptNet code does.

Both scale their logits by a learned factor (R2-D2's alpha, MetaOptNet's scale)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metalab.algorithms.embedding import EmbeddingLearner
from metalab.errors import ConfigError, require_positive


def ridge_weights(
    support: torch.Tensor, labels: torch.Tensor, ways: int, lam: torch.Tensor | float
) -> torch.Tensor:
    """Ridge regression of one-hot labels on ``support`` ``[n, D]`` without intercept:
    ``argmin_W ||X W - Y||^2 + lam ||W||^2 = X^T (X X^T + lam I)^-1 Y``, ``[D, ways]``."""
    onehot = F.one_hot(labels, ways).to(support.dtype)
    eye = torch.eye(len(support), dtype=support.dtype, device=support.device)
    return support.T @ torch.linalg.solve(support @ support.T + lam * eye, onehot)


def svm_dual(
    support: torch.Tensor,
    labels: torch.Tensor,
    ways: int,
    c: float,
    dual_ridge: float = 0.0,
    max_iter: int = 15,
) -> torch.Tensor:
    """The Crammer-Singer SVM ``min_W 1/2 ||W||^2 + c sum_i xi_i`` s.t. ``w_{y_i} x_i - w_m x_i
    >= [m != y_i] - xi_i``, through its dual: ``W_m = sum_i alpha_im x_i`` with ``alpha``
    ``[n, ways]`` minimising ``1/2 sum_ij K_ij <alpha_i, alpha_j> - sum_i alpha_{i,y_i}`` s.t.
    ``alpha_im <= c [m == y_i]`` and ``sum_m alpha_im = 0``. ``dual_ridge`` adds
    ``dual_ridge/2 ||alpha||^2`` (MetaOptNet adds 1: it keeps the QP strictly convex when
    ``n > D``). Solved in float64 by qpth's batched interior-point method (``max_iter``
    iterations); differentiable with respect to ``support``."""
    from qpth.qp import QPFunction

    n, dtype = len(support), support.dtype
    x = support.double()
    onehot = F.one_hot(labels, ways).double().flatten()  # [n * ways], sample-major
    eye_w = torch.eye(ways, dtype=torch.float64, device=x.device)
    q = torch.kron(x @ x.T, eye_w)
    q = q + dual_ridge * torch.eye(n * ways, dtype=torch.float64, device=x.device)
    ineq = torch.eye(n * ways, dtype=torch.float64, device=x.device)
    eq = torch.kron(
        torch.eye(n, dtype=torch.float64, device=x.device),
        torch.ones(1, ways, dtype=torch.float64, device=x.device),
    )
    zeros = torch.zeros(n, dtype=torch.float64, device=x.device)
    alpha = QPFunction(verbose=-1, maxIter=max_iter)(
        q[None], -onehot[None], ineq[None], c * onehot[None], eq[None], zeros[None]
    )
    return alpha.view(n, ways).to(dtype)


class ScaledHead(EmbeddingLearner):
    """A per-task head whose logits are multiplied by a learned scale."""

    def __init__(self, backbone, scale: float = 1.0, learn_scale: bool = True, **kwargs):
        super().__init__(backbone, **kwargs)
        scale = torch.tensor(float(scale))
        if learn_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)

    def head(self, support, labels, query, ways) -> torch.Tensor:
        """Unscaled query logits of one task."""
        raise NotImplementedError

    def classify(self, support, labels, query, ways):
        # the solves want at least float32: out of autocast (bf16-mixed) precision
        dtype = torch.promote_types(support.dtype, torch.float32)
        with torch.autocast(support.device.type, enabled=False):
            return self.scale * self.head(support.to(dtype), labels, query.to(dtype), ways)


class R2D2(ScaledHead):
    def __init__(self, backbone, lam: float = 50.0, learn_lam: bool = True, **kwargs):
        super().__init__(backbone, **kwargs)
        if not lam > 0:
            raise ConfigError("algorithm.lam", lam, "the ridge penalty must be > 0")
        log_lam = torch.tensor(math.log(lam))
        if learn_lam:  # on a log scale: stays positive
            self.log_lam = nn.Parameter(log_lam)
        else:
            self.register_buffer("log_lam", log_lam)

    def head(self, support, labels, query, ways):
        return query @ ridge_weights(support, labels, ways, self.log_lam.exp())


class MetaOptNet(ScaledHead):
    def __init__(
        self, backbone, c: float = 0.1, dual_ridge: float = 1.0, max_iter: int = 15, **kwargs
    ):
        super().__init__(backbone, **kwargs)
        if not c > 0:
            raise ConfigError("algorithm.c", c, "the SVM's slack penalty C must be > 0")
        if not dual_ridge >= 0:
            raise ConfigError("algorithm.dual_ridge", dual_ridge, "must be >= 0")
        require_positive("algorithm.max_iter", max_iter)
        self.c, self.dual_ridge, self.max_iter = float(c), float(dual_ridge), max_iter

    def head(self, support, labels, query, ways):
        alpha = svm_dual(support, labels, ways, self.c, self.dual_ridge, self.max_iter)
        return (query @ support.T) @ alpha

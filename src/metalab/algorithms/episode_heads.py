"""Classifiers fitted from scratch to one episode's support features (frozen, detached), then
applied to its queries: the test-time half of the pretrain-then-fine-tune methods.

- ``linear`` (Baseline, Chen et al. 2019): a new linear layer trained by SGD on the support
  set (their code: SGD lr 0.01, momentum 0.9, dampening 0.9, weight decay 1e-3, 100 epochs of
  batches of 4). Here full-batch steps from zero, so the fit is deterministic.
- ``cosine`` (Baseline++): logits ``scale * cos(w_c, z)`` (their code's scale: 2 for an
  episode's few classes), trained the same way, each class weight started at the sum of its
  normalised support features (the direction of their mean: zero weights have no direction).
- ``logistic`` (RFS, Tian et al. 2020): multinomial logistic regression with scikit-learn's
  objective ``0.5 ||W||^2 + C * sum_i CE_i`` (intercept not penalised), solved by L-BFGS in
  float64 to its optimum, so it equals ``LogisticRegression(C=C)`` on the same features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

HEADS = ("linear", "cosine", "logistic")


def cosine_logits(z: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    return scale * F.normalize(z, dim=-1) @ F.normalize(weight, dim=-1).T


def fit_sgd(
    zs: torch.Tensor,
    ys: torch.Tensor,
    ways: int,
    cosine: bool,
    steps: int,
    lr: float,
    weight_decay: float,
    scale: float,
):
    """Weights (and bias for ``linear``) after ``steps`` full-batch SGD steps."""
    if cosine:
        onehot = F.one_hot(ys, ways).to(zs.dtype)
        params = [(onehot.T @ F.normalize(zs, dim=-1)).requires_grad_()]
    else:
        params = [
            zs.new_zeros(ways, zs.shape[1], requires_grad=True),
            zs.new_zeros(ways, requires_grad=True),
        ]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, dampening=0.9, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad()
        logits = cosine_logits(zs, params[0], scale) if cosine else F.linear(zs, *params)
        F.cross_entropy(logits, ys).backward()
        opt.step()
    return [p.detach() for p in params]


def fit_logistic(
    zs: torch.Tensor, ys: torch.Tensor, ways: int, c: float = 1.0, max_iter: int = 200
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression (weights ``[ways, D]``, intercepts ``[ways]``) at the
    optimum of scikit-learn's objective, divided by ``C * n`` to keep it well scaled."""
    z = zs.double()
    w = z.new_zeros(ways, z.shape[1], requires_grad=True)
    b = z.new_zeros(ways, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def objective():
        opt.zero_grad()
        loss = F.cross_entropy(F.linear(z, w, b), ys) + w.pow(2).sum() / (2 * c * len(z))
        loss.backward()
        return loss

    opt.step(objective)
    return w.detach(), b.detach()


def episode_logits(
    head: str,
    zs: torch.Tensor,
    ys: torch.Tensor,
    zq: torch.Tensor,
    ways: int,
    steps: int = 100,
    lr: float = 0.01,
    weight_decay: float = 1e-3,
    scale: float = 10.0,
    c: float = 1.0,
) -> torch.Tensor:
    """Query logits ``[Nq, ways]`` of a ``head`` fitted to detached support features."""
    zs, zq = zs.detach(), zq.detach()
    with torch.enable_grad():
        if head == "logistic":
            w, b = fit_logistic(zs, ys, ways, c)
            return F.linear(zq.double(), w, b).to(zq.dtype)
        params = fit_sgd(zs, ys, ways, head == "cosine", steps, lr, weight_decay, scale)
    return cosine_logits(zq, params[0], scale) if head == "cosine" else F.linear(zq, *params)

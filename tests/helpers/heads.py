"""The episode heads' SGD fit (algorithms/episode_heads.py) written out independently: torch's
SGD update in numpy float64 with the cross-entropy gradients in closed form; the reference of
test_episode_heads and of the pretraining methods' evaluation in test_pretrain."""

from __future__ import annotations

import numpy as np


def softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def sgd_by_hand(x, y, ways, cosine, steps, lr, weight_decay, scale):
    """The head's parameters after ``steps`` full-batch steps of torch.optim.SGD(momentum=0.9,
    dampening=0.9) as its documentation defines them (first step: the buffer is the gradient;
    then ``buf = 0.9 buf + 0.1 g``; ``g`` includes ``weight_decay * p``) on the mean
    cross-entropy, whose gradients are written in closed form. Linear: ``x W^T + b`` from zero;
    cosine: ``scale * cos(w_c, x)`` from each class's sum of unit-length features."""
    n = len(x)
    target = np.eye(ways)[y]
    xn = unit_rows(x)
    if cosine:
        w = np.zeros((ways, x.shape[1]))
        np.add.at(w, y, xn)
        params = [w]
    else:
        params = [np.zeros((ways, x.shape[1])), np.zeros(ways)]
    buffers = [None] * len(params)
    for _ in range(steps):
        if cosine:
            norm = np.linalg.norm(params[0], axis=1, keepdims=True)
            wn = params[0] / norm
            d_logits = (softmax(scale * xn @ wn.T) - target) / n
            d_wn = scale * d_logits.T @ xn  # then through w -> w / |w|: the tangential part
            grads = [(d_wn - wn * (d_wn * wn).sum(1, keepdims=True)) / norm]
        else:
            d_logits = (softmax(x @ params[0].T + params[1]) - target) / n
            grads = [d_logits.T @ x, d_logits.sum(0)]
        for i, g in enumerate(grads):
            g = g + weight_decay * params[i]
            buffers[i] = g if buffers[i] is None else 0.9 * buffers[i] + 0.1 * g
            params[i] = params[i] - lr * buffers[i]
    return params


def hand_logits(head, zs, ys, zq, ways, steps=100, lr=0.01, weight_decay=1e-3, scale=10.0):
    """The documented defaults: Baseline's 100 steps of lr 0.01, weight decay 1e-3, scale 10."""
    x, q = zs.double().numpy(), zq.double().numpy()
    params = sgd_by_hand(x, ys.numpy(), ways, head == "cosine", steps, lr, weight_decay, scale)
    if head == "cosine":
        return scale * unit_rows(q) @ unit_rows(params[0]).T
    return q @ params[0].T + params[1]

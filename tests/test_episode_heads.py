"""The episode classifiers of the pretrain-then-fine-tune methods (algorithms/episode_heads.py),
called in process against independent references: torch's SGD update (momentum, dampening,
weight decay) written out by hand in numpy float64 with the gradients in closed form, and
scikit-learn's cosine similarity and LogisticRegression. Tiny episodes, so they are fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.heads import hand_logits
from metalab.algorithms.episode_heads import cosine_logits, episode_logits, fit_logistic

WAYS, SHOTS, DIM = 3, 2, 5


def features(seed: int, dtype=torch.float64):
    """Support features ``[WAYS * SHOTS, DIM]`` around per-class centres, labels, and 4 queries
    (no class is more frequent: the unbalanced shots make the intercepts matter)."""
    g = torch.Generator().manual_seed(seed)
    centres = 2 * torch.randn(WAYS, DIM, generator=g, dtype=torch.float64)
    ys = torch.tensor([0, 0, 0, 1, 2, 2])
    zs = centres[ys] + torch.randn(len(ys), DIM, generator=g, dtype=torch.float64) + 0.5
    zq = torch.randn(4, DIM, generator=g, dtype=torch.float64) + 0.5
    return zs.to(dtype), ys, zq.to(dtype)


SETTINGS = {
    "defaults": {},
    "given": {"steps": 7, "lr": 0.3, "weight_decay": 0.05, "scale": 3.0},
}


@pytest.mark.parametrize("settings", sorted(SETTINGS))
@pytest.mark.parametrize("head", ["linear", "cosine"])
def test_sgd_heads_follow_torch_sgd_written_by_hand(head, settings, one_thread):
    zs, ys, zq = features(0)
    kwargs = SETTINGS[settings]
    logits = episode_logits(head, zs, ys, zq, WAYS, **kwargs)
    ref = hand_logits(head, zs, ys, zq, WAYS, **kwargs)
    assert logits.shape == (4, WAYS) and logits.dtype == torch.float64
    np.testing.assert_allclose(logits.numpy(), ref, rtol=1e-10, atol=1e-10)
    # not a trivial agreement: the fitted head separates the classes of its support set
    support = episode_logits(head, zs, ys, zs, WAYS, **kwargs)
    assert (support.argmax(1) == ys).all(), support


def test_cosine_logits_are_scaled_cosine_similarity():
    from sklearn.metrics.pairwise import cosine_similarity

    g = torch.Generator().manual_seed(1)
    z, w = torch.randn(5, 4, generator=g) + 1, torch.randn(3, 4, generator=g) - 1
    np.testing.assert_allclose(
        cosine_logits(z, w, 2.5).numpy(),
        2.5 * cosine_similarity(z.numpy(), w.numpy()),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("c", [None, 0.05])
def test_logistic_head_equals_scikit_learn_at_default_and_given_c(c, one_thread):
    """RFS's head on unnormalised float32 features: scikit-learn's C=1 when ``c`` is not given;
    float32 in, float32 out (fitted in float64)."""
    from sklearn.linear_model import LogisticRegression

    zs, ys, zq = features(2, dtype=torch.float32)
    ref = LogisticRegression(C=c or 1.0, tol=1e-12, max_iter=10_000)
    ref.fit(zs.double().numpy(), ys.numpy())
    given = {} if c is None else {"c": c}
    logits = episode_logits("logistic", zs, ys, zq, WAYS, **given)
    assert logits.dtype == torch.float32
    np.testing.assert_allclose(
        logits.softmax(-1).numpy(), ref.predict_proba(zq.double().numpy()), atol=1e-5
    )
    w, b = fit_logistic(zs, ys, WAYS, **given)
    assert w.dtype == b.dtype == torch.float64
    # softmax is shift-invariant; scikit-learn's multinomial coefficients sum to zero
    np.testing.assert_allclose((w - w.mean(0)).numpy(), ref.coef_, atol=1e-6)
    np.testing.assert_allclose((b - b.mean()).numpy(), ref.intercept_, atol=1e-6)


@pytest.mark.parametrize("head", ["linear", "cosine", "logistic"])
def test_heads_fit_detached_features_under_no_grad(head, one_thread):
    """Evaluation runs under ``torch.no_grad()`` with features that came out of the backbone:
    the head still fits (it enables grad itself), no gradient reaches the features, and the
    logits carry no graph; float32 features give float32 logits equal to float64's."""
    zs64, ys, zq64 = features(3)
    zs, zq = zs64.float().requires_grad_(), zq64.float().requires_grad_()
    with torch.no_grad():
        logits = episode_logits(head, zs, ys, zq, WAYS)
    assert zs.grad is None and zq.grad is None and not logits.requires_grad
    assert logits.dtype == torch.float32
    ref = episode_logits(head, zs64, ys, zq64, WAYS)
    np.testing.assert_allclose(logits.numpy(), ref.numpy(), rtol=1e-3, atol=1e-3)

"""The closed-form heads on fixed features: R2-D2's ridge regression against scikit-learn's
Ridge, MetaOptNet's SVM against scikit-learn's Crammer-Singer LinearSVC (liblinear), and the
gradients of both against float64 finite differences (torch.autograd.gradcheck)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.svm import LinearSVC

from metalab.algorithms.metaoptnet import R2D2, MetaOptNet, ridge_weights, svm_dual
from metalab.errors import ConfigError

WAYS, SHOTS, QUERIES, DIM = 5, 2, 3, 16


def features(seed=0, shots=SHOTS, dim=DIM):
    g = torch.Generator().manual_seed(seed)
    support = torch.randn(WAYS * shots, dim, generator=g, dtype=torch.float64)
    query = torch.randn(WAYS * QUERIES, dim, generator=g, dtype=torch.float64)
    return support, torch.arange(WAYS).repeat_interleave(shots), query


class Fixed(torch.nn.Module):
    """A backbone stand-in: the inputs are the features."""

    def embed(self, x):
        return x


@pytest.mark.parametrize("lam", [0.1, 1.0, 50.0])
@pytest.mark.parametrize("shots", [1, 5])  # fewer and more examples than dimensions
def test_ridge_head_equals_sklearn_ridge(lam, shots):
    support, labels, query = features(shots=shots, dim=8)
    ridge = Ridge(alpha=lam, fit_intercept=False).fit(support.numpy(), np.eye(WAYS)[labels])
    np.testing.assert_allclose(
        ridge_weights(support, labels, WAYS, lam).numpy(), ridge.coef_.T, rtol=1e-9, atol=1e-12
    )
    head = R2D2(lambda out_dim: Fixed(), lam=lam, scale=2.0, optimizer=None).double()
    # (lambda is stored as a float32 log before .double(): ~1e-8 relative)
    np.testing.assert_allclose(
        head.classify(support, labels, query, WAYS).detach().numpy(),
        2.0 * query.numpy() @ ridge.coef_.T,
        rtol=1e-6,
        atol=1e-9,
    )


def test_ridge_head_gradient_matches_finite_differences():
    support, labels, query = features()
    lam = torch.tensor(0.7, dtype=torch.float64)
    for t in (support, query, lam):
        t.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda s, q, lam: q @ ridge_weights(s, labels, WAYS, lam), (support, query, lam)
    )


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_svm_head_equals_sklearn_crammer_singer_svm(c):
    support, labels, query = features()
    svm = LinearSVC(
        C=c, multi_class="crammer_singer", fit_intercept=False, tol=1e-12, max_iter=1_000_000
    ).fit(support.numpy(), labels.numpy())
    alpha = svm_dual(support, labels, WAYS, c, dual_ridge=0.0, max_iter=50)
    np.testing.assert_allclose((alpha.T @ support).numpy(), svm.coef_, rtol=1e-6, atol=1e-8)
    head = MetaOptNet(
        lambda out_dim: Fixed(), c=c, dual_ridge=0.0, max_iter=50, optimizer=None
    ).double()
    np.testing.assert_allclose(
        head.classify(support, labels, query, WAYS).detach().numpy(),
        query.numpy() @ svm.coef_.T,
        rtol=1e-6,
        atol=1e-8,
    )


@pytest.mark.parametrize("dual_ridge", [0.0, 1.0])
@pytest.mark.parametrize("shots", [1, 2])
def test_svm_head_gradient_matches_finite_differences(dual_ridge, shots):
    """Directional derivatives of the query loss along random directions of the support and
    query features: central differences against the gradient through the QP. qpth
    differentiates the KKT system at its interior-point solution, whose active constraints
    are met to ~1e-13, not exactly: agreement to ~1e-5 relative."""
    support, labels, query = features(seed=1, shots=shots)
    targets = torch.arange(WAYS).repeat_interleave(QUERIES)

    def loss(s, q):
        alpha = svm_dual(s, labels, WAYS, 0.1, dual_ridge, max_iter=50)
        return torch.nn.functional.cross_entropy((q @ s.T) @ alpha, targets)

    s, q = support.clone().requires_grad_(), query.clone().requires_grad_()
    grad_s, grad_q = torch.autograd.grad(loss(s, q), (s, q))
    g, eps = torch.Generator().manual_seed(0), 1e-5
    for _ in range(3):
        vs = torch.randn(s.shape, generator=g, dtype=s.dtype)
        vq = torch.randn(q.shape, generator=g, dtype=q.dtype)
        with torch.no_grad():
            numeric = (
                loss(support + eps * vs, query + eps * vq)
                - loss(support - eps * vs, query - eps * vq)
            ) / (2 * eps)
        analytic = (grad_s * vs).sum() + (grad_q * vq).sum()
        assert analytic.item() == pytest.approx(numeric.item(), rel=1e-4)


def test_bad_head_settings_are_config_errors():
    for cls, key, value, allowed in (
        (R2D2, "lam", 0.0, "the ridge penalty must be > 0"),
        (MetaOptNet, "c", -1.0, "the SVM's slack penalty C must be > 0"),
        (MetaOptNet, "c", 0.0, "the SVM's slack penalty C must be > 0"),
        (MetaOptNet, "dual_ridge", -1.0, "must be >= 0"),
        (MetaOptNet, "max_iter", 0, "must be a positive integer"),
    ):
        with pytest.raises(ConfigError) as err:
            cls(lambda out_dim: Fixed(), optimizer=None, **{key: value})
        assert str(err.value) == f"algorithm.{key}={value}: {allowed}"


def test_fixed_scale_and_lambda_are_buffers_that_scale_the_logits():
    """learn_scale/learn_lam false: the values are kept (saved with the model, moved with it)
    but not trained; the logits are still scale * the closed-form head's, lambda as given."""
    support, labels, query = features(shots=1, dim=8)
    ridge = Ridge(alpha=3.0, fit_intercept=False).fit(support.numpy(), np.eye(WAYS)[labels])
    head = R2D2(
        lambda out_dim: Fixed(),
        lam=3.0,
        learn_lam=False,
        scale=0.5,
        learn_scale=False,
        optimizer=None,
    ).double()
    assert list(head.parameters()) == []
    assert sorted(head.state_dict()) == ["log_lam", "scale"]
    learned = R2D2(lambda out_dim: Fixed(), optimizer=None)  # R2-D2 learns both by default
    assert sorted(n for n, _ in learned.named_parameters()) == ["log_lam", "scale"]
    np.testing.assert_allclose(
        head.classify(support, labels, query, WAYS).numpy(),
        0.5 * query.numpy() @ ridge.coef_.T,
        rtol=1e-6,
        atol=1e-9,
    )


def test_heads_solve_in_float32_under_bf16_autocast():
    """Under bf16-mixed precision the embeddings arrive in bfloat16: the heads solve in float32
    with autocast off (a bfloat16 solve is off by ~1e-2), returning float32 logits."""
    support, labels, query = features(shots=5, dim=8)
    ridge = Ridge(alpha=1.0, fit_intercept=False).fit(support.numpy(), np.eye(WAYS)[labels])
    head = R2D2(lambda out_dim: Fixed(), lam=1.0, optimizer=None)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head.classify(support.float(), labels, query.float(), WAYS)
        rounded = head.classify(support.bfloat16(), labels, query.bfloat16(), WAYS)
    assert logits.dtype == rounded.dtype == torch.float32
    want = query.numpy() @ ridge.coef_.T
    np.testing.assert_allclose(logits.detach().numpy(), want, rtol=1e-4, atol=1e-5)
    reference = Ridge(alpha=1.0, fit_intercept=False).fit(
        support.bfloat16().double().numpy(), np.eye(WAYS)[labels]
    )  # the bfloat16-rounded features, solved exactly
    np.testing.assert_allclose(
        rounded.detach().numpy(),
        query.bfloat16().double().numpy() @ reference.coef_.T,
        rtol=1e-4,
        atol=1e-5,
    )


def test_svm_head_takes_and_returns_float32():
    """Float32 embeddings (the default precision): the QP is solved in float64 and the logits
    come back in float32, equal to scikit-learn's SVM to float32 precision."""
    support, labels, query = features()
    svm = LinearSVC(
        C=0.1, multi_class="crammer_singer", fit_intercept=False, tol=1e-12, max_iter=1_000_000
    ).fit(support.numpy(), labels.numpy())
    head = MetaOptNet(lambda out_dim: Fixed(), c=0.1, dual_ridge=0.0, max_iter=50, optimizer=None)
    logits = head.classify(support.float(), labels, query.float(), WAYS)
    assert logits.dtype == torch.float32
    want = query.numpy() @ svm.coef_.T
    np.testing.assert_allclose(logits.detach().numpy(), want, rtol=1e-4, atol=1e-5)


def test_svm_head_runs_the_configured_interior_point_iterations():
    """One iteration of qpth's interior-point method is not yet scikit-learn's optimum (a
    weight off by more than 0.05); 15 are. The SVM head passes its ``max_iter`` on."""
    support, labels, query = features()
    svm = LinearSVC(
        C=0.1, multi_class="crammer_singer", fit_intercept=False, tol=1e-12, max_iter=1_000_000
    ).fit(support.numpy(), labels.numpy())
    for max_iter, close in ((1, False), (15, True)):
        alpha = svm_dual(support, labels, WAYS, 0.1, dual_ridge=0.0, max_iter=max_iter)
        assert np.allclose((alpha.T @ support).numpy(), svm.coef_, atol=0.05) is close
        head = MetaOptNet(
            lambda out_dim: Fixed(), c=0.1, dual_ridge=0.0, max_iter=max_iter, optimizer=None
        ).double()
        logits = head.classify(support, labels, query, WAYS).detach().numpy()
        assert np.allclose(logits, query.numpy() @ svm.coef_.T, atol=0.05) is close

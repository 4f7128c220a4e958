"""Pretrain-then-fine-tune (Baseline, Baseline++, RFS, Meta-Baseline): the episode classifiers
against scikit-learn and scipy, the shuffled mini-batches, init_from and the teacher, one and
two processes, resume, and the one-line errors before any training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import (
    TINY,
    assert_results_are_the_episode_means,
    compose,
    read_results,
    train_cli,
)
from helpers.ddp import SGD, one_and_two_processes_agree
from metalab.algorithms.episode_heads import episode_logits, fit_logistic, fit_sgd
from metalab.algorithms.pretrain import CosineClassifier, distill_loss
from metalab.data.batches import ShuffledBatches, split_labels
from metalab.errors import ConfigError
from metalab.run.config import check_config
from metalab.run.init_from import load_backbone
from metalab.run.training import build_datamodule, build_model

PRETRAIN = ("baseline", "baseline_pp", "rfs")


def features(seed: int, ways: int = 5, shots: int = 5, dim: int = 16, queries: int = 3):
    """Separable-ish class clusters: support and query features with labels."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(ways, dim, generator=g)
    ys, yq = torch.arange(ways).repeat_interleave(shots), torch.arange(ways).repeat(queries)
    zs = centres[ys] + 0.8 * torch.randn(len(ys), dim, generator=g)
    zq = centres[yq] + 0.8 * torch.randn(len(yq), dim, generator=g)
    return zs.double(), ys, zq.double()


# -- the episode classifiers against independent references -------------------------------------
@pytest.mark.parametrize("c", [1.0, 0.05])
@pytest.mark.parametrize("seed", [0, 1])
def test_logistic_head_equals_scikit_learn(seed, c):
    from sklearn.linear_model import LogisticRegression

    zs, ys, zq = features(seed)
    zs, zq = F.normalize(zs, dim=-1), F.normalize(zq, dim=-1)  # RFS's features
    ref = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(zs.numpy(), ys.numpy())
    logits = episode_logits("logistic", zs, ys, zq, 5, c=c)
    np.testing.assert_allclose(logits.softmax(-1).numpy(), ref.predict_proba(zq.numpy()), atol=1e-5)
    w, b = fit_logistic(zs, ys, 5, c)  # softmax is shift-invariant: compare centred weights
    np.testing.assert_allclose((w - w.mean(0)).numpy(), ref.coef_ - ref.coef_.mean(0), atol=1e-4)


def test_linear_head_reaches_the_minimum_scipy_finds():
    """Baseline's head: full-batch SGD with weight decay minimises mean CE + wd/2 |W, b|^2;
    run long enough, it lands where scipy's L-BFGS-B puts the minimum of that objective."""
    from scipy.optimize import minimize

    zs, ys, _ = features(2, dim=8)
    wd, n, ways, dim = 0.01, len(zs), 5, 8
    x, y = zs.numpy(), ys.numpy()

    def objective(theta):
        w, b = theta[: ways * dim].reshape(ways, dim), theta[ways * dim :]
        logits = x @ w.T + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        loss = -np.log(p[np.arange(n), y]).mean() + wd / 2 * (theta**2).sum()
        p[np.arange(n), y] -= 1
        grad = np.concatenate([(p.T @ x / n).ravel(), p.mean(0)]) + wd * theta
        return loss, grad

    ref = minimize(
        objective,
        np.zeros(ways * (dim + 1)),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000},
    ).x
    w, b = fit_sgd(zs, ys, ways, cosine=False, steps=4000, lr=0.5, weight_decay=wd, scale=1)
    np.testing.assert_allclose(torch.cat([w.ravel(), b]).numpy(), ref, atol=1e-5)


def test_cosine_classifier_is_scaled_cosine_similarity():
    from sklearn.metrics.pairwise import cosine_similarity

    head = CosineClassifier(6, 4, scale=3.0)
    z = torch.randn(5, 6)
    np.testing.assert_allclose(
        head(z).detach().numpy(),
        3.0 * cosine_similarity(z.numpy(), head.weight.detach().numpy()),
        rtol=1e-5,
        atol=1e-6,
    )


def test_meta_baseline_scores_queries_by_cosine_to_the_class_means():
    """Meta-Baseline's head: the learned temperature times scikit-learn's cosine similarity of
    each query to the numpy mean of its class's support features."""
    from sklearn.metrics.pairwise import cosine_similarity

    from metalab.data.episodes import Episodes

    model = build_model(compose(["algorithm=meta_baseline", "backbone.hidden=8"]))
    g = torch.Generator().manual_seed(0)
    sx, qx = torch.randn(1, 6, 1, 28, 28, generator=g), torch.randn(1, 4, 1, 28, 28, generator=g)
    sy = torch.tensor([[0, 1, 2, 0, 1, 2]])
    logits = model.predict(Episodes(sx, sy, qx, torch.zeros(1, 4, dtype=torch.long)), True)
    zs, zq = (
        z.detach().numpy() for z in model.net.embed(torch.cat([sx[0], qx[0]])).split([6, 4])
    )  # transductive: support and queries share one batch
    means = np.stack([zs[sy[0].numpy() == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(
        logits[0].detach().numpy(), 10.0 * cosine_similarity(zq, means), rtol=1e-4, atol=1e-5
    )


def test_distillation_term_is_scipy_kl_divergence():
    from scipy.special import rel_entr, softmax

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    t = 4.0
    ref = rel_entr(softmax(teacher.numpy() / t, 1), softmax(student.numpy() / t, 1)).sum() / 7
    assert float(distill_loss(student, teacher, t)) == pytest.approx(ref * t * t, rel=1e-5)


# -- shuffled mini-batches -------------------------------------------------------------------
def test_every_sample_once_per_epoch_and_batches_cross_epochs():
    order = ShuffledBatches(n=10, batch_size=4, seed=3)
    drawn = torch.cat([order.indices(s) for s in range(5)])  # 20 samples: two epochs
    assert sorted(drawn[:10].tolist()) == list(range(10)) == sorted(drawn[10:].tolist())
    assert drawn[:10].tolist() != drawn[10:].tolist()  # a new shuffle every epoch
    again = ShuffledBatches(n=10, batch_size=4, seed=3)
    assert torch.equal(again.indices(3), drawn[12:16])  # a function of the step: resumable


def test_batches_hold_the_train_split_images_with_their_class_labels(one_thread):
    cfg = compose(["algorithm=baseline", "algorithm.batch_size=32"])
    dm = build_datamodule(cfg)
    dm.load()
    loaded = dm.sources["train"]
    labels = split_labels(loaded)
    assert dm.n_classes == int(labels.max()) + 1 and len(labels) == len(loaded.images)
    for c in (0, dm.n_classes - 1):  # the positions of class c carry label c
        rows = loaded.index.table[c][loaded.index.table[c] >= 0]
        assert (labels[rows] == c).all()
    x, y = dm.train_batch(5)
    assert x.shape == (32, *loaded.images.shape[1:]) and torch.equal(y, labels[dm.order.indices(5)])
    # normalised images of exactly those samples (glyphs: no augmentation)
    want = (loaded.images[dm.order.indices(5)].float() / 255 - loaded.mean) / loaded.std
    assert torch.allclose(x, want)


# -- init_from and the teacher ---------------------------------------------------------------
def save_run(path, overrides):
    """A checkpoint as a run writes it (state_dict, global_step) of a freshly built model."""
    model = build_model(compose(overrides))
    if hasattr(model, "make_classifier"):
        model.classifier = model.make_classifier(7)
    torch.save({"state_dict": model.state_dict(), "global_step": 0}, path)
    return model


def test_init_from_copies_the_backbone_and_keeps_a_new_head(tmp_path, one_thread):
    source = save_run(tmp_path / "pre.ckpt", ["algorithm=baseline", "backbone.hidden=8"])
    for algorithm in ("meta_baseline", "maml"):
        model = build_model(compose([f"algorithm={algorithm}", "backbone.hidden=8"]))
        load_backbone(model, "init_from", str(tmp_path / "pre.ckpt"))
        for name, value in source.net.state_dict().items():
            assert torch.equal(model.net.state_dict()[name], value), name
    assert model.net.head.weight.shape[0] == 5  # MAML's own head, not the pretraining one


@pytest.mark.parametrize(
    "overrides, key, allowed",
    [
        (
            ["algorithm=baseline", "dataset=sinusoid", "backbone=mlp"],
            "algorithm=baseline",
            "classification tasks only",
        ),
        (
            ["algorithm=rfs", "dataset=clinc150", "backbone=text_cnn"],
            "algorithm=rfs",
            "image datasets only",
        ),
        (
            ["algorithm=baseline", "algorithm.batch_size=10", "algorithm.meta_batch=4"],
            "algorithm.batch_size=10",
            "equal batch-norm groups",
        ),
        (
            ["algorithm=baseline", "algorithm.batch_size=0"],
            "algorithm.batch_size=0",
            "must be a positive integer",
        ),
        (["algorithm=baseline", "algorithm.eval_head=svm"], "algorithm.eval_head=svm", "allowed"),
        (["algorithm=meta_baseline"], "init_from=None", "trains from a pretrained backbone"),
        (
            ["algorithm=meta_baseline", "init_from=/nonexistent/run"],
            "init_from=/nonexistent/run",
            "no such run folder or checkpoint file",
        ),
        (["algorithm=protonet", "init_from={tmp}"], "init_from={tmp}", "without checkpoints"),
        (
            ["algorithm=protonet", "init_from={tmp}/wide.ckpt"],
            "init_from={tmp}/wide.ckpt",
            "a run of another backbone or size",
        ),
        (
            ["algorithm=protonet", "backbone=resnet12", "init_from={tmp}/wide.ckpt"],
            "init_from={tmp}/wide.ckpt",
            "not a run of this backbone",
        ),
        (
            ["algorithm=rfs", "algorithm.teacher={tmp}/proto.ckpt"],
            "algorithm.teacher={tmp}/proto.ckpt",
            "not a pretraining run",
        ),
    ],
)
def test_bad_settings_stop_in_check_config(tmp_path, overrides, key, allowed):
    save_run(tmp_path / "wide.ckpt", ["algorithm=baseline", "backbone.hidden=16"])
    save_run(tmp_path / "proto.ckpt", ["algorithm=protonet"])
    cfg = compose([o.replace("{tmp}", str(tmp_path)) for o in overrides])
    with pytest.raises(ConfigError, match=allowed) as error:
        check_config(cfg)
    assert str(error.value).startswith(key.replace("{tmp}", str(tmp_path)) + ":")


def test_a_batch_larger_than_the_train_split_stops_after_loading_before_training(tmp_path):
    cfg = compose(["algorithm=baseline", "algorithm.batch_size=100000"])
    check_config(cfg)
    with pytest.raises(ConfigError, match="the train split of dataset=glyphs has only") as err:
        build_datamodule(cfg).load()
    assert err.value.key == "algorithm.batch_size"


# -- end to end ------------------------------------------------------------------------------
@pytest.mark.e2e
def test_pretrain_then_meta_baseline_from_it(tmp_path):
    """metalab-train as a user runs it: an RFS run (results.json as every run's, test episodes
    fitted with logistic regression), then Meta-Baseline from its folder; a missing init_from
    is one line, before any training."""
    budget = [*TINY, "backbone.hidden=16", "logger=csv"]
    proc = train_cli(
        tmp_path / "rfs",
        "algorithm=rfs",
        "algorithm.batch_size=32",
        *budget,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = assert_results_are_the_episode_means(tmp_path / "rfs")
    assert results["test/acc"] > 0.4 and results["perf/images_per_sec"] > 0  # 5-way: 0.2 chance
    proc = train_cli(
        tmp_path / "mb",
        "algorithm=meta_baseline",
        f"init_from={tmp_path / 'rfs'}",
        *budget,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_results(tmp_path / "mb").keys() >= {"test/acc", "test/acc_ci95", "val/acc_best"}
    proc = train_cli(tmp_path / "bad", "algorithm=meta_baseline", "init_from=/nope", *budget)
    assert proc.returncode == 2 and "init_from=/nope: no such run folder" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "bad" / "checkpoints").exists()


@pytest.mark.slow  # four training processes per method: ~20 s each on a quiet 2-core machine
@pytest.mark.parametrize("algorithm", PRETRAIN)
def test_two_processes_equal_one(tmp_path, algorithm):
    """Each rank takes its half of every global batch, normalised in the same 4 groups, and
    augments each sample with its own generator."""
    one_and_two_processes_agree(
        tmp_path,
        algorithm,
        [
            "backbone.hidden=16",
            "algorithm.batch_size=16",
            "+dataset.augment.flip=true",
            "+dataset.augment.crop_padding=2",
            *SGD,
        ],
    )


@pytest.mark.slow  # three training runs: ~40 s on a quiet 2-core machine
def test_resumed_pretraining_equals_uninterrupted(tmp_path):
    """A run continued from its checkpoint at step 3 draws the batches it would have drawn
    (the order is a function of the step) and ends with the uninterrupted run's weights."""
    args = [
        "algorithm=baseline",
        "backbone.hidden=8",
        "algorithm.batch_size=16",
        "val_every=3",
        "val_episodes=2",
        "test_episodes=2",
        "eval_batch=2",
        "logger=csv",
        "+dataset.augment.flip=true",
        *SGD,
    ]
    for run_dir, steps in (
        (tmp_path / "whole", 6),
        (tmp_path / "resumed", 3),
        (tmp_path / "resumed", 6),
    ):
        proc = train_cli(run_dir, *args, f"steps={steps}", env={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
    whole, resumed = (
        torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)
        for name in ("whole", "resumed")
    )
    assert whole["global_step"] == resumed["global_step"] == 6
    for key, value in whole["state_dict"].items():
        assert torch.allclose(value, resumed["state_dict"][key], atol=1e-6), key

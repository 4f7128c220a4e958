"""Pretrain-then-fine-tune (Baseline, Baseline++, RFS, Meta-Baseline): the episode classifiers
against scikit-learn and scipy, the shuffled mini-batches, init_from and the teacher, one and
two processes, resume, and the one-line errors before any training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from helpers import (
    TINY,
    assert_results_are_the_episode_means,
    compose,
    fit_one_batch,
    read_csv,
    read_results,
    record_log_options,
    train_cli,
)
from helpers.ddp import SGD, one_and_two_processes_agree
from helpers.heads import hand_logits
from metalab.algorithms.episode_heads import episode_logits, fit_logistic, fit_sgd
from metalab.algorithms.pretrain import CosineClassifier, Pretrainer, distill_loss
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
def save_run(path, overrides, classes: int = 7):
    """A checkpoint as a run writes it (state_dict, global_step) of a freshly built model."""
    model = build_model(compose(overrides))
    if hasattr(model, "make_classifier"):
        model.classifier = model.make_classifier(classes)
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


# -- one pretraining step in process, against torch.optim on a hand-written loss -------------
# batches of 8 in 2 batch-norm groups of 4; plain SGD, so one step is theta - lr * grad
STEP = ["backbone.hidden=8", "algorithm.batch_size=8", "algorithm.meta_batch=2", *SGD]


@pytest.fixture(scope="module")
def batches():
    """The loaded glyphs data module of STEP, shared by the Lightning steps."""
    dm = build_datamodule(compose(["algorithm=baseline", *STEP]))
    dm.load()
    return dm


class FirstBatch(pl.Callback):
    """The network, the classifier and the batch of the first step, as the step receives them
    (after setup)."""

    def on_train_batch_start(self, trainer, model, batch, batch_idx):
        self.net, self.classifier = copy.deepcopy(model.net), copy.deepcopy(model.classifier)
        self.batch = batch


def reference_logits(net, weight, bias, x, scale):
    """Two batch-norm groups of 4 embedded apart; a linear layer, or ``scale`` times the cosine
    of features and class weights (``bias`` None)."""
    z = torch.cat([net.embed(x[:4]), net.embed(x[4:])])
    if bias is None:
        unit = z / z.norm(dim=1, keepdim=True)
        return scale * unit @ (weight / weight.norm(dim=1, keepdim=True)).T
    return z @ weight.T + bias


@pytest.mark.parametrize(
    "algorithm, extra",
    [
        ("baseline", []),
        ("baseline_pp", ["algorithm.scale=3.0"]),
        (
            "rfs",
            ["algorithm.kd_temperature=2.0", "algorithm.kd_weight=0.7", "algorithm.ce_weight=0.3"],
        ),
    ],
)
def test_one_pretraining_step_in_lightning(tmp_path, one_thread, batches, algorithm, extra):
    """One real Lightning step of Baseline (linear classifier), Baseline++ (cosine, scale 3) and
    RFS distilling a teacher run (0.3 CE + 0.7 KL at T=2): the classifier starts as nn.Linear
    does under the run's seed whatever was drawn before (Baseline: one given before the fit,
    which predicts the first sample's class), the batch is normalised in its two groups, and
    the parameters after the step are those of torch.optim.SGD on the loss written out
    (cross-entropy as logsumexp minus the target's logit, KL as sum p_t log(p_t / p_s)); the
    loss, the accuracy and the distillation term are logged, averaged over DDP processes, the
    accuracy on the bar."""
    from torch import nn

    overrides = [f"algorithm={algorithm}", *STEP, *extra]
    teacher = None
    if algorithm == "rfs":  # a teacher run: another network and classifier
        torch.manual_seed(1)
        teacher = save_run(tmp_path / "teacher.ckpt", overrides, classes=batches.n_classes)
        overrides.append(f"algorithm.teacher={tmp_path / 'teacher.ckpt'}")
    cfg = compose(overrides)
    model = build_model(cfg)
    if algorithm == "baseline":  # every sample predicted as the first one's class: accuracy > 0
        model.classifier = model.make_classifier(batches.n_classes)
        x, y = batches.train_batch(0)
        with torch.no_grad():  # its largest logit not in row 0: a flattened argmax would show
            z = reference_logits(model.net, torch.eye(8), torch.zeros(8), x, None)
            model.classifier.weight[y[0]] = z[-1] - z[0]
            model.classifier.bias[y[0]] = 100.0
        preset = copy.deepcopy(model.classifier)
    torch.manual_seed(5)
    torch.rand(3)  # draws before the fit change nothing: the classifier is the seed's
    first = FirstBatch()
    options = record_log_options(model)
    trainer = fit_one_batch(model, batches, tmp_path, callbacks=[first])

    torch.manual_seed(5)
    init = preset if algorithm == "baseline" else nn.Linear(8, batches.n_classes)
    assert torch.equal(first.classifier.weight, init.weight)
    cosine = algorithm == "baseline_pp"
    assert cosine == (not hasattr(first.classifier, "bias"))
    if not cosine:
        assert torch.equal(first.classifier.bias, init.bias)

    x, y = first.batch
    net, classifier = first.net, first.classifier
    weight, bias = classifier.weight, getattr(classifier, "bias", None)
    logits = reference_logits(net, weight, bias, x, scale=3.0)
    loss = (logits.logsumexp(1) - logits[torch.arange(len(y)), y]).mean()
    logged = {"train/loss", "train/acc"}
    if teacher is not None:
        with torch.no_grad():
            t_logits = reference_logits(
                teacher.net, teacher.classifier.weight, teacher.classifier.bias, x, None
            )
        p_t, p_s = (t_logits / 2).softmax(1), (logits / 2).softmax(1)
        kd = (p_t * (p_t / p_s).log()).sum() / len(y) * 4
        loss = 0.3 * loss + 0.7 * kd
        assert float(trainer.callback_metrics["train/kd"]) == pytest.approx(float(kd), rel=1e-5)
        logged.add("train/kd")
    # RFS keeps its momentum and weight decay: one step of them is lr * (grad + wd * theta)
    settings = {k: v for k, v in cfg.algorithm.optimizer.items() if not k.startswith("_")}
    optimizer = torch.optim.SGD([*net.parameters(), *classifier.parameters()], **settings)
    loss.backward()
    optimizer.step()
    for (name, ours), ref in zip(
        [*model.net.named_parameters(), *model.classifier.named_parameters()],
        [*net.parameters(), *classifier.parameters()],
    ):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5, msg=name)
    assert not torch.equal(model.classifier.weight, init.weight)  # the step moved it
    assert set(trainer.callback_metrics) == logged
    # under DDP each logged value is the mean over the processes
    bar = {"train/acc": {"prog_bar": True}}
    assert options == {k: {**bar.get(k, {}), "sync_dist": True} for k in logged}
    loss = float(loss)
    assert float(trainer.callback_metrics["train/loss"]) == pytest.approx(loss, rel=1e-5)
    acc = float((logits.argmax(1) == y).float().mean())
    assert float(trainer.callback_metrics["train/acc"]) == acc
    assert (acc > 0) == (algorithm == "baseline")
    assert list(trainer.progress_bar_metrics) == ["train/acc"]
    assert trainer.global_step == 1


def test_each_group_of_a_batch_has_its_own_batch_norm_statistics(one_thread):
    """``logits(x, 2)``: each half normalised alone, as if embedded in two calls; one group
    differs (other statistics)."""
    model = build_model(compose(["algorithm=baseline", "backbone.hidden=8"]))
    model.classifier = model.make_classifier(4)
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    halves = torch.cat([model.logits(x[:3], 1), model.logits(x[3:], 1)])
    torch.testing.assert_close(model.logits(x, 2), halves)
    assert not torch.allclose(model.logits(x, 1), halves, atol=1e-3)


# -- evaluation: each episode's classifier on the pretrained features -------------------------
def image_episodes(tasks=2, ways=3, shots=2, queries=2, seed=0):
    from metalab.data.episodes import Episodes

    g = torch.Generator().manual_seed(seed)
    sy = torch.arange(ways).repeat(shots).expand(tasks, -1).clone()
    qy = torch.arange(ways).repeat(queries).expand(tasks, -1).clone()
    sx = torch.randn(tasks, ways * shots, 1, 28, 28, generator=g)
    qx = torch.randn(tasks, ways * queries, 1, 28, 28, generator=g)
    return Episodes(sx, sy, qx, qy)


def task_features(model, episodes, task):
    """Transductive: support and queries embedded in one batch; float64 numpy."""
    ns = episodes.support_x.shape[1]
    z = model.net.embed(torch.cat([episodes.support_x[task], episodes.query_x[task]]))
    z = z.detach().double()
    return z[:ns], z[ns:]


def test_rfs_fits_scikit_learn_logistic_regression_to_normalised_features(one_thread):
    from sklearn.linear_model import LogisticRegression

    model = build_model(compose(["algorithm=rfs", "backbone.hidden=8", "algorithm.c=0.3"]))
    episodes = image_episodes()
    probs = model.predict(episodes, training=False).softmax(-1)
    assert probs.shape == (2, 6, 3)
    for task in range(2):
        zs, zq = (z / z.norm(dim=1, keepdim=True) for z in task_features(model, episodes, task))
        ref = LogisticRegression(C=0.3, tol=1e-12, max_iter=10_000)
        ref.fit(zs.numpy(), episodes.support_y[task].numpy())
        np.testing.assert_allclose(probs[task].numpy(), ref.predict_proba(zq.numpy()), atol=1e-4)


@pytest.mark.parametrize("algorithm", ["baseline", "baseline_pp"])
def test_baseline_fits_each_episode_by_sgd(one_thread, algorithm):
    """The configured steps, rate, weight decay and (cosine) scale reach the episode's fit."""
    settings = dict(steps=4, lr=0.3, weight_decay=0.05, scale=3.0)
    model = build_model(
        compose(
            [f"algorithm={algorithm}", "backbone.hidden=8"]
            + [f"algorithm.finetune_{k}={v}" for k, v in settings.items()]
        )
    )
    episodes = image_episodes(tasks=1)
    logits = model.predict(episodes, training=False)
    zs, zq = task_features(model, episodes, 0)
    head = "cosine" if algorithm == "baseline_pp" else "linear"
    ref = hand_logits(head, zs, episodes.support_y[0], zq, 3, **settings)
    np.testing.assert_allclose(logits[0].detach().numpy(), ref, atol=1e-4)


def test_inductive_evaluation_and_transductive_training(one_thread):
    """With ``support_plus_query``, each query is predicted from a batch of the support set and
    that query only (as a transductive one-query episode is); training predicts transductively
    whatever the evaluation protocol."""
    args = ["algorithm=rfs", "backbone.hidden=8"]
    inductive = build_model(
        compose([*args, "protocol=inductive", "inductive_stats=support_plus_query"])
    )
    transductive = build_model(compose(args))
    transductive.load_state_dict(inductive.state_dict())
    episodes = image_episodes(queries=1)
    ours = inductive.predict(episodes, training=False)
    for i in range(episodes.query_x.shape[1]):
        one = episodes._replace(
            query_x=episodes.query_x[:, i : i + 1], query_y=episodes.query_y[:, i : i + 1]
        )
        torch.testing.assert_close(
            ours[:, i : i + 1], transductive.predict(one, True), atol=1e-4, rtol=0
        )
    whole = transductive.predict(episodes, False)
    assert not torch.allclose(ours, whole, atol=1e-3)  # the other queries changed the statistics
    torch.testing.assert_close(inductive.predict(episodes, True), whole, atol=1e-5, rtol=0)


# -- the classifier in checkpoints, the teacher, the errors -----------------------------------
def test_a_checkpoint_brings_its_classifier(one_thread):
    """A model built without data takes the classifier size and kind from a checkpoint; one
    without a classifier loads as it is; strict and assign keep their meaning."""
    args = ["algorithm=baseline_pp", "backbone.hidden=8"]
    source = build_model(compose(args))
    source.classifier = source.make_classifier(7)
    model = build_model(compose(args))
    model.load_state_dict(source.state_dict())
    assert isinstance(model.classifier, CosineClassifier) and model.classifier.scale == 10.0
    assert torch.equal(model.classifier.weight, source.classifier.weight)
    fresh = build_model(compose(args))
    fresh.load_state_dict(build_model(compose(args)).state_dict())  # no classifier: none made
    assert fresh.classifier is None
    extra = {**source.state_dict(), "extra": torch.zeros(1)}
    with pytest.raises(RuntimeError, match="extra"):
        build_model(compose(args)).load_state_dict(extra)
    build_model(compose(args)).load_state_dict(extra, strict=False)
    state = source.state_dict()
    model = build_model(compose(args))
    model.load_state_dict(state)  # copies by default
    assert model.classifier.weight.data_ptr() != state["classifier.weight"].data_ptr()
    model = build_model(compose(args))
    model.load_state_dict(state, assign=True)  # the checkpoint's own tensors, not copies
    assert model.classifier.weight.data_ptr() == state["classifier.weight"].data_ptr()


def test_the_teacher_is_the_runs_network_and_classifier_frozen(tmp_path, one_thread):
    source = save_run(tmp_path / "t.ckpt", ["algorithm=baseline_pp", "backbone.hidden=8"])
    model = build_model(
        compose(
            ["algorithm=baseline_pp", "backbone.hidden=8", f"algorithm.teacher={tmp_path}/t.ckpt"]
        )
    )
    (teacher,) = model._teacher
    assert isinstance(teacher.classifier, CosineClassifier)
    for name, value in [*source.net.state_dict().items(), *source.classifier.state_dict().items()]:
        theirs = {**teacher.net.state_dict(), **teacher.classifier.state_dict()}
        assert torch.equal(theirs[name], value), name
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(k.startswith("net.") for k in model.state_dict())  # not in the checkpoints


def test_bad_pretraining_settings_word_for_word(tmp_path):
    from metalab.backbones.mlp import MLP

    backbone = lambda out_dim: MLP((1, 4, 4), out_dim, hidden=(3,))  # noqa: E731
    for kwargs, message in (
        ({"classifier": "softmax"}, "algorithm.classifier=softmax: allowed: linear, cosine"),
        ({"eval_head": "svm"}, "algorithm.eval_head=svm: allowed: linear, cosine, logistic"),
        ({"batch_size": 0}, "algorithm.batch_size=0: must be a positive integer"),
        ({"finetune_steps": 0}, "algorithm.finetune_steps=0: must be a positive integer"),
    ):
        with pytest.raises(ConfigError) as err:
            Pretrainer(backbone, optimizer=None, **kwargs)
        assert str(err.value) == message
    groups = "equal batch-norm groups (algorithm.meta_batch, at least one per process)"
    for overrides, message in (
        (["algorithm.batch_size=0"], "algorithm.batch_size=0: must be a positive integer"),
        (
            ["algorithm.batch_size=10", "algorithm.meta_batch=4"],
            f"algorithm.batch_size=10: must divide into 4 {groups}",
        ),
        (
            ["algorithm.batch_size=9", "hardware=ddp_cpu"],
            f"algorithm.batch_size=9: must divide into 2 {groups}",
        ),
        (
            ["dataset=clinc150", "backbone=text_cnn"],
            "algorithm=baseline: pretrains on image datasets only, and dataset=clinc150 has "
            "text inputs",
        ),
    ):
        with pytest.raises(ConfigError) as err:
            Pretrainer.check_run(compose(["algorithm=baseline", *overrides]))
        assert str(err.value) == message
    for overrides in (
        ["algorithm.batch_size=9"],
        ["algorithm.batch_size=12", "algorithm.meta_batch=4", "hardware=ddp_cpu"],
    ):
        Pretrainer.check_run(compose(["algorithm=baseline", *overrides]))  # no error
    save_run(tmp_path / "proto.ckpt", ["algorithm=protonet"])
    with pytest.raises(ConfigError) as err:
        build_model(compose(["algorithm=rfs"])).load_teacher(f"{tmp_path}/proto.ckpt")
    assert str(err.value) == (
        f"algorithm.teacher={tmp_path}/proto.ckpt: not a pretraining run (baseline, baseline_pp "
        "or rfs): it has no classifier of the training classes"
    )
    # the teacher's own key in the errors of reading it
    save_run(tmp_path / "wide.ckpt", ["algorithm=rfs", "backbone.hidden=16"])
    student = build_model(compose(["algorithm=rfs", "backbone.hidden=8"]))
    for path, reason in (
        (tmp_path / "nope.ckpt", "no such run folder or checkpoint file"),
        (tmp_path / "wide.ckpt", "net.features.0.0.weight is [16, 1, 3, 3] there and [8, 1, 3, 3]"),
    ):
        with pytest.raises(ConfigError) as err:
            student.load_teacher(str(path))
        assert str(err.value).startswith(f"algorithm.teacher={path}: {reason}")


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
    augments each sample with its own generator; the logged training loss and accuracy are
    those of the whole batch (averaged over the ranks), step for step."""
    one_and_two_processes_agree(
        tmp_path,
        algorithm,
        [
            "backbone.hidden=16",
            "algorithm.batch_size=16",
            "+dataset.augment.flip=true",
            "+dataset.augment.crop_padding=2",
            "log_every=1",
            *SGD,
        ],
    )
    one, two = (read_csv(tmp_path / run / "metrics.csv") for run in ("one", "two"))
    for key in ("train/loss", "train/acc"):
        ones, twos = ([float(r[key]) for r in rows if r.get(key)] for rows in (one, two))
        assert len(ones) == 4 and ones == pytest.approx(twos, rel=1e-5, abs=1e-6), key


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

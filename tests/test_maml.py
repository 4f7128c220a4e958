"""MAML / first-order MAML / Meta-SGD: configs, checks, determinism, and short real runs."""

from __future__ import annotations

import copy
import functools

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException

from helpers import (
    IN_CI,
    OMNIGLOT_ARGS,
    OMNIGLOT_SMALL,
    TINY,
    assert_results_are_the_episode_means,
    compose,
    needs_omniglot,
    trained_model,
)
from helpers.tasks import assert_training_predicts_the_query_set_alone
from metalab.algorithms.inner_loop import InnerLoop
from metalab.algorithms.maml import MAML
from metalab.backbones.conv4 import Conv4
from metalab.backbones.mlp import MLP
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError
from metalab.run.training import build_datamodule, build_model, run

# Real handwritten characters where the small Omniglot sets are, else (never under CI=true,
# where the test then fails on the missing folder) the procedural glyphs.
HAS_OMNIGLOT = OMNIGLOT_SMALL.is_dir() or IN_CI
REAL_DATA = ["dataset=omniglot", *OMNIGLOT_ARGS] if HAS_OMNIGLOT else ["dataset=glyphs"]
on_real_data = needs_omniglot if HAS_OMNIGLOT else pytest.mark.e2e


pytestmark = pytest.mark.usefixtures("one_thread")


def config(*overrides, output_dir="/tmp/metalab-test-unused"):
    return compose(["logger=none", *overrides], output_dir=output_dir)


def episodes(num_tasks=4, ways=5, shots=1, queries=2, seed=0) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(num_tasks, ways * shots, 1, 28, 28, generator=g)
    qx = torch.randn(num_tasks, ways * queries, 1, 28, 28, generator=g)
    sy = torch.arange(ways).repeat_interleave(shots).expand(num_tasks, -1).contiguous()
    qy = torch.arange(ways).repeat_interleave(queries).expand(num_tasks, -1).contiguous()
    return Episodes(sx, sy, qx, qy)


def small_maml(**kwargs) -> MAML:
    backbone = functools.partial(Conv4, (1, 28, 28), hidden=8)
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3)
    return MAML(backbone=backbone, optimizer=optimizer, ways=5, **kwargs)


def float64(eps: Episodes) -> Episodes:
    return Episodes(eps.support_x.double(), eps.support_y, eps.query_x.double(), eps.query_y)


def learn2learn_learners(model: MAML, eps: Episodes, steps: int, first_order: bool):
    """Each task's learner adapted by learn2learn's own MAML (or MetaSGD, with the model's
    learned rates copied in), on a deep copy of the model's network: the reference."""
    import learn2learn as l2l

    net = copy.deepcopy(model.net)
    if model.learn_inner_lr:
        lrs = [
            torch.nn.Parameter(model.inner_lrs[n.replace(".", "__")].detach().clone())
            for n, _ in net.named_parameters()
        ]
        meta = l2l.algorithms.MetaSGD(net, first_order=first_order, lrs=torch.nn.ParameterList(lrs))
    else:
        meta = l2l.algorithms.MAML(net, lr=model.inner_lr, first_order=first_order)
    learners = []
    for i in range(eps.num_tasks):
        learner = meta.clone()
        for _ in range(steps):
            learner.adapt(F.cross_entropy(learner(eps.support_x[i]), eps.support_y[i]))
        learners.append(learner)
    return meta, learners


def meta_gradient(model: MAML, eps: Episodes) -> torch.Tensor:
    """Gradients of the network's parameters, then of their learned rates, in network order."""
    model.zero_grad(set_to_none=True)
    model.meta_loss(eps)[0].backward()
    names = [n for n, _ in model.net.named_parameters()]
    grads = [model.net.get_parameter(n).grad for n in names]
    if model.learn_inner_lr:
        grads += [model.inner_lrs[n.replace(".", "__")].grad for n in names]
    return torch.cat([g.flatten() for g in grads])


# -- configs ------------------------------------------------------------------------------------
def test_maml_and_fomaml_configs_build():
    maml = build_model(config("algorithm=maml"))
    assert isinstance(maml, MAML) and not maml.first_order and maml.meta_batch == 32
    assert maml.net.head.out_features == 5 and maml.needs_grad_at_eval
    assert maml.inner_steps == 1 and maml.eval_inner_steps == 3
    assert isinstance(maml.configure_optimizers(), torch.optim.Adam)
    cfg = config("algorithm=fomaml", "dataset.ways=20")
    assert cfg.algorithm.name == "fomaml" and cfg.run_name.startswith("fomaml-")
    fomaml = build_model(cfg)
    assert fomaml.first_order and fomaml.net.head.out_features == 20
    sine = build_model(
        config(
            "algorithm=maml",
            "dataset=sinusoid",
            "backbone=mlp",
            "algorithm.learn_inner_lr=true",
            "algorithm.engine=vmap",
        )
    )
    assert sine.task == "regression" and sine.net.head.out_features == 1
    assert sine.engine == "vmap" and sine.inner_lrs is not None


def test_train_ways_must_equal_eval_ways():
    with pytest.raises(InstantiationException) as info:
        build_model(config("algorithm=maml", "dataset.ways=5", "dataset.train_ways=10"))
    assert isinstance(info.value.__cause__, ConfigError)
    assert "dataset.ways=5" in str(info.value.__cause__)
    with pytest.raises(ConfigError, match="dataset.train_ways=5"):
        small_maml(eval_ways=10)
    model = small_maml()  # built without eval_ways: the evaluation episodes are checked
    with pytest.raises(ConfigError, match="dataset.ways=3"):
        model.predict(episodes(ways=3), training=False)


def test_bad_knobs_are_config_errors():
    for kwargs, message in (
        ({"engine": "jit"}, "algorithm.engine=jit: allowed: auto, loop, fused, vmap, learn2learn"),
        ({"eval_inner_steps": 0}, "algorithm.eval_inner_steps=0: must be a positive integer"),
        ({"inner_steps": 0}, "algorithm.inner_steps=0: must be a positive integer"),
        ({"checkpoint": "yes"}, "algorithm.checkpoint=yes: true or false"),
        (
            {"engine": "vmap", "checkpoint": True},
            "algorithm.checkpoint=True: checkpointing needs a per-task engine: loop, fused or auto",
        ),
        (
            {"engine": "learn2learn", "learn_inner_lr": True},
            "algorithm.engine=learn2learn: learn_inner_lr=true needs engine loop, fused, vmap "
            "or auto",
        ),
        ({"head_init": "random"}, "algorithm.head_init=random: allowed: meta, zero"),
    ):
        with pytest.raises(ConfigError) as err:
            small_maml(**kwargs)
        assert str(err.value) == message


# -- behaviour ----------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["loop", "vmap"])
@pytest.mark.parametrize(
    "kwargs",
    [{}, {"first_order": True}, {"learn_inner_lr": True}],
    ids=["maml", "fomaml", "meta_sgd"],
)
def test_module_meta_gradient_equals_learn2learn(engine, kwargs):
    """The MAML module's own meta-gradient (meta_loss().backward(), as Lightning calls it) equals
    learn2learn's MAML / MetaSGD in float64, and first and second order differ by far more than
    the tolerance, so a module that always ran first order fails here. Mutant it catches
    (src/metalab/algorithms/maml.py, MAML.predict)::

        -            mode = Mode.FIRST_ORDER if self.first_order else Mode.SECOND_ORDER
        +            mode = Mode.FIRST_ORDER
    """
    torch.manual_seed(0)
    model = small_maml(engine=engine, inner_lr=0.3, inner_steps=2, **kwargs).double()
    eps = float64(episodes(num_tasks=3))
    got = meta_gradient(model, eps)
    meta, learners = learn2learn_learners(model, eps, 2, model.first_order)
    loss = torch.stack(
        [
            F.cross_entropy(learner(eps.query_x[i]), eps.query_y[i])
            for i, learner in enumerate(learners)
        ]
    ).mean()
    loss.backward()
    want = torch.cat([p.grad.flatten() for p in meta.parameters()])
    assert want.norm() > 0
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12 * want.abs().max().item())
    if not model.first_order:  # the second-order term is large here: first order is far off
        first = meta_gradient(
            small_maml(
                engine=engine, inner_lr=0.3, inner_steps=2, first_order=True, **kwargs
            ).double(),
            eps,
        )
        assert (first - want).norm() / want.norm() > 0.05


def test_evaluation_adapts_with_eval_inner_steps():
    """Validation and test predictions are learn2learn's learner after eval_inner_steps (3)
    steps, not inner_steps (1). Mutant it catches (src/metalab/algorithms/maml.py, MAML.predict)::

        -            mode, steps = Mode.DETACHED, self.eval_inner_steps
        +            mode, steps = Mode.DETACHED, self.inner_steps
    """
    torch.manual_seed(0)
    model = small_maml(inner_steps=1, eval_inner_steps=3, inner_lr=0.3).double()
    eps = float64(episodes(num_tasks=2))
    with torch.no_grad():  # as Lightning's evaluation loop
        preds = model.predict(eps, training=False)
    for steps in (3, 1):
        _, learners = learn2learn_learners(model, eps, steps, first_order=True)
        want = torch.stack([learner(eps.query_x[i]).detach() for i, learner in enumerate(learners)])
        if steps == 3:
            torch.testing.assert_close(preds, want, rtol=1e-9, atol=1e-12)
        else:
            assert (preds - want).abs().max() > 1e-3  # one step gives other predictions


@pytest.mark.parametrize("engine", ["loop", "fused", "vmap"])
def test_zero_head_makes_one_step_a_prototype_classifier(engine):
    """head_init=zero (Kao et al. 2022): from a zero head the backbone's support gradient is zero
    and one SGD step of size alpha sets head row c to alpha/N * sum_i (1[y_i = c] - 1/ways) z_i
    (bias: the same without z_i), the closed form computed here from the embeddings. The head's
    own weights get a zero meta-gradient, the backbone a non-zero one."""
    torch.manual_seed(0)
    model = small_maml(engine=engine, inner_lr=0.7, eval_inner_steps=1, head_init="zero")
    model = model.double()
    eps = float64(episodes(num_tasks=3, shots=2))
    with torch.no_grad():  # batch norm: each task's own statistics, per set (transductive)
        z_s, z_q = (
            torch.stack([model.net.embed(t) for t in x]) for x in (eps.support_x, eps.query_x)
        )
    centred = F.one_hot(eps.support_y, 5).double() - 1 / 5  # [T, N, ways]
    weight = 0.7 / 10 * torch.einsum("tnc,tnd->tcd", centred, z_s)
    bias = 0.7 / 10 * centred.sum(1)
    want = torch.einsum("tqd,tcd->tqc", z_q, weight) + bias[:, None]
    with torch.no_grad():
        torch.testing.assert_close(model.predict(eps, training=False), want)
    preds = model.predict(eps, training=True)
    torch.testing.assert_close(preds.detach(), want)
    F.cross_entropy(preds.flatten(0, 1), eps.query_y.flatten()).backward()
    assert model.net.head.weight.grad.abs().max() == 0
    assert sum(p.grad.abs().sum() for p in model.net.features.parameters()) > 0


@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_meta_sgd_learns_the_inner_learning_rates(engine):
    torch.manual_seed(0)
    model = small_maml(learn_inner_lr=True, engine=engine, inner_lr=0.1)
    names = {n for n, _ in model.named_parameters()}
    assert {n for n in names if n.startswith("inner_lrs.")} == {
        "inner_lrs." + n.replace(".", "__") for n, _ in model.net.named_parameters()
    }
    loss, metrics = model.meta_loss(episodes())
    loss.backward()
    assert set(metrics) == {"loss", "acc"} and metrics["loss"].shape == (4,)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.inner_lrs.values())


def test_evaluation_adapts_under_no_grad_without_touching_gradients():
    torch.manual_seed(0)
    model = small_maml(eval_inner_steps=2)
    eps = episodes()
    with torch.no_grad():  # as Lightning's validation; the base turns grad on for MAML
        preds = model.predict(eps, training=False)
    assert preds.shape == (4, 10, 5) and not preds.requires_grad
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        unadapted = model.net(eps.query_x.flatten(0, 1)).view(4, 10, 5)
    assert not torch.allclose(preds, unadapted)


@pytest.mark.parametrize(
    "kwargs",
    [{"engine": "loop"}, {"engine": "vmap"}, {"first_order": True, "learn_inner_lr": True}],
)
def test_training_is_deterministic(kwargs):
    def train() -> dict[str, torch.Tensor]:
        pl.seed_everything(7, verbose=False)
        model = small_maml(**kwargs)
        opt = model.configure_optimizers()
        for step in range(3):
            opt.zero_grad()
            loss, _ = model.meta_loss(episodes(seed=step))
            loss.backward()
            opt.step()
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    first, second = train(), train()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


# -- short real runs ----------------------------------------------------------------------------
@pytest.mark.e2e
@on_real_data
def test_short_maml_run_on_real_data_beats_the_untrained_network(tmp_path):
    cfg = config(
        *REAL_DATA,
        "algorithm=maml",
        "backbone.hidden=16",
        "steps=150",
        "val_every=150",
        "val_episodes=20",
        "test_episodes=100",
        "dataset.queries=5",
        "dataset.train_queries=2",
        "algorithm.meta_batch=4",
        "algorithm.optimizer.lr=0.003",
        "pixel_baseline=false",
        output_dir=tmp_path,
    )
    trained = run(cfg, tmp_path)["test/acc"]
    # the untrained network (same seed, same adaptation) on the same test episodes
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule = build_datamodule(cfg)
    datamodule.load()
    model = build_model(cfg)
    accs = []
    for ids in datamodule.eval_ids("test"):
        eps = datamodule.eval_episodes("test", ids)
        accs.append(model.task_metrics(model.predict(eps, training=False), eps.query_y)["acc"])
    untrained = torch.cat(accs).mean().item()
    assert 0.2 < untrained < 0.7
    assert trained > untrained + 0.15, (trained, untrained)


@pytest.mark.e2e
def test_short_maml_run_on_sinusoid_adapts(tmp_path):
    cfg = config(
        "dataset=sinusoid",
        "backbone=mlp",
        "algorithm=maml",
        "steps=300",
        "val_every=300",
        "val_episodes=50",
        "test_episodes=200",
        "algorithm.meta_batch=10",
        "algorithm.inner_lr=0.01",
        "algorithm.eval_inner_steps=10",
        "algorithm.optimizer.lr=0.003",
        output_dir=tmp_path,
    )
    results = run(cfg, tmp_path)
    model, datamodule = trained_model(cfg, tmp_path, "best")
    eps = datamodule.eval_episodes("test", torch.arange(200))
    with torch.no_grad():
        before = (
            model.task_metrics(
                model.net(eps.query_x.flatten(0, 1)).view_as(eps.query_y), eps.query_y
            )["mse"]
            .mean()
            .item()
        )
    after = model.task_metrics(model.predict(eps, training=False), eps.query_y)["mse"]
    assert after.mean().item() == pytest.approx(results["test/mse"], rel=1e-4)
    assert results["test/mse"] < 0.5 * before, (results["test/mse"], before)
    assert isinstance(model.net, MLP)


@pytest.mark.e2e
def test_vmap_maml_trains_under_bf16_autocast_and_evaluates_in_float32(tmp_path, monkeypatch):
    """bf16-mixed (the GPU default) through the vmap engine, in a real run: training runs under
    autocast (bfloat16 query predictions), and evaluation, entered under autocast too, adapts
    and predicts in float32 (autocast exists on CPU as well)."""
    seen, mode = set(), []  # (mode, autocast on, output dtype) of every forward pass
    entered = set()  # (mode, autocast on) when the inner loop starts
    run_inner, forward = InnerLoop.run, InnerLoop.forward

    def spy_run(self, *args, **kwargs):
        mode.append(args[6].value)  # params, sx, sy, qx, steps, rule, mode
        entered.add((mode[-1], torch.is_autocast_enabled("cpu")))
        try:
            return run_inner(self, *args, **kwargs)
        finally:
            mode.pop()

    def spy_forward(self, params, x):
        out = forward(self, params, x)
        seen.add((mode[-1], torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    monkeypatch.setattr(InnerLoop, "run", spy_run)
    monkeypatch.setattr(InnerLoop, "forward", spy_forward)
    cfg = config(
        "algorithm=maml",
        "algorithm.engine=vmap",
        "backbone.hidden=8",
        "hardware.precision=bf16-mixed",
        "algorithm.meta_batch=2",
        *TINY,
        output_dir=tmp_path,
    )
    run(cfg, tmp_path)
    assert entered == {("second_order", True), ("detached", True)}  # Lightning's autocast
    assert ("second_order", True, torch.bfloat16) in seen  # training: under autocast
    assert {s for s in seen if s[0] == "detached"} == {("detached", False, torch.float32)}
    assert_results_are_the_episode_means(tmp_path)


def test_training_predicts_the_query_set_alone_under_any_protocol():
    assert_training_predicts_the_query_set_alone(MAML)

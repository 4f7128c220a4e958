"""Reptile: the outer update against a hand computation through the optimizer, eps annealing,
engines, determinism, config, and a short run."""

from __future__ import annotations

import copy
import functools

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from helpers import compose, trained_model
from helpers.tasks import assert_training_predicts_the_query_set_alone, record_engines
from metalab.algorithms.reptile import Reptile
from metalab.backbones.mlp import MLP
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError
from metalab.run.training import build_model, run

pytestmark = pytest.mark.usefixtures("one_thread")


def sine_episodes(num_tasks=3, shots=6, queries=4, seed=0, dtype=torch.float64) -> Episodes:
    g = torch.Generator().manual_seed(seed)
    amp = 0.1 + 4.9 * torch.rand(num_tasks, 1, 1, generator=g, dtype=dtype)
    phase = torch.pi * torch.rand(num_tasks, 1, 1, generator=g, dtype=dtype)
    x = 10 * torch.rand(num_tasks, shots + queries, 1, generator=g, dtype=dtype) - 5
    y = amp * torch.sin(x - phase)
    return Episodes(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def small_reptile(eps=0.7, total=10, **kwargs) -> Reptile:
    model = Reptile(
        backbone=functools.partial(MLP, (1,), hidden=(8, 8)),
        task="regression",
        ways=1,
        optimizer=functools.partial(torch.optim.SGD, lr=eps),
        scheduler=functools.partial(
            torch.optim.lr_scheduler.LinearLR, start_factor=1.0, end_factor=0.0, total_iters=total
        ),
        **kwargs,
    )
    return model.double()


def by_hand(net, episodes: Episodes, optimizer: str, lr: float, steps: int) -> list[dict]:
    """Each task's adapted weights from a deep copy trained with torch.optim."""
    adapted = []
    for i in range(episodes.num_tasks):
        clone = copy.deepcopy(net)
        if optimizer == "sgd":
            opt = torch.optim.SGD(clone.parameters(), lr=lr)
        else:
            opt = torch.optim.Adam(clone.parameters(), lr=lr, betas=(0.0, 0.999))
        for _ in range(steps):
            opt.zero_grad()
            F.mse_loss(clone(episodes.support_x[i]), episodes.support_y[i]).backward()
            opt.step()
        adapted.append({k: p.detach().clone() for k, p in clone.named_parameters()})
    return adapted


@pytest.mark.parametrize("engine", ["loop", "vmap"])
@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_outer_steps_are_theta_plus_annealed_eps_times_mean_delta(engine, inner):
    torch.manual_seed(0)
    lr = 0.05 if inner == "sgd" else 0.01
    model = small_reptile(
        eps=0.7, total=10, inner_optimizer=inner, inner_lr=lr, inner_steps=4, engine=engine
    )
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    for step, eps in enumerate([0.7, 0.63]):  # linear annealing: eps * (1 - step / 10)
        episodes = sine_episodes(seed=step)
        theta = {k: p.detach().clone() for k, p in model.net.named_parameters()}
        adapted = by_hand(model.net, episodes, inner, lr, 4)
        expected = {
            k: theta[k] + eps * torch.stack([a[k] - theta[k] for a in adapted]).mean(0)
            for k in theta
        }
        assert opt.param_groups[0]["lr"] == pytest.approx(eps)
        opt.zero_grad()
        loss, metrics = model.meta_loss(episodes)
        loss.backward()
        opt.step()
        sched.step()
        assert set(metrics) == {"loss", "mse"} and metrics["mse"].shape == (3,)
        for k, p in model.net.named_parameters():
            torch.testing.assert_close(p.detach(), expected[k], rtol=1e-10, atol=1e-12)


def test_zero_head_starts_every_task_at_zero_and_is_not_meta_learned():
    """head_init=zero: each task adapts from the network with its head at zero (by hand, on a
    copy with a zeroed head); the outer step moves the rest by eps * mean delta, not the head."""
    torch.manual_seed(0)
    model = small_reptile(eps=0.5, inner_optimizer="sgd", inner_lr=0.05, inner_steps=3)
    model_zero = small_reptile(
        eps=0.5, inner_optimizer="sgd", inner_lr=0.05, inner_steps=3, head_init="zero"
    )
    model_zero.load_state_dict(model.state_dict())
    episodes = sine_episodes()
    theta = {k: p.detach().clone() for k, p in model_zero.net.named_parameters()}
    start = copy.deepcopy(model_zero.net)
    torch.nn.init.zeros_(start.head.weight), torch.nn.init.zeros_(start.head.bias)
    adapted = by_hand(start, episodes, "sgd", 0.05, 3)
    opt = model_zero.configure_optimizers()["optimizer"]
    _, metrics = model_zero.meta_loss(episodes)
    model_zero.meta_loss(episodes)[0].backward()
    opt.step()
    for k, p in model_zero.net.named_parameters():
        if k.startswith("head."):
            assert torch.equal(p.detach(), theta[k])
        else:
            delta = torch.stack([a[k] - theta[k] for a in adapted]).mean(0)
            assert delta.abs().max() > 0
            torch.testing.assert_close(p.detach(), theta[k] + 0.5 * delta)
    _, plain = model.meta_loss(episodes)  # the meta-learned head: other predictions
    assert (plain["mse"] - metrics["mse"]).abs().max() > 1e-3


def test_metrics_are_the_adapted_query_errors():
    torch.manual_seed(0)
    model = small_reptile(inner_optimizer="sgd", inner_lr=0.05, inner_steps=3)
    episodes = sine_episodes()
    adapted = by_hand(model.net, episodes, "sgd", 0.05, 3)
    _, metrics = model.meta_loss(episodes)
    for i, weights in enumerate(adapted):
        clone = copy.deepcopy(model.net)
        clone.load_state_dict(weights)
        with torch.no_grad():
            mse = F.mse_loss(clone(episodes.query_x[i]), episodes.query_y[i])
        torch.testing.assert_close(metrics["mse"][i], mse)


def test_evaluation_uses_eval_inner_steps_on_the_support_set():
    torch.manual_seed(0)
    model = small_reptile(
        inner_optimizer="sgd", inner_lr=0.05, inner_steps=1, eval_inner_steps=6, inner_batch=2
    )  # inner_batch: training's minibatches; evaluation takes the whole support set
    episodes = sine_episodes()
    with torch.no_grad():
        preds = model.predict(episodes, training=False)
    adapted = by_hand(model.net, episodes, "sgd", 0.05, 6)
    for i, weights in enumerate(adapted):
        clone = copy.deepcopy(model.net)
        clone.load_state_dict(weights)
        with torch.no_grad():
            torch.testing.assert_close(preds[i], clone(episodes.query_x[i]))


def test_training_steps_use_inner_batch_minibatches_of_the_support_set():
    """With inner_batch, each training inner step sees its minibatch (by hand, the same
    shuffles); evaluation uses the whole support set."""
    model = small_reptile(inner_optimizer="sgd", inner_lr=0.05, inner_steps=3, inner_batch=2)
    episodes = sine_episodes()
    torch.manual_seed(5)
    batches = model.minibatches(6, 3)
    torch.manual_seed(5)
    _, metrics = model.meta_loss(episodes)
    for i in range(episodes.num_tasks):
        clone = copy.deepcopy(model.net)
        opt = torch.optim.SGD(clone.parameters(), lr=0.05)
        for idx in batches:
            opt.zero_grad()
            F.mse_loss(clone(episodes.support_x[i][idx]), episodes.support_y[i][idx]).backward()
            opt.step()
        with torch.no_grad():
            mse = F.mse_loss(clone(episodes.query_x[i]), episodes.query_y[i])
        torch.testing.assert_close(metrics["mse"][i], mse)


def test_the_configured_engine_runs_the_inner_loop(monkeypatch):
    engines = record_engines(monkeypatch)
    model = small_reptile(inner_optimizer="sgd", inner_lr=0.05, inner_steps=2, engine="vmap")
    model.meta_loss(sine_episodes())
    with torch.no_grad():
        model.predict(sine_episodes(), training=False)
    assert engines == ["vmap", "vmap"]


def test_training_with_minibatches_is_deterministic():
    def train():
        pl.seed_everything(3, verbose=False)
        model = small_reptile(inner_optimizer="adam", inner_lr=0.01, inner_steps=5, inner_batch=2)
        opt = model.configure_optimizers()["optimizer"]
        for step in range(3):
            opt.zero_grad()
            model.meta_loss(sine_episodes(seed=step))[0].backward()
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    first, second = train(), train()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    batches = small_reptile(inner_batch=4).minibatches(6, 3)
    assert [len(b) for b in batches] == [4, 4, 4]
    assert sorted(torch.cat(batches[:1] + [batches[1][:2]]).tolist()) == list(range(6))


def test_evaluation_episodes_must_have_the_heads_number_of_classes():
    """A 3-way head evaluated on 4-way episodes: one line naming the key and the fix; training
    episodes are not checked (they are made with the head's ways)."""
    model = Reptile(
        backbone=functools.partial(MLP, (2,), hidden=(8,)),
        ways=3,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        inner_optimizer="sgd",
        inner_lr=0.1,
        inner_steps=1,
        eval_inner_steps=2,
    ).double()
    g = torch.Generator().manual_seed(0)
    four = torch.arange(4).repeat(2)
    eps = Episodes(
        torch.randn(1, 8, 2, generator=g, dtype=torch.float64),
        four[None],
        torch.randn(1, 8, 2, generator=g, dtype=torch.float64),
        four[None],
    )
    with pytest.raises(ConfigError) as err:
        model.predict(eps, training=False)
    assert str(err.value) == (
        "dataset.ways=4: the classifier head has dataset.train_ways=3 outputs, so the "
        "evaluation episodes must have the same number of classes: set dataset.ways=3"
    )
    three = eps._replace(support_y=eps.support_y % 3, query_y=eps.query_y % 3)
    logits = model.predict(three, training=True)  # one inner SGD step on the support set
    net = copy.deepcopy(model.net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    F.cross_entropy(net(three.support_x[0]), three.support_y[0]).backward()
    opt.step()
    torch.testing.assert_close(logits[0], net(three.query_x[0]))


def test_reptile_config_and_errors():
    cfg = compose(["algorithm=reptile", "steps=300"], output_dir="/tmp/unused")
    assert cfg.algorithm.scheduler.total_iters == 300
    model = build_model(cfg)
    assert isinstance(model, Reptile) and model.inner_optimizer == "adam"
    conf = model.configure_optimizers()
    assert isinstance(conf["optimizer"], torch.optim.SGD)
    assert isinstance(conf["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.LinearLR)
    with pytest.raises(ConfigError) as err:
        small_reptile(inner_optimizer="rmsprop")
    assert str(err.value) == "algorithm.inner_optimizer=rmsprop: allowed: sgd, adam"
    with pytest.raises(ConfigError) as err:
        small_reptile(inner_batch=0)
    assert err.value.key == "algorithm.inner_batch"
    assert small_reptile(inner_betas=(0.9, 0.99)).rule().betas == (0.9, 0.99)
    with pytest.raises(ConfigError, match="algorithm.engine"):
        small_reptile(engine="learn2learn")
    with pytest.raises(ConfigError, match="dataset.ways"):
        Reptile(
            backbone=functools.partial(MLP, (1, 28, 28), hidden=(8,)),
            ways=5,
            eval_ways=20,
            optimizer=functools.partial(torch.optim.SGD, lr=1.0),
        )


@pytest.mark.e2e
def test_short_reptile_run_on_sinusoid_adapts(tmp_path):
    cfg = compose(
        [
            "dataset=sinusoid",
            "backbone=mlp",
            "algorithm=reptile",
            "logger=none",
            "steps=400",
            "val_every=400",
            "val_episodes=0",
            "test_episodes=100",
            "algorithm.inner_optimizer=sgd",
            "algorithm.inner_lr=0.02",
            "algorithm.inner_steps=5",
            "algorithm.eval_inner_steps=10",
            "algorithm.meta_batch=5",
        ],
        output_dir=tmp_path,
    )
    results = run(cfg, tmp_path)
    model, datamodule = trained_model(cfg, tmp_path, "last")
    eps = datamodule.eval_episodes("test", torch.arange(100))
    with torch.no_grad():
        before = F.mse_loss(
            model.net(eps.query_x.flatten(0, 1)).view_as(eps.query_y), eps.query_y
        ).item()
    assert results["test/mse"] < 0.6 * before, (results["test/mse"], before)


def test_training_predicts_the_query_set_alone_under_any_protocol():
    assert_training_predicts_the_query_set_alone(Reptile, inner_optimizer="sgd")

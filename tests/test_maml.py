"""MAML / first-order MAML / Meta-SGD: configs, checks, determinism, and short real runs."""

from __future__ import annotations

import functools

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException

from conftest import OMNIGLOT_ARGS, OMNIGLOT_SMALL, TINY, compose_train, train_cli, trained_model
from metalab.algorithms.maml import MAML
from metalab.backbones.conv4 import Conv4
from metalab.backbones.mlp import MLP
from metalab.data.episodes import Episodes
from metalab.errors import ConfigError
from metalab.run import build_datamodule, build_model, run

# real handwritten characters where the small Omniglot sets are, else the procedural glyphs
REAL_DATA = ["dataset=omniglot", *OMNIGLOT_ARGS] if OMNIGLOT_SMALL.is_dir() else ["dataset=glyphs"]


pytestmark = pytest.mark.usefixtures("one_thread")


def config(*overrides, output_dir="/tmp/metalab-test-unused"):
    return compose_train(["logger=none", *overrides], output_dir=output_dir)


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
    sine = build_model(config("algorithm=maml", "dataset=sinusoid", "backbone=mlp",
                              "algorithm.learn_inner_lr=true", "algorithm.engine=vmap"))
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
    with pytest.raises(ConfigError, match="algorithm.engine"):
        small_maml(engine="jit")
    with pytest.raises(ConfigError, match="algorithm.eval_inner_steps"):
        small_maml(eval_inner_steps=0)
    with pytest.raises(ConfigError, match="learn_inner_lr"):
        small_maml(engine="learn2learn", learn_inner_lr=True)


# -- behaviour ----------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["loop", "vmap"])
def test_meta_sgd_learns_the_inner_learning_rates(engine):
    torch.manual_seed(0)
    model = small_maml(learn_inner_lr=True, engine=engine, inner_lr=0.1)
    names = {n for n, _ in model.named_parameters()}
    assert {n for n in names if n.startswith("inner_lrs.")} == {
        "inner_lrs." + n.replace(".", "__") for n, _ in model.net.named_parameters()}
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


@pytest.mark.parametrize("kwargs", [{"engine": "loop"}, {"engine": "vmap"},
                                    {"first_order": True, "learn_inner_lr": True}])
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
def test_short_maml_run_on_real_data_beats_the_untrained_network(tmp_path):
    cfg = config(*REAL_DATA, "algorithm=maml", "backbone.hidden=16", "steps=150",
                 "val_every=150", "val_episodes=20", "test_episodes=100", "dataset.queries=5",
                 "dataset.train_queries=2", "algorithm.meta_batch=4",
                 "algorithm.optimizer.lr=0.003", "pixel_baseline=false", output_dir=tmp_path)
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


def test_short_maml_run_on_sinusoid_adapts(tmp_path):
    cfg = config("dataset=sinusoid", "backbone=mlp", "algorithm=maml", "steps=300",
                 "val_every=300", "val_episodes=50", "test_episodes=200",
                 "algorithm.meta_batch=10", "algorithm.inner_lr=0.01",
                 "algorithm.eval_inner_steps=10", "algorithm.optimizer.lr=0.003",
                 output_dir=tmp_path)
    results = run(cfg, tmp_path)
    model, datamodule = trained_model(cfg, tmp_path, "best")
    eps = datamodule.eval_episodes("test", torch.arange(200))
    with torch.no_grad():
        before = model.task_metrics(model.net(eps.query_x.flatten(0, 1)).view_as(eps.query_y),
                                    eps.query_y)["mse"].mean().item()
    after = model.task_metrics(model.predict(eps, training=False), eps.query_y)["mse"]
    assert after.mean().item() == pytest.approx(results["test/mse"], rel=1e-4)
    assert results["test/mse"] < 0.5 * before, (results["test/mse"], before)
    assert isinstance(model.net, MLP)


def test_vmap_maml_trains_and_evaluates_under_bf16_autocast(tmp_path):
    """bf16-mixed (the GPU default) through the vmap engine: training and the evaluation,
    which adapts without an outer graph, both run (autocast exists on CPU too)."""
    proc = train_cli(tmp_path, "algorithm=maml", "algorithm.engine=vmap", "backbone.hidden=8",
                     "hardware.precision=bf16-mixed", "algorithm.meta_batch=2", *TINY,
                     "logger=none")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "results.json").is_file()

"""Meta-RL: the environments against their definitions (and learn2learn's 2D navigation), the
meta-gradient through the inner policy-gradient step against a float64 finite difference of a
closed-form objective and against learn2learn's MAML, the pipeline end to end, and its errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn

from helpers import ROOT, TINY, compose, fit_one_batch, record_log_options, train_cli
from metalab.errors import user_error
from metalab.rl import pg
from metalab.rl.envs import HalfCheetah, Nav2D

RL = [
    "dataset=nav2d",
    "algorithm=maml_rl",
    "backbone=policy",
    "backbone.hidden=[16]",
    "dataset.shots=4",
    "dataset.queries=4",
    "dataset.env.horizon=20",
    "algorithm.meta_batch=4",
    "algorithm.outer_steps=2",
]
# SGD: Adam's first steps move every parameter by about lr whatever its gradient's size, so a
# rounding difference in a gradient near zero would show up as a difference of lr
SGD = ["algorithm.optimizer._target_=torch.optim.SGD", "algorithm.optimizer.lr=0.01"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def mujoco_missing() -> bool:
    try:
        import gymnasium.envs.mujoco  # noqa: F401
        import mujoco  # noqa: F401
    except ImportError:
        return True
    return False


# -- environments ---------------------------------------------------------------------------------
def test_nav2d_steps_like_learn2learn_particles2d():
    """Dynamics, reward and termination equal learn2learn's Particles2DEnv (adapted from
    ProMP's, which follows the MAML authors' point environment), step by step."""
    from learn2learn.gym.envs.particles import Particles2DEnv

    goals = Nav2D().sample_tasks(torch.Generator().manual_seed(0), 3)
    actions = torch.randn(3, 1, 12, 2, generator=torch.Generator().manual_seed(1)) * 0.2
    env = Nav2D()
    env.reset(goals, 1, torch.zeros(3, 1))
    ours = [env.step(actions[:, :, t]) for t in range(12)]
    for b in range(3):
        ref = Particles2DEnv(task={"goal": goals[b].double().numpy()})
        ref.reset()
        for t in range(12):
            state, reward, done, _ = ref.step(np.clip(actions[b, 0, t].numpy(), -0.1, 0.1))
            obs, r, d = ours[t]
            np.testing.assert_allclose(obs[b, 0].numpy(), state, atol=1e-6)
            assert r[b, 0].item() == pytest.approx(reward, abs=1e-6)
            assert bool(d[b, 0]) == done


def test_nav2d_task_distribution_and_horizon():
    cfg = compose(["dataset=nav2d"])
    env = Nav2D(**{k: v for k, v in cfg.dataset.env.items() if k != "_target_"})
    assert env.horizon == 100
    goals = env.sample_tasks(torch.Generator().manual_seed(0), 4000)
    assert goals.min() >= -0.5 and goals.max() <= 0.5
    assert goals.mean(0).abs().max() < 0.02 and goals.std(0).sub(1 / 12**0.5).abs().max() < 0.01


def test_rollouts_end_at_the_goal():
    """A rollout that reaches the goal gets no reward (and no gradient weight) afterwards."""
    env = Nav2D(horizon=5)
    net = nn.Linear(2, 2)
    with torch.no_grad():  # mean action (1, 1), clipped to (0.1, 0.1): the goal in one step
        net.weight.zero_()
        net.bias.fill_(1.0)
    params = {"weight": net.weight, "bias": net.bias, pg.LOG_STD: torch.full((2,), -30.0)}
    goals = torch.tensor([[0.1, 0.1], [0.3, -0.3]])
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    ro = pg.sample(env, net, pg.per_task(params, 2), goals, gens, 3)
    assert ro.mask[0].tolist() == [[1, 0, 0, 0, 0]] * 3
    assert ro.mask[1].sum() == 15
    assert ro.returns[0].item() == pytest.approx(0.0, abs=1e-5)
    expected = -sum(((0.1 * t - 0.3) ** 2 + (0.1 * t + 0.3) ** 2) ** 0.5 for t in range(1, 6))
    assert ro.returns[1].item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.skipif(mujoco_missing(), reason="gymnasium's MuJoCo environments are not installed")
@pytest.mark.parametrize("task", ["vel", "dir"])
def test_halfcheetah_vector_steps_match_single_environments(task):
    """Rewards of the vector environment equal the paper's, recomputed from single
    HalfCheetah-v5 environments stepped with the same seeds and actions."""
    import gymnasium

    env = HalfCheetah(task=task)
    tasks = env.sample_tasks(torch.Generator().manual_seed(3), 2)
    seeds = torch.arange(4).view(2, 2) + 10
    obs = env.reset(tasks, 2, seeds)
    assert obs.shape == (2, 2, 17)
    actions = torch.rand(3, 2, 2, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    steps = [env.step(a) for a in actions]
    env.close()
    for b in range(2):
        for k in range(2):
            single = gymnasium.make("HalfCheetah-v5", ctrl_cost_weight=0.05)
            first, _ = single.reset(seed=int(seeds[b, k]))
            np.testing.assert_allclose(obs[b, k].numpy(), first, rtol=1e-5, atol=1e-6)
            for t in range(3):
                a = actions[t, b, k].numpy()
                o, _, _, _, info = single.step(a)
                v, goal = info["x_velocity"], tasks[b, 0].item()
                task_reward = -abs(v - goal) if task == "vel" else goal * v
                expected = task_reward - 0.05 * float(np.square(a).sum())
                assert steps[t][1][b, k].item() == pytest.approx(expected, rel=1e-4, abs=1e-4)
                np.testing.assert_allclose(steps[t][0][b, k].numpy(), o, rtol=1e-5, atol=1e-5)


# -- policy-gradient pieces -----------------------------------------------------------------------
def test_batched_mlp_equals_vmap_of_the_backbone():
    from torch.func import functional_call

    from metalab.backbones.mlp import MLP

    net = MLP((3,), 2, (8, 8))
    params = {k: torch.randn(4, *v.shape) for k, v in net.named_parameters()}
    x = torch.randn(4, 5, 3)
    reference = torch.stack(
        [functional_call(net, {k: v[b] for k, v in params.items()}, (x[b],)) for b in range(4)]
    )
    torch.testing.assert_close(pg.batched_mlp(net, params, x), reference)


def test_linear_baseline_is_ridge_regression():
    from sklearn.linear_model import Ridge

    obs = torch.randn(2, 3, 7, 2, dtype=torch.float64)
    returns = torch.randn(2, 3, 7, dtype=torch.float64)
    mask = torch.ones(2, 3, 7, dtype=torch.float64)
    mask[1, 2, 4:] = 0  # a rollout that ended early: its last steps are left out of the fit
    values = pg.linear_baseline(obs, returns, mask, reg=1e-3)
    for b in range(2):
        keep = mask[b].flatten().bool()
        x = pg.baseline_features(obs[b]).flatten(0, 1)
        ridge = Ridge(alpha=1e-3, fit_intercept=False).fit(x[keep], returns[b].flatten()[keep])
        np.testing.assert_allclose(values[b].flatten().numpy(), ridge.predict(x), atol=1e-8)


class Quadratic1D:
    """One-step task: state s ~ N(1, 1), reward -(a - g)^2 for the task's goal g."""

    obs_dim = act_dim = 1
    horizon = 1

    def reset(self, tasks, k, seeds):
        self.goal = tasks[:, None, :]
        return 1.0 + torch.randn(
            len(tasks),
            k,
            1,
            generator=torch.Generator().manual_seed(int(seeds[0, 0])),
            dtype=tasks.dtype,
        )

    def step(self, action):
        done = torch.ones(action.shape[:2], dtype=torch.bool)
        return action, -((action - self.goal) ** 2).squeeze(-1), done


def expected_return(w, b, log_std, g):
    """E[-(a - g)^2] for a ~ N(w s + b, sigma^2), s ~ N(1, 1): E[s] = 1, E[s^2] = 2."""
    return -(2 * w**2 + 2 * w * (b - g) + (b - g) ** 2 + torch.exp(2 * log_std))


@pytest.mark.parametrize("estimator", ["lvc", "reinforce"])
def test_meta_gradient_matches_finite_difference(one_thread, estimator):
    """d/dtheta J(theta + alpha grad J(theta)) of a linear-Gaussian policy on a quadratic reward:
    the meta-gradient through metalab's sampled inner policy-gradient step (200k rollouts per
    task, float64) against a central finite difference of the closed form. ``reinforce`` (the
    MAML paper's log pi * A surrogate) misses the score-function term of the Hessian."""
    alpha, goals = 0.1, torch.tensor([[0.5], [-1.0], [2.0]], dtype=torch.float64)
    theta = torch.tensor([0.3, -0.2, -0.5], dtype=torch.float64)

    def meta_objective(th):
        th = th.clone().requires_grad_()
        total = 0.0
        for g in goals[:, 0]:
            step = torch.autograd.grad(expected_return(*th, g), th, create_graph=True)[0]
            total = total + expected_return(*(th + alpha * step), g)
        return total.detach()

    eps = 1e-6
    fd = torch.stack(
        [
            (meta_objective(theta + eps * e) - meta_objective(theta - eps * e)) / (2 * eps)
            for e in torch.eye(3, dtype=torch.float64)
        ]
    )

    net = nn.Linear(1, 1).double()
    with torch.no_grad():
        net.weight.fill_(theta[0])
        net.bias.fill_(theta[1])
    params = {"weight": net.weight, "bias": net.bias, pg.LOG_STD: nn.Parameter(theta[2:].clone())}
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    shared = pg.per_task({k: v.detach() for k, v in params.items()}, 3)
    ro = pg.add_advantages(
        pg.sample(Quadratic1D(), net, shared, goals, gens, 200_000), 1.0, normalize=False
    )
    adapted = pg.pg_step(net, pg.per_task(params, 3), ro, alpha, estimator, create_graph=True)
    total = sum(
        expected_return(
            adapted["weight"][i, 0, 0],
            adapted["bias"][i, 0],
            adapted[pg.LOG_STD][i, 0],
            goals[i, 0],
        )
        for i in range(3)
    )
    ours = torch.stack([g.reshape(()) for g in torch.autograd.grad(total, list(params.values()))])
    error = ((ours - fd).norm() / fd.norm()).item()
    print(
        f"{estimator}: meta-gradient {ours.tolist()} vs finite difference {fd.tolist()}, "
        f"relative error {error:.3f}"
    )
    if estimator == "lvc":
        assert error < 0.05
    else:
        assert error > 0.5


class GaussianPolicy(nn.Module):
    def __init__(self, net, log_std):
        super().__init__()
        self.net, self.log_std = net, nn.Parameter(log_std.detach().clone())

    def log_prob(self, obs, actions):
        mean = self.net(obs.reshape(-1, obs.shape[-1])).view(*obs.shape[:-1], -1)
        dist = torch.distributions.Normal(mean, self.log_std.exp())
        return dist.log_prob(actions).sum(-1)


@pytest.mark.parametrize("first_order", [False, True])
def test_meta_gradient_matches_learn2learn(one_thread, first_order):
    """The model's outer objective (clipped surrogate through one inner step, all tasks at
    once) has the gradient of learn2learn's MAML.clone()/adapt() run task by task on the same
    rollouts, with torch.distributions' Gaussian log-likelihood."""
    import learn2learn as l2l

    from metalab.rl.tasks import TaskBatch
    from metalab.run.training import build_model

    model = build_model(compose([*RL, f"algorithm.first_order={first_order}"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():  # away from the init, so that the clipping matters
            p.add_(0.3 * torch.randn_like(p))
    batch = TaskBatch(
        model.env.sample_tasks(torch.Generator().manual_seed(1), 3), torch.tensor([5, 6, 7])
    )
    (pre,), post = model.collect(batch)
    objective = model.outer_objective([pre], post, 3)
    ours = torch.autograd.grad(objective, list(model.params().values()))

    policy = GaussianPolicy(model.net, model.log_std)
    maml = l2l.algorithms.MAML(policy, lr=model.inner_lr, first_order=first_order)
    total = 0.0
    for b in range(3):
        learner = maml.clone()
        logp = learner.log_prob(pre.obs[b], pre.actions[b])
        inner = (torch.exp(logp - logp.detach()) * pre.advantages[b]).sum() / pre.mask[b].sum()
        learner.adapt(-inner)  # theta - lr * grad(-J): the ascent step
        ratio = torch.exp(learner.log_prob(post.obs[b], post.actions[b]) - post.log_prob[b])
        adv = post.advantages[b]
        clipped = torch.minimum(ratio * adv, ratio.clamp(1 - model.clip, 1 + model.clip) * adv)
        total = total + (clipped * post.mask[b]).sum() / post.mask[b].sum() / 3
    reference = torch.autograd.grad(total, [*model.net.parameters(), policy.log_std])
    assert (post.log_prob.exp() > 0).all()
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


REPTILE = [*(o for o in RL if o != "algorithm=maml_rl"), "algorithm=reptile_rl"]


def test_reptile_rl_direction_matches_task_by_task_sgd(one_thread):
    """Reptile-RL's pseudo-gradient theta - mean_i theta'_i (2 inner steps, all tasks at once)
    equals that of torch.optim.SGD ascent on torch.distributions' Gaussian log-likelihood times
    the advantages, on a copy of the policy per task, each task's rollouts sampled on their own
    from the task's random stream."""
    import copy

    from metalab.rl.tasks import TaskBatch
    from metalab.run.training import build_model

    model = build_model(compose([*REPTILE, "algorithm.inner_steps=2"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = TaskBatch(
        model.env.sample_tasks(torch.Generator().manual_seed(1), 3), torch.tensor([5, 6, 7])
    )
    direction, stages = model.reptile_direction(batch)
    assert len(stages) == 2

    adapted = []
    for b, gen in enumerate(batch.generators()):
        policy = GaussianPolicy(copy.deepcopy(model.net), model.log_std)
        sgd = torch.optim.SGD(policy.parameters(), lr=model.inner_lr)
        for _ in range(2):
            params = {k: v.detach()[None] for k, v in policy.net.named_parameters()}
            params[pg.LOG_STD] = policy.log_std.detach()[None]
            ro = pg.sample(model.env, policy.net, params, batch.tasks[b : b + 1], [gen], 4)
            ro = pg.add_advantages(ro, model.gamma, model.normalize)
            logp = policy.log_prob(ro.obs[0], ro.actions[0])
            sgd.zero_grad()
            (-(logp * ro.advantages[0]).sum() / ro.mask[0].sum()).backward()
            sgd.step()
        adapted.append([*(p.detach() for p in policy.net.parameters()), policy.log_std.detach()])
    for i, (theta, ours) in enumerate(zip(model.params().values(), direction)):
        reference = theta.detach() - torch.stack([a[i] for a in adapted]).mean(0)
        assert reference.abs().max() > 1e-4  # the steps moved this parameter
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)


@pytest.mark.e2e
def test_reptile_rl_trains_and_tests_end_to_end(tmp_path):
    proc = train_cli(tmp_path, *TINY, *REPTILE, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert all(np.isfinite(results[f"test/return_step{s}"]) for s in range(4))
    assert results["test/return"] == results["test/return_step3"]  # after inner_steps = 3
    state = final_params(tmp_path)
    assert state["log_std"].abs().max() > 0  # moved from its initial 0 by the Reptile steps


def l2l_adapted_returns(model, batch, steps: int) -> torch.Tensor:
    """Per task alone (its own generator), learn2learn's first-order MAML adapting a copy of the
    policy on ``shots`` fresh rollouts of its current weights, ``steps`` times: the mean return
    of each round of rollouts ``[B, steps + 1]``."""
    import learn2learn as l2l

    rows = []
    for b, gen in enumerate(batch.generators()):
        policy = GaussianPolicy(model.net, model.log_std)
        learner = l2l.algorithms.MAML(policy, lr=model.inner_lr, first_order=True).clone()
        row = []
        for s in range(steps + 1):
            weights = {k: v[None] for k, v in learner.net.named_parameters()}
            weights[pg.LOG_STD] = learner.log_std[None]
            ro = pg.sample(
                model.env, model.net, weights, batch.tasks[b : b + 1], [gen], model.shots
            )
            ro = pg.add_advantages(ro, model.gamma, model.normalize)
            row.append(ro.returns[0])
            if s < steps:
                logp = learner.log_prob(ro.obs[0], ro.actions[0])
                ratio = torch.exp(logp - logp.detach())
                learner.adapt(-(ratio * ro.advantages[0]).sum() / ro.mask[0].sum())
        rows.append(torch.stack(row))
    return torch.stack(rows).detach()


def test_evaluation_returns_are_those_of_the_adapted_policy(one_thread):
    """Evaluation (under no_grad, as Lightning's test loop runs it) reports the return before
    adaptation and after each of eval_inner_steps inner steps, each on fresh rollouts; `return`
    is the one after the trained number of inner steps."""
    from metalab.rl.tasks import TaskBatch
    from metalab.run.training import build_model

    overrides = ["algorithm.eval_inner_steps=2", "dataset.queries=3"]  # shots 4 != queries 3
    model = build_model(compose([*RL, *overrides]))
    batch = TaskBatch(
        model.env.sample_tasks(torch.Generator().manual_seed(1), 2), torch.tensor([8, 9])
    )
    reference = l2l_adapted_returns(model, batch, 2)
    assert (reference[:, 1:] - reference[:, :1]).abs().min() > 1e-3  # adaptation changes them
    model._outputs.clear()
    with torch.no_grad():
        model._eval_step((torch.tensor([3, 4]), batch), "test")
    ((ids, metrics),) = model._outputs
    assert ids.tolist() == [3, 4]
    assert sorted(metrics) == ["return", "return_step0", "return_step1", "return_step2"]
    for s in range(3):
        torch.testing.assert_close(metrics[f"return_step{s}"], reference[:, s])
    torch.testing.assert_close(metrics["return"], reference[:, 1])


def test_bad_maml_rl_settings_are_config_errors():
    from metalab.algorithms.maml_rl import MAMLRL
    from metalab.backbones.mlp import MLP
    from metalab.errors import ConfigError

    for kwargs, message in (
        ({"inner_steps": 0}, "algorithm.inner_steps=0: must be a positive integer"),
        ({"eval_inner_steps": 0}, "algorithm.eval_inner_steps=0: must be a positive integer"),
        ({"outer_steps": 0}, "algorithm.outer_steps=0: must be a positive integer"),
        (
            {"inner_steps": 2, "eval_inner_steps": 1},
            "algorithm.eval_inner_steps=1: must be at least algorithm.inner_steps=2",
        ),
        ({"estimator": "dice"}, "algorithm.estimator=dice: allowed: lvc, reinforce"),
    ):
        with pytest.raises(ConfigError) as err:
            MAMLRL(lambda out_dim: MLP((2,), out_dim), Nav2D(), optimizer=None, **kwargs)
        assert str(err.value) == message
    # as many evaluation as training steps is allowed
    model = MAMLRL(lambda out_dim: MLP((2,), out_dim), Nav2D(), optimizer=None, eval_inner_steps=1)
    assert model.automatic_optimization is False  # several optimizer steps per training step


SYNCED_LOGS = {
    "train/return_pre": {"sync_dist": True},
    "train/return": {"prog_bar": True, "sync_dist": True},
    "train/env_steps": {"reduce_fx": "sum", "sync_dist": True},
}


@pytest.mark.parametrize(
    ("algorithm", "outer_steps"),
    [("maml_rl", 2), ("maml_rl", 1), ("pretrained_rl", 2), ("random_rl", 2)],
)
def test_one_meta_batch_in_lightning(tmp_path, one_thread, algorithm, outer_steps):
    """One training step through Lightning: MAML-RL takes outer_steps SGD ascent steps on the
    clipped surrogate of the same rollouts (theta <- theta + lr * grad J, lr 0.01), counted as
    one global step (also when outer_steps is 1), and logs the returns before and after
    adaptation and the environment steps of both; pretrained_rl's rollouts are of the unadapted
    policy; random_rl leaves the initialisation as it is."""
    import copy

    from metalab.run.training import build_datamodule, build_model

    cfg = compose(
        [*RL, *SGD, f"algorithm={algorithm}", "dataset.queries=3"]
        + [f"algorithm.outer_steps={outer_steps}"]
    )
    model, dm = build_model(cfg), build_datamodule(cfg)
    dm.load()
    batch = dm.train_episodes(0)  # the first training batch
    reference = copy.deepcopy(model)
    stages, post = reference.collect(batch)
    assert len(stages) == (0 if algorithm == "pretrained_rl" else 1)
    theta = list(reference.params().values())
    for _ in range(0 if algorithm == "random_rl" else outer_steps):
        grads = torch.autograd.grad(reference.outer_objective(stages, post, 4), theta)
        with torch.no_grad():
            for p, g in zip(theta, grads):
                p += 0.01 * g
    options = record_log_options(model)
    trainer = fit_one_batch(model, dm, tmp_path)
    assert trainer.global_step == 1
    for (name, ours), want in zip(model.params().items(), reference.params().values()):
        torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-7, msg=name)
    if algorithm == "random_rl":
        return
    logged = trainer.callback_metrics
    torch.testing.assert_close(logged["train/return"], post.returns.mean())
    assert list(trainer.progress_bar_metrics) == ["train/return"]  # the one shown
    steps = post.steps + sum(ro.steps for ro in stages)
    assert logged["train/env_steps"].item() == steps
    if stages:
        torch.testing.assert_close(logged["train/return_pre"], stages[0].returns.mean())
    else:
        assert "train/return_pre" not in logged
    assert options == {k: v for k, v in SYNCED_LOGS.items() if k in logged}


def _rank_1_all_reduces(init: str, flat: torch.Tensor) -> None:
    """Rank 1 of the two-process test: contributes its flattened gradient to the all-reduce."""
    import datetime

    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=init, rank=1, world_size=2, timeout=datetime.timedelta(seconds=20)
    )
    dist.all_reduce(flat)
    dist.destroy_process_group()


def test_two_ranks_average_the_meta_gradient(tmp_path, monkeypatch, one_thread):
    """Under DDP each rank holds half of the meta-batch: MAML-RL's meta-gradient is the mean of
    the two ranks' gradients (checked by hand), shaped as the parameters. Two real processes
    over gloo: this one is rank 0 (its Trainer: rank 0 of 2), a forked child rank 1."""
    import datetime
    import multiprocessing

    import torch.distributed as dist

    from helpers.ddp import rank_1_of_2_trainer
    from metalab.run.training import build_model

    model = build_model(compose(RL))
    model.trainer = rank_1_of_2_trainer(monkeypatch, rank=0)
    g = torch.Generator().manual_seed(0)
    ours = (torch.randn(2, 3, generator=g), torch.randn(4, generator=g))
    theirs = (torch.randn(2, 3, generator=g), torch.randn(4, generator=g))
    init = f"file://{tmp_path / 'rendezvous'}"
    child = multiprocessing.get_context("fork").Process(
        target=_rank_1_all_reduces, args=(init, torch.cat([t.flatten() for t in theirs]))
    )
    child.start()
    try:
        dist.init_process_group(
            "gloo", init_method=init, rank=0, world_size=2, timeout=datetime.timedelta(seconds=20)
        )
        mean = model.mean_over_ranks(ours)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        child.join(30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
    assert len(mean) == 2
    for got, a, b in zip(mean, ours, theirs):
        assert got.shape == a.shape
        torch.testing.assert_close(got, (a + b) / 2)


# -- the pipeline ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("rl") / "one"
    proc = train_cli(run_dir, *TINY, *RL, *SGD, env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def final_params(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]


@pytest.mark.e2e
def test_end_to_end_results_and_wandb(one_process):
    results = json.loads((one_process / "results.json").read_text())
    for step in range(4):
        assert np.isfinite(results[f"test/return_step{step}"])
        assert results[f"test/return_step{step}_ci95"] > 0
    assert results["test/return"] == results["test/return_step1"]
    assert results["test/episodes"] == 10
    rows = (one_process / "test_episodes.csv").read_text().splitlines()
    assert rows[0] == "episode,return,return_step0,return_step1,return_step2,return_step3"
    assert len(rows) == 11
    # the offline W&B run holds the test returns, read back with W&B's own client
    (run,) = (one_process / "wandb").glob("offline-run-*")
    proc = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--summary", str(run)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test/return_step3" in proc.stdout
    assert f"{results['test/return_step3']:.4f}"[:5] in proc.stdout


def test_test_tasks_are_fixed_by_eval_seed():
    from metalab.run.training import build_datamodule

    plans = []
    for seed, eval_seed in ((0, 2024), (1, 2024), (0, 7)):
        dm = build_datamodule(compose([*RL, f"seed={seed}", f"eval_seed={eval_seed}"]))
        dm.load()
        plans.append(dm.plans["test"])
    assert torch.equal(plans[0], plans[1]) and not torch.equal(plans[0], plans[2])


@pytest.mark.e2e
def test_two_processes_equal_one(tmp_path, one_process):
    """Tasks of a meta-batch split across two DDP processes: the same update as one process."""
    two = tmp_path / "two"
    proc = train_cli(two, *TINY, *RL, *SGD, "hardware=ddp_cpu", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one_params, two_params = final_params(one_process), final_params(two)
    largest = max((one_params[k] - two_params[k]).abs().max().item() for k in one_params)
    assert largest < 1e-5
    one = json.loads((one_process / "results.json").read_text())
    assert json.loads((two / "results.json").read_text())["test/return_step3"] == pytest.approx(
        one["test/return_step3"], abs=1e-3
    )


@pytest.mark.slow
def test_sigkill_then_resume_continues_with_the_same_tasks(tmp_path, one_process):
    run_dir = tmp_path / "resumed"
    cmd = [sys.executable, "-m", "metalab.run.train", f"hydra.run.dir={run_dir}", *TINY, *RL, *SGD]
    env = {**os.environ, "WANDB_MODE": "offline", **ONE_THREAD}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    while not last.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(last, weights_only=False)["global_step"] < 6
    again = train_cli(run_dir, *TINY, *RL, *SGD, env=ONE_THREAD)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Restoring states from the checkpoint" in again.stdout + again.stderr
    whole, resumed = final_params(one_process), final_params(run_dir)
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name


# -- mistakes -------------------------------------------------------------------------------------
ERRORS = [
    (
        ["dataset=nav2d", "algorithm=protonet"],
        ["algorithm=protonet", "classification tasks only", "dataset=nav2d is a rl dataset"],
    ),
    (
        ["dataset=nav2d", "algorithm=maml_rl"],
        ["backbone=conv4", "needs image inputs", "backbone=policy"],
    ),
    (
        [
            "dataset=halfcheetah_vel",
            "algorithm=maml_rl",
            "backbone=policy",
            "dataset.env.env_id=HalfCheetah-v9",
        ],
        ["dataset.env.env_id=HalfCheetah-v9", "allowed: HalfCheetah-v5, HalfCheetah-v4"],
    ),
    (
        ["dataset=glyphs", "algorithm=maml_rl", "backbone=policy"],
        ["algorithm=maml_rl", "rl tasks only"],
    ),
]


@pytest.mark.parametrize(("overrides", "expected"), ERRORS, ids=[" ".join(c[0]) for c in ERRORS])
def test_user_error_is_one_line(tmp_path, overrides, expected):
    """Raised before any work, as the ConfigError that the entry points print in one line
    (tests/test_errors.py checks that printing)."""
    from metalab.run.training import run

    run_dir = tmp_path / "run"
    with pytest.raises(Exception) as caught:
        run(compose(["logger=none", *overrides], output_dir=run_dir), run_dir)
    message = str(user_error(caught.value))
    assert "\n" not in message
    for text in expected:
        assert text in message
    assert not (run_dir / "checkpoints").exists()


def test_missing_mujoco_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco", None)  # import mujoco raises ImportError
    test_user_error_is_one_line(
        tmp_path,
        ["dataset=halfcheetah_vel", "algorithm=maml_rl", "backbone=policy"],
        ["dataset=halfcheetah_vel", "needs MuJoCo", "gymnasium[mujoco]"],
    )


def test_reptile_rl_step_in_lightning_moves_theta_by_eps_times_the_direction(tmp_path, one_thread):
    """One Lightning training step of reptile_rl: theta <- theta - eps * (theta - mean theta'),
    eps the optimizer's first learning rate (0.5, annealed after the step), with the direction of
    the same rollouts (checked against task-by-task SGD above); one global step; the returns
    before adaptation and before the last inner step logged, and the environment steps of all
    inner steps (shots x horizon x tasks each)."""
    import copy

    from metalab.run.training import build_datamodule, build_model

    cfg = compose([*REPTILE, "algorithm.inner_steps=3", "algorithm.optimizer.lr=0.5", "steps=4"])
    model, dm = build_model(cfg), build_datamodule(cfg)
    dm.load()
    batch = dm.train_episodes(0)
    reference = copy.deepcopy(model)
    direction, stages = reference.reptile_direction(batch)
    want = [theta.detach() - 0.5 * d for theta, d in zip(reference.params().values(), direction)]
    options = record_log_options(model)
    trainer = fit_one_batch(model, dm, tmp_path)
    assert trainer.global_step == 1
    assert options == SYNCED_LOGS
    for (name, ours), theirs in zip(model.params().items(), want):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7, msg=name)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5 * 3 / 4)  # annealed
    logged = trainer.callback_metrics
    torch.testing.assert_close(logged["train/return_pre"], stages[0].returns.mean())
    torch.testing.assert_close(logged["train/return"], stages[-1].returns.mean())
    assert list(trainer.progress_bar_metrics) == ["train/return"]
    shots, horizon, tasks = cfg.dataset.shots, cfg.dataset.env.horizon, cfg.algorithm.meta_batch
    assert logged["train/env_steps"] == sum(s.steps for s in stages)  # every inner step's rollouts
    assert (
        0.5 * 3 * shots * horizon * tasks < logged["train/env_steps"] <= 3 * shots * horizon * tasks
    )


@pytest.mark.slow
def test_reptile_rl_two_processes_equal_one(tmp_path):
    """Reptile-RL's tasks split across two DDP processes (the direction averaged over ranks):
    the same update and test returns as one process."""
    runs = {}
    for name, extra in (("one", []), ("two", ["hardware=ddp_cpu"])):
        proc = train_cli(tmp_path / name, *TINY, *REPTILE, *extra, env=ONE_THREAD)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = tmp_path / name
    one, two = final_params(runs["one"]), final_params(runs["two"])
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-5
    results = [json.loads((runs[n] / "results.json").read_text()) for n in ("one", "two")]
    assert results[1]["test/return"] == pytest.approx(results[0]["test/return"], abs=1e-3)

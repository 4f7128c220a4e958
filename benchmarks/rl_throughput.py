"""Meta-RL throughput, run by hand: environment steps/s and meta-steps/s of metalab's batched
rollouts against a plain single-process loop over the same environments, in the same run.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 10 python benchmarks/rl_throughput.py
    PYTHONPATH=src python benchmarks/rl_throughput.py --env halfcheetah_vel --tasks 4 --rollouts 5

- ``sample/metalab``: metalab.rl.pg.sample, the rollouts of all tasks stepped together (nav2d: one
  torch tensor; HalfCheetah: one gymnasium vector environment, ``--vectorization``) with one
  vmap-ed policy call per time step;
- ``sample/loop``: the same rollouts one environment at a time, one policy call per environment
  step (nav2d: learn2learn's Particles2DEnv, which steps like ours; HalfCheetah: single
  gymnasium HalfCheetah-v5 environments), as a plain Python meta-RL loop runs them;
- ``meta-step/metalab``: one outer step of maml_rl (the model's own collect + outer objective +
  Adam step, second order, one clipped-surrogate step) on a meta-batch;
- ``meta-step/loop``: the same meta-step written as a plain loop over tasks: loop rollouts,
  learn2learn's ``MAML.clone()/adapt()`` per task, the same losses, one backward per task.

Steps/s counts environment steps (tasks x rollouts x horizon per sampling). Every figure is the
median of ``--repeats`` timed repetitions after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from metalab.rl import pg  # noqa: E402
from metalab.rl.tasks import TaskBatch  # noqa: E402


def compose_model(env_name: str, rollouts: int, extra: list[str]):
    from metalab.run.config import compose
    from metalab.run.training import build_model

    cfg = compose(
        [
            f"dataset={env_name}",
            "algorithm=maml_rl",
            "backbone=policy",
            f"dataset.shots={rollouts}",
            f"dataset.queries={rollouts}",
            "algorithm.outer_steps=1",
            *extra,
        ]
    )
    model = build_model(cfg)
    model.configure_optimizers = lambda: None
    return model


class LoopEnvs:
    """One single environment per rollout, stepped one after another."""

    def __init__(self, env_name: str, tasks: torch.Tensor, rollouts: int, horizon: int):
        self.tasks, self.rollouts, self.horizon = tasks, rollouts, horizon
        if env_name == "nav2d":
            from learn2learn.gym.envs.particles import Particles2DEnv

            self.envs = [
                [Particles2DEnv(task={"goal": g.numpy()}) for _ in range(rollouts)] for g in tasks
            ]
            self.cheetah = None
        else:
            import gymnasium

            self.envs = [
                [gymnasium.make("HalfCheetah-v5", ctrl_cost_weight=0.05) for _ in range(rollouts)]
                for _ in tasks
            ]
            self.cheetah = env_name.removeprefix("halfcheetah_")

    def rollout(self, policy_mean, log_std, b: int, k: int, gen: torch.Generator):
        """One rollout of task b: observations, actions, rewards (lists over time)."""
        env = self.envs[b][k]
        if self.cheetah is None:
            obs = env.reset()
        else:
            obs, _ = env.reset(seed=int(torch.randint(2**31 - 1, (1,), generator=gen)))
        trace = []
        for _ in range(self.horizon):
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
            with torch.no_grad():
                mean = policy_mean(x[None])[0]
            action = mean + log_std.exp() * torch.randn(mean.shape, generator=gen)
            a = action.numpy()
            if self.cheetah is None:
                obs_next, reward, done, _ = env.step(np.clip(a, -0.1, 0.1))
            else:
                obs_next, _, term, trunc, info = env.step(np.clip(a, -1, 1))
                goal = float(self.tasks[b, 0])
                v = info["x_velocity"]
                reward = (-abs(v - goal) if self.cheetah == "vel" else goal * v) + info[
                    "reward_ctrl"
                ]
                done = term or trunc
            trace.append((x, action, float(reward)))
            obs = obs_next
            if done:
                break
        return trace


def loop_sample(loop: LoopEnvs, net, log_std, gens):
    return [
        [loop.rollout(net, log_std, b, k, gens[b]) for k in range(loop.rollouts)]
        for b in range(len(loop.tasks))
    ]


def loop_task_loss(policy_mean, log_std, rollouts, gamma, kind, clip=0.2, old=None):
    """Per-task loss from a list of rollouts: reward-to-go minus the linear feature baseline
    (least squares per task), normalised, and the log-likelihoods of one policy."""
    obs = torch.stack([x for r in rollouts for x, _, _ in r])
    features = torch.cat(
        [pg.baseline_features(torch.stack([x for x, _, _ in r])[None])[0] for r in rollouts]
    ).double()
    actions = torch.stack([a for r in rollouts for _, a, _ in r])
    returns = []
    for r in rollouts:
        running, out = 0.0, []
        for _, _, reward in reversed(r):
            running = reward + gamma * running
            out.append(running)
        returns += out[::-1]
    returns = torch.tensor(returns, dtype=torch.float64)
    gram = features.T @ features + 1e-5 * torch.eye(features.shape[1], dtype=torch.float64)
    adv = (returns - features @ torch.linalg.solve(gram, features.T @ returns)).float()
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    dist = torch.distributions.Normal(policy_mean(obs), log_std.exp())
    logp = dist.log_prob(actions).sum(-1)
    if kind == "inner":
        return -(torch.exp(logp - logp.detach()) * adv).mean()
    ratio = torch.exp(logp - old)
    return -torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="nav2d", choices=["nav2d", "halfcheetah_vel"])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--vectorization", default="sync", choices=["sync", "async"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = [] if args.env == "nav2d" else [f"dataset.env.vectorization={args.vectorization}"]
    model = compose_model(args.env, args.rollouts, extra)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    env, horizon = model.env, model.env.horizon
    tasks = env.sample_tasks(torch.Generator().manual_seed(0), args.tasks)
    batch = TaskBatch(tasks, torch.arange(args.tasks) + 100)
    steps = args.tasks * args.rollouts * horizon
    loop = LoopEnvs(args.env, tasks, args.rollouts, horizon)
    net, log_std = model.net, model.log_std.detach()
    theta = pg.per_task({k: v.detach() for k, v in model.params().items()}, args.tasks)

    def metalab_sample():
        pg.sample(env, net, theta, tasks, batch.generators(), args.rollouts)

    def loop_sample_once():
        loop_sample(loop, net, log_std, batch.generators())

    def metalab_meta_step():
        stages, post = model.collect(batch)
        objective = model.outer_objective(stages, post, args.tasks)
        optimizer.zero_grad()
        (-objective).backward()
        optimizer.step()

    import learn2learn as l2l

    class Policy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.log_std = model.net, model.log_std

        def forward(self, x):
            return self.net(x)

    maml = l2l.algorithms.MAML(Policy(), lr=model.inner_lr)

    def loop_meta_step():
        gens = batch.generators()
        optimizer.zero_grad()
        for b in range(args.tasks):
            learner = maml.clone()
            pre = [
                loop.rollout(learner, learner.log_std.detach(), b, k, gens[b])
                for k in range(args.rollouts)
            ]
            learner.adapt(loop_task_loss(learner, learner.log_std, pre, model.gamma, "inner"))
            post = [
                loop.rollout(learner, learner.log_std.detach(), b, k, gens[b])
                for k in range(args.rollouts)
            ]
            obs = torch.stack([x for r in post for x, _, _ in r])
            actions = torch.stack([a for r in post for _, a, _ in r])
            with torch.no_grad():
                old = (
                    torch.distributions.Normal(learner(obs), learner.log_std.exp())
                    .log_prob(actions)
                    .sum(-1)
                )
            loss = loop_task_loss(learner, learner.log_std, post, model.gamma, "outer", old=old)
            (loss / args.tasks).backward()
        optimizer.step()

    rows = []
    for name, fn, env_steps in (
        ("sample/metalab", metalab_sample, steps),
        ("sample/loop", loop_sample_once, steps),
        ("meta-step/metalab", metalab_meta_step, 2 * steps),
        ("meta-step/loop", loop_meta_step, 2 * steps),
    ):
        seconds = timed(fn, args.repeats)
        rows.append((name, seconds, env_steps / seconds))
        print(
            f"{name:20s} {seconds:8.3f} s  {env_steps / seconds:10.0f} env steps/s"
            + (f"  {1 / seconds:.3f} meta-steps/s" if name.startswith("meta") else ""),
            flush=True,
        )
    sample_ratio = rows[1][1] / rows[0][1]
    meta_ratio = rows[3][1] / rows[2][1]
    print(
        f"\n{args.env}: {args.tasks} tasks x {args.rollouts} rollouts x {horizon} steps; "
        f"speedup of metalab over the plain loop: sampling {sample_ratio:.1f}x, "
        f"meta-step {meta_ratio:.1f}x"
    )
    env_close = getattr(env, "close", None)
    if env_close:
        env_close()


if __name__ == "__main__":
    main()

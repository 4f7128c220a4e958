"""Batched rollouts and the policy-gradient pieces of meta-RL.

The policy is Gaussian: a mean network (any non-image backbone, evaluated functionally) and a
state-independent log standard deviation. Parameters are dicts whose tensors carry a leading
task dimension ``[B, ...]`` (the shared initialisation is expanded), so ``B`` tasks with
different adapted weights run as one ``vmap``-ed network, and the sum over tasks of per-task
objectives differentiates into per-task gradients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from metalab.backbones.mlp import MLP

Params = dict[str, Tensor]
LOG_STD = "log_std"
ESTIMATORS = ("lvc", "reinforce")


def per_task(params: Params, tasks: int) -> Params:
    """The shared parameters as a batch of ``tasks`` identical copies (a view, no copy)."""
    return {k: v.expand(tasks, *v.shape) for k, v in params.items()}


def policy_mean(net: nn.Module, params: Params, obs: Tensor) -> Tensor:
    """Action means ``[B, ..., A]`` of observations ``[B, ..., O]`` under per-task weights."""
    flat = obs.flatten(1, -2)
    if isinstance(net, MLP):
        mean = batched_mlp(net, params, flat)
    else:
        weights = {k: v for k, v in params.items() if k != LOG_STD}
        mean = vmap(lambda w, x: functional_call(net, w, (x,)))(weights, flat)
    return mean.view(*obs.shape[:-1], mean.shape[-1])


def batched_mlp(net: MLP, params: Params, x: Tensor) -> Tensor:
    """The MLP backbone with per-task weights as batched matrix products: the same numbers as
    vmap over functional_call, without its per-call overhead (~3x faster for the small
    batches of a rollout's time step, where that overhead dominates)."""
    for name, module in net.named_modules():  # registration order is forward order in MLP
        if isinstance(module, nn.Linear):
            x = torch.baddbmm(
                params[f"{name}.bias"].unsqueeze(1), x, params[f"{name}.weight"].transpose(1, 2)
            )
        elif isinstance(module, nn.ReLU):
            x = torch.relu(x)
    return x


def log_prob(net: nn.Module, params: Params, obs: Tensor, actions: Tensor) -> Tensor:
    """log pi(a | s) ``[B, ...]`` of the diagonal Gaussian policy."""
    mean = policy_mean(net, params, obs)
    log_std = params[LOG_STD].view(len(mean), *[1] * (mean.dim() - 2), -1)
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


@dataclass
class Rollouts:
    """``K`` rollouts of each of ``B`` tasks, ``H`` steps: tensors ``[B, K, H, ...]``; ``mask``
    is 1 up to and including the step that ended a rollout."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    log_prob: Tensor  # under the sampling policy (no graph)
    advantages: Tensor | None = None

    @property
    def returns(self) -> Tensor:
        """Undiscounted return per task, the mean over its K rollouts ``[B]``."""
        return (self.rewards * self.mask).sum(-1).mean(-1)

    @property
    def steps(self) -> int:
        return int(self.mask.sum())


@torch.no_grad()
def sample(
    env, net: nn.Module, params: Params, tasks: Tensor, gens: list[torch.Generator], k: int
) -> Rollouts:
    """``k`` rollouts per task, all stepped together. Each task's action noise and reset seeds
    come from its own generator, so a task's rollouts do not depend on the other tasks of the
    batch (nor on how the batch is split across processes)."""
    b, h, device = len(tasks), env.horizon, tasks.device
    noise = torch.stack([torch.randn(h, k, env.act_dim, generator=g) for g in gens], 1)
    seeds = torch.stack([torch.randint(2**31 - 1, (k,), generator=g) for g in gens])
    noise = noise.to(device)
    std = params[LOG_STD].exp()[:, None, :]
    obs = env.reset(tasks, k, seeds)
    alive = torch.ones(b, k, dtype=torch.bool, device=device)
    trace = {"obs": [], "actions": [], "rewards": [], "mask": []}
    for t in range(h):
        action = policy_mean(net, params, obs) + std * noise[t]
        trace["obs"].append(obs)
        trace["actions"].append(action)
        trace["mask"].append(alive)
        obs, reward, done = env.step(action)
        trace["rewards"].append(reward * alive)
        alive = alive & ~done
    obs, actions, rewards, mask = (torch.stack(trace[n], 2) for n in trace)
    mask = mask.to(rewards.dtype)
    return Rollouts(obs, actions, rewards, mask, log_prob(net, params, obs, actions))


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """Reward-to-go sum_{t' >= t} gamma^(t' - t) r_t' along the last dimension."""
    out = torch.empty_like(rewards)
    running = torch.zeros_like(rewards[..., 0])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = rewards[..., t] + gamma * running
        out[..., t] = running
    return out


def baseline_features(obs: Tensor) -> Tensor:
    """rllab's LinearFeatureBaseline features (the paper's baseline): observation, its
    square, time step / 100 and its square and cube, and a constant."""
    o = obs.clamp(-10, 10)
    h = obs.shape[-2]
    al = (torch.arange(h, device=obs.device, dtype=obs.dtype) / 100.0).view(h, 1)
    al = al.expand(*obs.shape[:-1], 1)
    return torch.cat([o, o * o, al, al**2, al**3, torch.ones_like(al)], -1)


def linear_baseline(obs: Tensor, returns: Tensor, mask: Tensor, reg: float = 1e-5) -> Tensor:
    """Values from a ridge regression of the returns on the features, fitted per task on all
    its valid steps (float64 normal equations)."""
    x = (baseline_features(obs) * mask[..., None]).flatten(1, 2).double()  # [B, K*H, F]
    y = (returns * mask).flatten(1).double()
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    gram = x.transpose(1, 2) @ x
    rhs = x.transpose(1, 2) @ y[..., None]
    w = torch.linalg.solve(gram + reg * eye, rhs)
    return (baseline_features(obs).double() @ w[:, None]).squeeze(-1).to(obs.dtype)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over each task's valid steps ``[B]``."""
    return (values * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def add_advantages(ro: Rollouts, gamma: float, normalize: bool) -> Rollouts:
    """Reward-to-go minus the task's linear baseline; normalised per task if asked."""
    returns = discounted_returns(ro.rewards, gamma)
    adv = returns - linear_baseline(ro.obs, returns, ro.mask)
    if normalize:
        mean = masked_mean(adv, ro.mask).view(-1, 1, 1)
        var = masked_mean((adv - mean) ** 2, ro.mask).view(-1, 1, 1)
        adv = (adv - mean) / (var.sqrt() + 1e-8)
    ro.advantages = adv * ro.mask
    return ro


def inner_objective(logp: Tensor, ro: Rollouts, estimator: str) -> Tensor:
    """Per-task policy-gradient surrogate ``[B]`` whose gradient is the vanilla policy gradient
    mean(grad log pi * A). ``lvc``: mean(pi / stop_grad(pi) * A) (Rothfuss et al. 2019), whose
    second derivative also has the score-function term grad log pi grad log pi^T A, so the
    meta-gradient through the step accounts for the pre-update sampling distribution.
    ``reinforce``: mean(log pi * A), the MAML paper's surrogate, which drops that term."""
    weight = torch.exp(logp - logp.detach()) if estimator == "lvc" else logp
    return masked_mean(weight * ro.advantages, ro.mask)


def pg_step(
    net: nn.Module, params: Params, ro: Rollouts, lr: float, estimator: str, create_graph: bool
) -> Params:
    """One inner policy-gradient ascent step per task: theta' = theta + lr * grad J_task.
    ``create_graph``: the step is differentiable (second-order MAML); else the gradient is a
    constant (first-order), the adapted weights still depend on theta through the sum."""
    objective = inner_objective(log_prob(net, params, ro.obs, ro.actions), ro, estimator)
    grads = torch.autograd.grad(objective.sum(), list(params.values()), create_graph=create_graph)
    return {k: v + lr * g for (k, v), g in zip(params.items(), grads)}


def clipped_surrogate(logp: Tensor, ro: Rollouts, clip: float) -> Tensor:
    """PPO's clipped objective per task ``[B]`` (to maximise), against the sampling policy."""
    ratio = torch.exp(logp - ro.log_prob)
    adv = ro.advantages
    return masked_mean(torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv), ro.mask)

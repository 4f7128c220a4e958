"""MAML for reinforcement learning (Finn et al. 2017, 5.3) and the paper's two baselines.

Inner loop: vanilla policy gradient on ``shots`` rollouts per task, with the advantages of a
linear feature baseline fitted to that task (metalab.rl.pg). Outer loop: PPO's clipped
surrogate on ``queries`` rollouts of the adapted policy, ``outer_steps`` Adam steps per
meta-batch with the adaptation recomputed from the same pre-update rollouts at each step
(ProMP's outer objective, Rothfuss et al. 2019), in place of the paper's TRPO: it is a loss
for any first-order optimizer, so Lightning, DDP (one gradient all-reduce) and the optimizer
configs work as for the other algorithms, where TRPO's conjugate gradient would need
Hessian-vector products through the second-order inner step on every rank, and ProMP reports
equal or better returns than MAML-TRPO on these tasks.

- ``maml_rl``: the above, second order unless ``first_order``.
- ``pretrained_rl``: the same outer objective on rollouts of the unadapted policy over all
  tasks jointly (no inner step in training); tested with the same inner steps.
- ``random_rl``: no training; the random initialisation tested with the same inner steps.
- ``reptile_rl``: Reptile (Nichol et al. 2018) on the same engine: ``inner_steps``
  policy-gradient steps on each task (fresh rollouts before each), then the initialisation
  moves towards the adapted weights.
"""

from __future__ import annotations

import torch
from torch import nn

from metalab.algorithms.base import MetaLearner
from metalab.errors import ConfigError, require_positive
from metalab.rl import pg
from metalab.rl.pg import ESTIMATORS, LOG_STD, Params, Rollouts, per_task
from metalab.rl.tasks import TaskBatch
from metalab.tasks import RL


def leaves(params: Params) -> Params:
    """Detached copies that require grad: the start of an inner step that records nothing
    for the outer loop (sampling, evaluation)."""
    return {k: v.detach().requires_grad_() for k, v in params.items()}


class MAMLRL(MetaLearner):
    tasks = (RL.name,)
    #: inner steps before the rollouts of the outer objective, in training
    adapt_in_training = True

    def __init__(
        self,
        backbone,
        env,
        inner_lr: float = 0.1,
        inner_steps: int = 1,
        eval_inner_steps: int = 3,
        first_order: bool = False,
        estimator: str = "lvc",
        outer_steps: int = 5,
        clip: float = 0.2,
        gamma: float = 0.99,
        normalize_advantages: bool = True,
        init_log_std: float = 0.0,
        shots: int = 20,
        queries: int = 20,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for key, value in (
            ("inner_steps", inner_steps),
            ("eval_inner_steps", eval_inner_steps),
            ("outer_steps", outer_steps),
        ):
            require_positive(f"algorithm.{key}", value)
        if eval_inner_steps < inner_steps:
            raise ConfigError(
                "algorithm.eval_inner_steps",
                eval_inner_steps,
                f"must be at least algorithm.inner_steps={inner_steps}",
            )
        if estimator not in ESTIMATORS:
            raise ConfigError("algorithm.estimator", estimator, f"allowed: {', '.join(ESTIMATORS)}")
        self.automatic_optimization = False  # several outer steps per meta-batch
        self.env = env
        self.net = backbone(out_dim=env.act_dim)
        self.log_std = nn.Parameter(torch.full((env.act_dim,), float(init_log_std)))
        self.inner_lr, self.inner_steps, self.eval_inner_steps = (
            inner_lr,
            inner_steps,
            eval_inner_steps,
        )
        self.first_order, self.estimator = bool(first_order), estimator
        self.outer_steps, self.clip, self.gamma = outer_steps, clip, gamma
        self.normalize, self.shots, self.queries = normalize_advantages, shots, queries

    # -- the policy ----------------------------------------------------------------------------
    def params(self) -> Params:
        return {**dict(self.net.named_parameters()), LOG_STD: self.log_std}

    def rollouts(self, params: Params, batch: TaskBatch, gens, k: int) -> Rollouts:
        ro = pg.sample(self.env, self.net, params, batch.tasks, gens, k)
        return pg.add_advantages(ro, self.gamma, self.normalize)

    def step(self, params: Params, ro: Rollouts, create_graph: bool) -> Params:
        return pg.pg_step(self.net, params, ro, self.inner_lr, self.estimator, create_graph)

    # -- training ------------------------------------------------------------------------------
    def collect(self, batch: TaskBatch) -> tuple[list[Rollouts], Rollouts]:
        """Rollouts before each inner step (``shots`` per task) and of the adapted policy
        (``queries`` per task), sampled once per meta-batch."""
        gens = batch.generators()
        params = per_task({k: v.detach() for k, v in self.params().items()}, len(batch.tasks))
        stages = []
        for _ in range(self.inner_steps if self.adapt_in_training else 0):
            stages.append(self.rollouts(params, batch, gens, self.shots))
            params = self.step(leaves(params), stages[-1], create_graph=False)
        return stages, self.rollouts(
            {k: v.detach() for k, v in params.items()}, batch, gens, self.queries
        )

    def outer_objective(self, stages: list[Rollouts], post: Rollouts, tasks: int) -> torch.Tensor:
        """Mean over this rank's tasks of the clipped surrogate of the adapted policy, whose
        adaptation from theta is recomputed (and differentiated through) here."""
        params = per_task(self.params(), tasks)
        for ro in stages:
            params = self.step(params, ro, create_graph=not self.first_order)
        logp = pg.log_prob(self.net, params, post.obs, post.actions)
        return pg.clipped_surrogate(logp, post, self.clip).mean()

    def training_step(self, batch: TaskBatch, batch_idx: int) -> None:
        opt = self.optimizers()
        stages, post = self.collect(batch)
        theta = list(self.params().values())
        for i in range(self.outer_steps):
            objective = self.outer_objective(stages, post, len(batch.tasks))
            grads = torch.autograd.grad(-objective, theta)
            for p, g in zip(theta, self.mean_over_ranks(grads)):
                p.grad = g
            # one counted step per meta-batch: trainer.global_step stays the meta-step that
            # the task schedule and resumption key on
            opt.step() if i == self.outer_steps - 1 else opt.optimizer.step()
            opt.zero_grad()
        pre = stages[0] if stages else None  # pretrained_rl: no rollouts before adaptation
        self.end_step(pre, post, post.steps + sum(s.steps for s in stages))

    def end_step(self, pre: Rollouts | None, post: Rollouts, env_steps: int) -> None:
        """After the optimizer step: the scheduler's step, and the logs, each the mean over
        the ranks but the environment steps, their sum."""
        if (scheduler := self.lr_schedulers()) is not None:
            scheduler.step()
        if pre is not None:
            self.log("train/return_pre", pre.returns.mean(), sync_dist=True)
        self.log("train/return", post.returns.mean(), prog_bar=True, sync_dist=True)
        self.log("train/env_steps", float(env_steps), reduce_fx="sum", sync_dist=True)

    def mean_over_ranks(self, grads: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """The gradient of the global meta-batch: each rank holds an equal share of tasks, so
        the mean of the ranks' means (one all-reduce of the flattened gradient)."""
        if self.trainer.world_size == 1:
            return list(grads)
        flat = torch.cat([g.flatten() for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.trainer.world_size
        return [chunk.view_as(g) for chunk, g in zip(flat.split([g.numel() for g in grads]), grads)]

    # -- evaluation on fixed tasks -------------------------------------------------------------
    def adapted_returns(self, batch: TaskBatch) -> torch.Tensor:
        """Return per task ``[B, eval_inner_steps + 1]``: before adaptation and after each
        inner step, each step on ``shots`` fresh rollouts of the current policy."""
        gens = batch.generators()
        params = per_task({k: v.detach() for k, v in self.params().items()}, len(batch.tasks))
        returns = []
        for s in range(self.eval_inner_steps + 1):
            ro = self.rollouts(params, batch, gens, self.shots)
            returns.append(ro.returns)
            if s < self.eval_inner_steps:
                params = {k: v.detach() for k, v in self.step(leaves(params), ro, False).items()}
        return torch.stack(returns, 1)

    def _eval_step(self, batch, split: str) -> None:
        ids, tasks = batch
        with torch.enable_grad():
            returns = self.adapted_returns(tasks)
        metrics = {f"return_step{s}": returns[:, s] for s in range(returns.shape[1])}
        metrics["return"] = returns[:, self.inner_steps]  # after the trained number of steps
        self._outputs.append((ids.to(self.device), metrics))


class PretrainedRL(MAMLRL):
    adapt_in_training = False


class RandomRL(MAMLRL):
    def training_step(self, batch: TaskBatch, batch_idx: int) -> None:
        self.optimizers().step()  # no gradients: counts the step, leaves the random init


class ReptileRL(MAMLRL):
    """Reptile's outer update, ``theta += eps * mean_i(theta'_i - theta)``, where theta'_i is
    theta after ``inner_steps`` of the inner policy-gradient step on task i (the steps the test
    takes too). The pseudo-gradient ``theta - mean_i theta'_i`` goes to the configured optimizer
    (SGD with lr = eps, annealed), as in metalab.algorithms.reptile; no second derivatives."""

    def reptile_direction(self, batch: TaskBatch) -> tuple[list[torch.Tensor], list[Rollouts]]:
        """``theta - mean_i theta'_i`` per parameter (this rank's tasks), and the rollouts
        before each inner step."""
        gens = batch.generators()
        theta = {k: v.detach() for k, v in self.params().items()}
        params, stages = per_task(theta, len(batch.tasks)), []
        for _ in range(self.inner_steps):
            stages.append(self.rollouts(params, batch, gens, self.shots))
            params = {
                k: v.detach() for k, v in self.step(leaves(params), stages[-1], False).items()
            }
        return [theta[k] - params[k].mean(0) for k in theta], stages

    def training_step(self, batch: TaskBatch, batch_idx: int) -> None:
        opt = self.optimizers()
        direction, stages = self.reptile_direction(batch)
        for p, g in zip(self.params().values(), self.mean_over_ranks(direction)):
            p.grad = g
        opt.step()
        opt.zero_grad()
        # the return before adaptation, and before the last inner step
        self.end_step(stages[0], stages[-1], sum(s.steps for s in stages))

"""Task distributions over environments, stepped in batches of ``[tasks, rollouts]``.

An environment class knows its task distribution (``sample_tasks``) and steps ``B`` tasks with
``K`` rollouts each at once: ``reset(tasks [B, P], K, seeds [B, K]) -> obs [B, K, O]`` and
``step(actions [B, K, A]) -> obs, reward [B, K], done [B, K]``. A rollout lasts ``horizon`` steps
unless ``done``; the rollout loop (metalab.rl.pg) masks what follows ``done``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from metalab.errors import ConfigError


class Nav2D:
    """The MAML paper's 2D navigation (Finn et al. 2017, 5.3; rllab's PointEnvRandGoal): a point
    starts at the origin, its action is a velocity clipped to [-0.1, 0.1] per axis, the reward
    is minus the distance to the goal after the move, and the rollout ends after ``horizon``
    steps or within 0.01 of the goal on both axes. Goals are uniform in the unit square centred
    on the origin, [-0.5, 0.5]^2, as in the authors' code. Pure torch: all rollouts step at once
    on the tasks' device."""

    obs_dim, act_dim, task_dim = 2, 2, 2

    def __init__(
        self,
        horizon: int = 100,
        goal_low: float = -0.5,
        goal_high: float = 0.5,
        max_speed: float = 0.1,
        name: str = "nav2d",
    ):
        self.horizon, self.low, self.high, self.max_speed = horizon, goal_low, goal_high, max_speed
        self.name = name

    def check(self) -> None:
        pass

    def sample_tasks(self, gen: torch.Generator, n: int) -> Tensor:
        return (
            self.low
            + (self.high - self.low) * torch.rand(n, 2, generator=gen, dtype=torch.float64).float()
        )

    def reset(self, tasks: Tensor, k: int, seeds: Tensor) -> Tensor:
        self.goal = tasks[:, None, :].expand(-1, k, -1)
        self.pos = torch.zeros(*self.goal.shape, device=tasks.device, dtype=tasks.dtype)
        return self.pos

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        self.pos = self.pos + action.clamp(-self.max_speed, self.max_speed)
        delta = self.pos - self.goal
        reward = -delta.norm(dim=-1)
        done = (delta.abs() < 0.01).all(-1)
        return self.pos, reward, done


def require_mujoco(dataset: str) -> None:
    """Stop before any work when gymnasium's MuJoCo environments cannot run here."""
    try:
        import gymnasium.envs.mujoco  # noqa: F401
        import mujoco  # noqa: F401
    except Exception as exc:  # ImportError, or gymnasium's DependencyNotInstalled
        raise ConfigError(
            "dataset",
            dataset,
            f"needs MuJoCo, which does not import here ({exc}): pip install "
            "'gymnasium[mujoco]' (metalab's rl extra)",
        ) from None


class HalfCheetah:
    """The MAML paper's HalfCheetah tasks (5.3, from rllab's half_cheetah_env_rand{,_direc}) on
    gymnasium's HalfCheetah-v5: ``task=vel`` runs at a goal velocity uniform in [0, 2], reward
    -|v - goal| - ctrl_cost * |a|^2; ``task=dir`` runs forward or backward (direction +1 or -1,
    equally likely), reward direction * v - ctrl_cost * |a|^2. Horizon 200. The B * K rollouts
    step together in one gymnasium vector environment (``vectorization``: sync, one process,
    or async, one process per environment)."""

    obs_dim, act_dim, task_dim = 17, 6, 1
    #: gymnasium environments with HalfCheetah's observations, actions and x_velocity info
    env_ids = ("HalfCheetah-v5", "HalfCheetah-v4")

    def __init__(
        self,
        task: str = "vel",
        horizon: int = 200,
        ctrl_cost: float = 0.05,
        vectorization: str = "sync",
        env_id: str = "HalfCheetah-v5",
        name: str = "halfcheetah_vel",
    ):
        if env_id not in self.env_ids:
            raise ConfigError("dataset.env.env_id", env_id, f"allowed: {', '.join(self.env_ids)}")
        if task not in ("vel", "dir"):
            raise ConfigError("dataset.env.task", task, "allowed: vel, dir")
        if vectorization not in ("sync", "async"):
            raise ConfigError("dataset.env.vectorization", vectorization, "allowed: sync, async")
        self.task, self.horizon, self.ctrl_cost = task, horizon, ctrl_cost
        self.vectorization, self.env_id, self.name = vectorization, env_id, name
        self.envs = None

    def check(self) -> None:
        require_mujoco(self.name)

    def sample_tasks(self, gen: torch.Generator, n: int) -> Tensor:
        u = torch.rand(n, 1, generator=gen, dtype=torch.float64).float()
        return 2.0 * u if self.task == "vel" else torch.where(u < 0.5, -1.0, 1.0)

    def make(self, n: int):
        import gymnasium

        if self.envs is not None and self.envs.num_envs == n:
            return self.envs
        if self.envs is not None:
            self.envs.close()
        # rewards are computed here from x_velocity; the environment's own forward reward unused
        self.envs = gymnasium.make_vec(
            self.env_id,
            num_envs=n,
            vectorization_mode=self.vectorization,
            ctrl_cost_weight=self.ctrl_cost,
        )
        return self.envs

    def reset(self, tasks: Tensor, k: int, seeds: Tensor) -> Tensor:
        self.tasks = tasks[:, None, 0].expand(-1, k)
        self.shape = self.tasks.shape
        envs = self.make(self.tasks.numel())
        obs, _ = envs.reset(seed=[int(s) for s in seeds.flatten()])
        return self._tensor(obs, tasks)

    def _tensor(self, array: np.ndarray, like: Tensor) -> Tensor:
        out = torch.as_tensor(np.asarray(array, dtype=np.float32), device=like.device)
        return out.view(*self.shape, *out.shape[1:])

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = action.detach().clamp(-1.0, 1.0).flatten(0, 1).cpu().numpy()
        obs, _, terminated, truncated, info = self.envs.step(a)
        velocity = self._tensor(info["x_velocity"], action)
        ctrl = self._tensor(info["reward_ctrl"], action)  # -ctrl_cost * |a|^2
        if self.task == "vel":
            reward = -(velocity - self.tasks).abs() + ctrl
        else:
            reward = self.tasks * velocity + ctrl
        done = self._tensor(terminated | truncated, action).bool()
        return self._tensor(obs, action), reward, done

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
            self.envs = None

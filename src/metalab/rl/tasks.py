"""Tasks for meta-RL as an EpisodeSource (metalab.data.source): a task is an environment setting
(a goal, a velocity, a direction) with the seed of its own random stream (action noise,
environment resets). The DataModule's schedule applies unchanged: training tasks depend on
(seed, step), evaluation tasks on eval_seed. The environment itself lives in the algorithm (it
steps the policy); this source only samples tasks."""

from __future__ import annotations

from dataclasses import dataclass

import hydra
import torch
from omegaconf import DictConfig
from torch import Tensor

from metalab.data.episodes import EpisodeShape


@dataclass
class TaskBatch:
    tasks: Tensor  # [B, task_dim]: goals, velocities or directions
    seeds: Tensor  # [B]: the seed of each task's random stream

    def generators(self) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(int(s)) for s in self.seeds]


def stream_seed(gen: torch.Generator) -> int:
    return int(torch.randint(2**62, (1,), generator=gen))


class EnvTasks:
    """The tasks of one split: the same task distribution for every split, as in the papers."""

    def __init__(self, env, name: str):
        self.env, self.name = env, name

    def to(self, device) -> EnvTasks:
        return self  # rollouts are made by the algorithm, on its device

    def check(self, shape: EpisodeShape) -> None:
        self.env.check()  # e.g. MuJoCo installed, before anything heavy

    def plan(
        self, gen: torch.Generator, num_tasks: int, ways: int, shots: int, queries: int
    ) -> Tensor:
        return self.env.sample_tasks(gen, num_tasks)

    def episodes(self, plan: Tensor, shots: int, gens: list[torch.Generator]) -> TaskBatch:
        return TaskBatch(plan, torch.tensor([stream_seed(g) for g in gens]))


def env_sources(dataset: DictConfig) -> dict[str, EnvTasks]:
    env = hydra.utils.instantiate(dataset.env)
    return {split: EnvTasks(env, split) for split in ("train", "val", "test")}

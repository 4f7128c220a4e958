"""Tasks for meta-RL: a training meta-batch per global step and fixed evaluation tasks, each with
the seed of its own random stream (action noise, environment resets). Same schedule as the
episodic DataModule: training tasks depend on (seed, step), evaluation tasks on eval_seed."""

from __future__ import annotations

from dataclasses import dataclass

import hydra
import torch
from torch import Tensor

from metalab.data.datamodule import EpisodeDataModule
from metalab.data.sampler import generator

SALT = {"val": 1, "test": 2}


@dataclass
class TaskBatch:
    tasks: Tensor  # [B, task_dim]: goals, velocities or directions
    seeds: Tensor  # [B]: the seed of each task's random stream

    def generators(self) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(int(s)) for s in self.seeds]


def stream_seed(*keys: int) -> int:
    return int(torch.randint(2**62, (1,), generator=generator(*keys)))


class RLDataModule(EpisodeDataModule):
    """Serves :class:`TaskBatch` where the episodic DataModule serves episodes. The environment
    itself lives in the algorithm (it steps the policy); this one only samples tasks."""

    def load(self) -> None:
        if self.sources is not None:
            return
        self.env = hydra.utils.instantiate(self.cfg.env)
        self.env.check()  # e.g. MuJoCo installed, before anything heavy
        self.sources = {}
        for split, n in self.n_episodes.items():
            self.plans[split] = self.fixed_plan(split, n)

    def fixed_plan(self, split: str, n: int) -> Tensor:
        # task e depends only on (eval_seed, split, e): the same for every run and any n >= e
        tasks = [self.env.sample_tasks(generator(self.eval_seed, SALT[split], e), 1)
                 for e in range(n)]
        return torch.cat(tasks) if tasks else torch.empty(0, self.env.task_dim)

    def train_episodes(self, step: int) -> TaskBatch:
        """This rank's share of the global meta-batch of ``step``."""
        tasks = self.env.sample_tasks(generator(self.seed, step), self.meta_batch)
        share = self.meta_batch // self.world
        first, last = self.rank * share, (self.rank + 1) * share
        seeds = [stream_seed(self.seed, step, task) for task in range(first, last)]
        return TaskBatch(tasks[first:last], torch.tensor(seeds))

    def eval_episodes(self, split: str, ids: Tensor) -> TaskBatch:
        seeds = [stream_seed(self.eval_seed, SALT[split], int(e), 1) for e in ids]
        return TaskBatch(self.plans[split][ids], torch.tensor(seeds))

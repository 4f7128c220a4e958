"""The one contract between a data source and the DataModule: image datasets (sampler.py), text
(text.py), regression task generators (sinusoid.py) and reinforcement-learning environments
(metalab.rl.tasks) all implement ``EpisodeSource``, one object per split.

A batch of tasks is made in two steps: ``plan`` draws a cheap CPU description of the tasks from
a generator (sample indices, task parameters), so tasks are a pure function of seeds; ``episodes``
turns a plan into what the algorithm receives, on the training device."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from metalab.data.episodes import EpisodeShape


@runtime_checkable
class EpisodeSource(Protocol):
    #: the split it serves: train, val or test
    name: str

    def to(self, device) -> EpisodeSource:
        """Move what the episodes are made from to the training device; returns itself."""

    def check(self, shape: EpisodeShape) -> None:
        """Raise ConfigError (naming ``shape.key(...)``) if this split cannot make such episodes."""

    def plan(
        self, gen: torch.Generator, num_tasks: int, ways: int, shots: int, queries: int
    ) -> torch.Tensor:
        """A CPU tensor describing ``num_tasks`` tasks, drawn from ``gen`` only."""

    def episodes(
        self, plan: torch.Tensor, shots: int, gens: list[torch.Generator] | None = None
    ) -> Any:
        """The tasks of ``plan`` (metalab.data.episodes.Episodes, or RL's TaskBatch); ``gens``,
        one generator per task, for what is random per task (augmentation, environment noise)."""

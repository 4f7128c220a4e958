"""The sinusoid regression tasks of MAML (Finn et al. 2017, section 5.1).

A task is y = A sin(x - phase) with A ~ U[0.1, 5], phase ~ U[0, pi], x ~ U[-5, 5]; K support
points, and query points from the same task. Tasks are drawn fresh, so there is nothing to load.
"""

from __future__ import annotations

import math

import torch

from metalab.data.episodes import Episodes, EpisodeShape
from metalab.errors import require_positive


class SinusoidTasks:
    """Regression tasks drawn fresh for one split (an EpisodeSource)."""

    def __init__(
        self, amplitude=(0.1, 5.0), phase=(0.0, math.pi), x_range=(-5.0, 5.0), name: str = "train"
    ):
        self.amplitude, self.phase, self.x_range = amplitude, phase, x_range
        self.name = name
        self.device = torch.device("cpu")

    def to(self, device) -> SinusoidTasks:
        self.device = torch.device(device)
        return self

    def check(self, shape: EpisodeShape) -> None:
        for what in ("shots", "queries"):
            require_positive(shape.key(what), getattr(shape, what))

    def plan(self, gen: torch.Generator, num_tasks: int, ways: int, shots: int, queries: int):
        """Points ``[T, shots+queries, 2]`` holding (x, y) of each task."""

        def uniform(low_high, *shape):
            low, high = low_high
            return low + (high - low) * torch.rand(*shape, generator=gen)

        amp = uniform(self.amplitude, num_tasks, 1)
        phase = uniform(self.phase, num_tasks, 1)
        x = uniform(self.x_range, num_tasks, shots + queries)
        return torch.stack([x, amp * torch.sin(x - phase)], dim=-1)

    def episodes(self, points: torch.Tensor, shots: int, gens=None) -> Episodes:
        points = points.to(self.device)
        x, y = points[..., :1], points[..., 1:]
        return Episodes(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])


def load_sinusoid(**kwargs) -> dict[str, SinusoidTasks]:
    """The same task distribution for every split (as in the MAML paper)."""
    return {name: SinusoidTasks(**kwargs, name=name) for name in ("train", "val", "test")}

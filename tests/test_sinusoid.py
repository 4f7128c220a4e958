"""The sinusoid tasks of the config (conf/dataset/sinusoid.yaml) span the README's ranges:
amplitude in [0.1, 5], phase in [0, pi], x in [-5, 5]; each task's amplitude and phase are
recovered exactly from its points by least squares."""

import math

import torch

from helpers import compose
from metalab.data.datamodule import load_sources
from metalab.data.sampler import generator


def test_tasks_span_the_documented_ranges():
    cfg = compose(["dataset=sinusoid", "backbone=mlp", "algorithm=maml"])
    sources = load_sources(cfg.dataset)
    points = sources["train"].plan(generator(0, 0), 2000, 1, 10, 10)  # [T, 20, (x, y)]
    x, y = points[..., 0].double(), points[..., 1].double()
    assert x.min() >= -5 and x.max() <= 5 and x.min() < -4.99 and x.max() > 4.99
    # y = A sin(x - phase) = A cos(phase) sin x - A sin(phase) cos x
    basis = torch.stack([x.sin(), -x.cos()], -1)  # [T, 20, 2]
    coef = torch.linalg.lstsq(basis, y.unsqueeze(-1)).solution.squeeze(-1)
    amplitude = coef.norm(dim=-1)
    phase = torch.atan2(coef[:, 1], coef[:, 0])
    fit = (basis @ coef.unsqueeze(-1)).squeeze(-1)
    assert (fit - y).abs().max() < 1e-4  # the tasks are exact sinusoids
    assert amplitude.min() >= 0.1 - 1e-4 and amplitude.max() <= 5 + 1e-4
    assert amplitude.min() < 0.11 and amplitude.max() > 4.99
    assert phase.min() >= -1e-4 and phase.max() <= math.pi + 1e-4
    assert phase.min() < 0.01 and phase.max() > math.pi - 0.01
    # roughly uniform: the means of U[0.1, 5] and U[0, pi], within 6 standard errors
    assert abs(amplitude.mean() - 2.55) < 6 * 4.9 / math.sqrt(12 * 2000)
    assert abs(phase.mean() - math.pi / 2) < 6 * math.pi / math.sqrt(12 * 2000)
    # the same distribution in every split, and the episodes cut support from query points
    assert [tuple(s.amplitude) for s in sources.values()] == [(0.1, 5.0)] * 3
    episodes = sources["test"].episodes(points[:3], shots=10)
    assert episodes.support_x.shape == (3, 10, 1) and episodes.query_y.shape == (3, 10, 1)
    assert torch.equal(episodes.query_x[..., 0], points[:3, 10:, 0])

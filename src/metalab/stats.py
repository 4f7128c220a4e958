"""Summary statistics for evaluation episodes."""

from __future__ import annotations

import math

import torch


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval (1.96 * s / sqrt(n)),
    the convention of the few-shot literature."""
    values = values.double().flatten()
    n = values.numel()
    if n == 0:
        return math.nan, math.nan
    std = values.std(unbiased=True).item() if n > 1 else 0.0
    return values.mean().item(), 1.96 * std / math.sqrt(n)

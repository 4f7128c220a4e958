"""The evaluation summary (mean and 95% CI half-width) against scipy."""

import math

import pytest
import torch
from scipy import stats

from metalab.compare.statistics import mean_ci95


@pytest.mark.parametrize("values", [[0.2, 0.4, 0.4, 1.0], [3.0, -1.5], list(range(37))])
def test_mean_and_ci95_equal_scipy(values):
    mean, ci = mean_ci95(torch.tensor(values, dtype=torch.float32))
    assert mean == pytest.approx(sum(values) / len(values), rel=1e-7)
    assert ci == pytest.approx(1.96 * stats.sem(values), rel=1e-7)  # ddof=1, normal quantile
    normal = stats.norm.interval(0.95, loc=mean, scale=stats.sem(values))
    assert ci == pytest.approx((normal[1] - normal[0]) / 2, rel=1e-4)


def test_one_value_has_no_spread_and_none_has_no_mean():
    assert mean_ci95(torch.tensor([0.75])) == (0.75, 0.0)
    mean, ci = mean_ci95(torch.tensor([]))
    assert math.isnan(mean) and math.isnan(ci)
    assert mean_ci95(torch.ones(2, 3)) == (1.0, 0.0)  # any shape is flattened


def test_a_plain_sequence_is_summarised_as_a_tensor_is():
    values = [0.25, 0.5, 1.0]
    assert mean_ci95(values) == mean_ci95(torch.tensor(values)) == mean_ci95(tuple(values))
    assert mean_ci95(values)[1] == pytest.approx(1.96 * stats.sem(values), rel=1e-12)

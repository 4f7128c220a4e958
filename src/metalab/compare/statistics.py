"""Summary statistics for evaluation episodes and for comparisons across runs and seeds.

The Student t distribution is computed here (regularised incomplete beta function, Lentz's
continued fraction) so that metalab-compare needs no scipy; the tests check it against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_ci95(values) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval (1.96 * s / sqrt(n)),
    the convention of the few-shot literature. ``values``: a tensor or a sequence of numbers."""
    values = values.double().flatten().tolist() if hasattr(values, "double") else list(values)
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean, std = mean_std(values)
    return mean, 1.96 * (std if n > 1 else 0.0) / math.sqrt(n)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); the deviation is NaN for one value."""
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
    return mean, math.sqrt(var)


def t_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% CI from the t distribution with n - 1 degrees of
    freedom (few values, e.g. one per training seed); NaN half-width for one value."""
    mean, std = mean_std(values)
    n = len(values)
    return mean, (t_quantile(0.975, n - 1) * std / math.sqrt(n) if n > 1 else math.nan)


def paired_t_test(diffs: Sequence[float]) -> tuple[float, float, float, float]:
    """Paired t test on per-episode differences: mean, half-width of its 95% CI (t, n - 1
    degrees of freedom), the t statistic and the two-sided p-value."""
    n = len(diffs)
    mean, std = mean_std(diffs)
    if n < 2:
        return mean, math.nan, math.nan, math.nan
    se = std / math.sqrt(n)
    if se == 0:  # every episode differs by the same amount
        return (
            mean,
            0.0,
            math.copysign(math.inf, mean) if mean else math.nan,
            (0.0 if mean else 1.0),
        )
    t = mean / se
    return mean, t_quantile(0.975, n - 1) * se, t, 2 * t_sf(abs(t), n - 1)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given: reject the i-th
    hypothesis at level alpha when its adjusted p-value is <= alpha. NaN stays NaN and does not
    count as a hypothesis."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m = len(order)
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))  # adjusted p-values never decrease
        adjusted[i] = running
    return adjusted


# -- Student's t distribution --------------------------------------------------------------------
def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))  # P(|T| > |t|) / 2
    return tail if t >= 0 else 1.0 - tail


def t_quantile(q: float, df: float) -> float:
    """The t with P(T <= t) = q (bisection on the tail; 1e-12 absolute)."""
    if not 0 < q < 1:
        raise ValueError(f"quantile {q} outside (0, 1)")
    if q < 0.5:
        return -t_quantile(1 - q, df)
    low, high = 0.0, 1.0
    while t_sf(high, df) > 1 - q:
        high *= 2
    while high - low > 1e-12 * max(1.0, high):
        mid = (low + high) / 2
        low, high = (mid, high) if t_sf(mid, df) > 1 - q else (low, mid)
    return (low + high) / 2


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1) / (a + b + 2):  # the continued fraction converges fast on this side
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result

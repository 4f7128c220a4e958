"""metalab.compare.statistics' t distribution, paired t test and Holm correction against
scipy.stats and against Holm's procedure as he states it; and the number formatting of
metalab-compare."""

import math

import numpy as np
import pytest
import scipy.stats

from metalab.compare import numbers as fmt
from metalab.compare import statistics as stats


@pytest.mark.parametrize("df", [1, 2, 4, 9, 29, 99, 1000])
def test_t_distribution_matches_scipy(df):
    for q in (0.5, 0.6, 0.9, 0.975, 0.995, 0.025):
        assert stats.t_quantile(q, df) == pytest.approx(
            scipy.stats.t.ppf(q, df), rel=1e-9, abs=1e-12
        )
    for t in (-4.0, -0.3, 0.0, 0.7, 2.1, 12.0):
        assert stats.t_sf(t, df) == pytest.approx(scipy.stats.t.sf(t, df), rel=1e-9, abs=1e-15)


def test_t_distribution_edges():
    """Infinite t (a constant difference) has tail 0 or 1; quantiles exist only inside (0, 1)."""
    for df in (1, 7):
        for t in (math.inf, -math.inf):
            assert stats.t_sf(t, df) == scipy.stats.t.sf(t, df)
    for q in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=rf"^quantile {q} outside \(0, 1\)$"):
            stats.t_quantile(q, 3)


def test_incomplete_beta_matches_scipy():
    """I_x(a, b) at the t distribution's b = 1/2 and a = df / 2, across (0, 1) and at its ends."""
    from scipy.special import betainc

    for a in (0.5, 1.0, 1.5, 2.5, 20.0):
        for b in (0.5, 3.0):
            for x in np.linspace(0.0, 1.0, 41):
                assert stats.betainc(a, b, x) == pytest.approx(betainc(a, b, x), rel=1e-9, abs=0)


@pytest.mark.parametrize("n", [2, 3, 5, 40])
def test_paired_t_test_and_t_ci_match_scipy(n):
    rng = np.random.default_rng(n)
    a, b = rng.uniform(0.4, 0.9, n), rng.uniform(0.4, 0.9, n)
    mean, half, t, p = stats.paired_t_test((a - b).tolist())
    want = scipy.stats.ttest_rel(a, b)
    low, high = scipy.stats.t.interval(
        0.95, n - 1, loc=(a - b).mean(), scale=scipy.stats.sem(a - b)
    )
    assert (t, p) == pytest.approx((want.statistic, want.pvalue), rel=1e-9)
    assert (mean - half, mean + half) == pytest.approx((low, high), rel=1e-9)
    mean, half = stats.t_ci95(a.tolist())
    low, high = scipy.stats.t.interval(0.95, n - 1, loc=a.mean(), scale=scipy.stats.sem(a))
    assert (mean - half, mean + half) == pytest.approx((low, high), rel=1e-9)


@pytest.mark.parametrize("diff", [0.25, -0.25])
def test_a_constant_difference_is_certain(diff):
    """Every episode differs by the same amount (exact in binary): the CI has no width and the
    t statistic is infinite with the sign of the difference, p = 0, as scipy's."""
    diffs = [diff] * 4
    want = scipy.stats.ttest_1samp(diffs, 0.0)
    mean, half, t, p = stats.paired_t_test(diffs)
    assert (mean, half) == (diff, 0.0)
    assert (t, p) == (want.statistic, want.pvalue) == (math.copysign(math.inf, diff), 0.0)


def test_identical_runs_differ_by_nothing():
    """All differences zero: no t statistic (0/0, as scipy's NaN) and p = 1, so that Holm's
    correction counts the comparison and never rejects it (scipy's p is NaN)."""
    mean, half, t, p = stats.paired_t_test([0.0, 0.0, 0.0])
    assert (mean, half, p) == (0.0, 0.0, 1.0) and math.isnan(t)
    assert math.isnan(scipy.stats.ttest_1samp([0.0] * 3, 0.0).statistic)
    assert stats.paired_t_test([0.0, 2.0])[2:] == pytest.approx((1.0, 0.5), rel=1e-12)  # se 1


def test_one_value_has_no_t_ci():
    mean, half = stats.t_ci95([0.7])
    assert mean == 0.7 and math.isnan(half)


def test_holm_on_a_worked_example():
    # four hypotheses, p = .01 .04 .03 .005: Holm rejects the two smallest at alpha = .05
    # (.005 <= .05/4, .01 <= .05/3, then .03 > .05/2 stops); adjusted: 4p, 3p, then monotone
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5]) == [0.5]
    assert stats.holm([0.3, 0.4]) == [0.6, 0.6]  # never below a smaller one's
    assert stats.holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    adjusted = stats.holm([0.2, math.nan, 0.01])
    assert adjusted[0] == pytest.approx(0.2) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)


def holm_rejects(pvalues, alpha):
    """Holm (1979) as stated: order the p-values, reject H(1), H(2)... while
    p(j) <= alpha / (m - j + 1), and stop at the first that is not."""
    m, rejected = len(pvalues), set()
    for j, (p, i) in enumerate(sorted((p, i) for i, p in enumerate(pvalues)), 1):
        if p > alpha / (m - j + 1):
            break
        rejected.add(i)
    return rejected


def test_holm_adjusted_p_values_make_the_step_down_decisions():
    rng = np.random.default_rng(0)
    for _ in range(200):
        pvalues = (rng.uniform(0, 0.1, rng.integers(1, 8)) ** 2).tolist()
        adjusted = stats.holm(pvalues)
        for alpha in (0.01, 0.05, 0.1):
            assert {i for i, q in enumerate(adjusted) if q <= alpha} == holm_rejects(pvalues, alpha)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0012479065886745896, "0.00125"),
        (3e-05, "3e-05"),
        (0.4, "0.4"),
        (64, "64"),
        (True, "True"),
        ("protonet", "protonet"),
        (None, "–"),
        (1234567.0, "1.23e+06"),
    ],
)
def test_parameters_have_three_significant_digits(value, text):
    assert fmt.param(value) == text


@pytest.mark.parametrize(
    ("value", "ci", "text"),
    [
        (0.809333, 0.0335, "0.81 ± 0.03"),  # the CI's first digit sets the precision
        (0.809333, 0.012, "0.809 ± 0.012"),  # two digits when it is a 1 or a 2
        (0.809333, 0.0029, "0.8093 ± 0.0029"),
        (12.3456, 3.4, "12 ± 3"),
        (123.4, 13.0, "123 ± 13"),
        (0.75, None, "0.7500"),  # no CI: four significant digits
        (1275.21, math.nan, "1275"),
        (math.nan, 0.03, "–"),  # a diverged run's null
    ],
)
def test_metrics_are_shown_to_the_precision_of_their_ci(value, ci, text):
    assert fmt.metric(value, ci) == text


def test_signed_differences_and_p_values():
    assert fmt.signed(0.0412, 0.03) == "+0.04"
    assert fmt.signed(-0.0412, 0.012) == "-0.041"
    assert fmt.signed(-0.001, 0.03) == "0.00"  # no "-0.00"
    assert [fmt.pvalue(p) for p in (0.0004, 0.0123, 0.2345, math.nan)] == [
        "<0.001",
        "0.012",
        "0.23",
        "–",
    ]

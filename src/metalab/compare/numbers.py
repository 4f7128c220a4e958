"""Numbers for people: parameters to a few significant digits, metrics to the precision their
confidence interval supports."""

from __future__ import annotations

import math

DASH = "–"


def finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def param(value, digits: int = 3) -> str:
    """A config value: floats to ``digits`` significant digits (0.0012479 -> 0.00125, 3e-05),
    everything else as written."""
    if value is None:
        return DASH
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{digits}g}"
    return str(value)


def decimals_for(ci: float) -> int:
    """Decimals that show a CI half-width to one significant digit, two when that digit would
    be 1 or 2 (0.034 -> 2: "0.03"; 0.012 -> 3: "0.012"; 3.4 -> 0; 13 -> 0)."""
    exponent = math.floor(math.log10(ci))
    leading = ci / 10**exponent
    digits = 2 if round(leading, 6) < 3 else 1
    return max(0, digits - 1 - exponent)


def metric(value: float, ci: float | None = None) -> str:
    """``value ± ci`` rounded to the CI's precision; without a usable CI, 4 significant
    digits."""
    if not finite(value):
        return DASH  # missing, or a diverged run's null
    if ci is None or not finite(ci) or ci <= 0:
        return sig(value)
    places = decimals_for(ci)
    return f"{value:.{places}f} ± {ci:.{places}f}"


def at_precision(value: float, ci: float | None) -> str:
    """``value`` alone, to the precision of ``ci`` (4 significant digits without one)."""
    if not finite(value):
        return DASH
    if ci is None or not finite(ci) or ci <= 0:
        return sig(value)
    return f"{value:.{decimals_for(ci)}f}"


def signed(value: float, ci: float | None) -> str:
    text = at_precision(value, ci)
    if text == DASH:
        return text
    if float(text) == 0:
        return text.lstrip("-")  # no "-0.00"
    return text if text.startswith("-") else f"+{text}"


def sig(value: float, digits: int = 4) -> str:
    """4 significant digits, never scientific for ordinary magnitudes (1275.2 -> 1275)."""
    if not finite(value):
        return DASH
    if value == 0:
        return "0"
    if 1e-4 <= abs(value) < 1e6:
        places = max(0, digits - 1 - math.floor(math.log10(abs(value))))
        return f"{value:.{places}f}"
    return f"{value:.{digits - 1}e}"


def pvalue(p: float) -> str:
    if not finite(p):
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.2g}" if p < 0.1 else f"{p:.2f}"

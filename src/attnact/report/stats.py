"""Statistics over seeds: mean, sample standard deviation, Student-t confidence intervals, and
paired differences against a baseline.

Papers in this field report single runs. We report the spread: with n seeds, the 95% interval is
mean ± t_{0.975, n−1} · s / √n, and a comparison against a baseline trained on the same seeds is
the mean of the per-seed differences with its own interval (paired, so the seed-to-seed variation
both runs share cancels).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["NO_SPREAD", "Summary", "paired_difference", "seeds_for_half_width", "summarize",
           "t_quantile"]

#: A standard deviation at or below this is no spread: identical values up to the rounding of
#: float arithmetic (accuracies are multiples of one test image, so two seeds can tie exactly).
NO_SPREAD = 1e-6


@dataclass(frozen=True)
class Summary:
    """Mean, spread and confidence interval of a sample (NaN where n is too small)."""

    n: int
    mean: float
    std: float  # sample standard deviation (n − 1 in the denominator)
    ci_low: float
    ci_high: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    @property
    def has_spread(self) -> bool:
        """Two or more values that differ: only then is the interval an estimate of anything
        (identical values give a zero-width interval whatever the variance really is)."""
        return self.n >= 2 and self.std > NO_SPREAD

    def format(self, scale: float = 1.0, digits: int = 2) -> str:
        """``mean ± std`` scaled (e.g. 100 for percentages); just the mean when n = 1."""
        if self.n == 0:
            return "–"
        if self.n == 1 or math.isnan(self.std):
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"

    def format_ci(self, scale: float = 1.0, digits: int = 2) -> str:
        if self.n < 2:
            return "–"
        return f"[{self.ci_low * scale:.{digits}f}, {self.ci_high * scale:.{digits}f}]"


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Summary of ``values`` with a two-sided Student-t interval at ``confidence``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, confidence)
    mean = math.fsum(xs) / n
    if n == 1:
        nan = float("nan")
        return Summary(1, mean, nan, nan, nan, confidence)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, confidence)


def paired_difference(
    values: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> Summary:
    """Summary of ``values[i] − baseline[i]``: the paired comparison over shared seeds."""
    if len(values) != len(baseline):
        raise ValueError(
            f"paired comparison needs one baseline value per seed: got {len(values)} values "
            f"and {len(baseline)} baseline values"
        )
    return summarize([a - b for a, b in zip(values, baseline, strict=True)], confidence)


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t quantile t_{(1+c)/2, df} of a ``confidence`` interval."""
    # SciPy takes a second to import: loaded where an interval is computed, not by the CLI
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf(0.5 + confidence / 2, df=df))


def seeds_for_half_width(
    std: float, half_width: float, confidence: float = 0.95, *, limit: int = 100_000
) -> int:
    """The fewest seeds n ≥ 2 whose interval t_{(1+c)/2, n−1} · std / √n is at most
    ``half_width``: the size a design needs if ``std`` is the spread its pilot measured.

    The interval narrows with both √n and the t quantile, so the answer is found by stepping
    n up (a closed form would need the quantile of the unknown n). ``limit`` is returned when
    even that many seeds would not do (a spread far above the target)."""
    if not half_width > 0:
        raise ValueError(f"half_width must be positive, got {half_width!r}")
    if not std >= 0:
        raise ValueError(f"std must be a non-negative number, got {std!r}")
    # the normal approximation n ≈ (1.96 s / h)² is a lower bound: start just below it
    n = max(2, int((t_quantile(confidence, 10_000) * std / half_width) ** 2) - 1)
    while n < limit and t_quantile(confidence, n - 1) * std / math.sqrt(n) > half_width:
        n += 1
    return min(n, limit)

"""Statistics against hand-computed values and known t quantiles."""

import math

import pytest

from attnact.report.stats import paired_difference, summarize

T975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105, 9: 2.262157163}  # t_{0.975, df}


def test_mean_std_ci_by_hand():
    xs = [0.90, 0.92, 0.91, 0.95, 0.87]
    s = summarize(xs)
    mean = sum(xs) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / 4)
    half = T975[4] * std / math.sqrt(5)
    assert s.n == 5
    assert s.mean == pytest.approx(mean)
    assert s.std == pytest.approx(std)
    assert s.ci_low == pytest.approx(mean - half, rel=1e-8)
    assert s.ci_high == pytest.approx(mean + half, rel=1e-8)


@pytest.mark.parametrize("n", [2, 3, 10])
def test_t_quantiles(n):
    xs = [0.0] * (n - 1) + [1.0]
    s = summarize(xs)
    assert s.half_width == pytest.approx(T975[n - 1] * s.std / math.sqrt(n), rel=1e-8)


def test_small_samples():
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)
    one = summarize([0.5])
    assert one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert one.format(100) == "50.00"
    assert one.format_ci() == "–"


def test_format():
    s = summarize([0.9, 0.92])
    assert s.format(100) == "91.00 ± 1.41"
    assert s.format_ci(100).startswith("[")


def test_paired_difference_cancels_shared_seed_effects():
    base = [0.80, 0.90, 0.70]
    better = [b + 0.01 for b in base]  # +1 point on every seed
    d = paired_difference(better, base)
    assert d.mean == pytest.approx(0.01)
    assert d.std == pytest.approx(0.0, abs=1e-12)
    # unpaired, the seed spread would swamp the effect
    assert summarize(better).half_width > 0.1


def test_errors():
    with pytest.raises(ValueError, match="one baseline value per seed"):
        paired_difference([1, 2], [1])
    with pytest.raises(ValueError, match="confidence"):
        summarize([1, 2], confidence=1.5)

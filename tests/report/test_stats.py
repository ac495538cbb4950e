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


def test_identical_values_have_no_spread_and_a_zero_width_interval():
    # 83.10 − 81.70 and 84.50 − 83.10 are both 1.40 up to float rounding
    tied = paired_difference([83.10, 84.50], [81.70, 83.10])
    assert tied.half_width == pytest.approx(0, abs=1e-9) and not tied.has_spread
    assert paired_difference([83.10, 84.55], [81.70, 83.10]).has_spread
    assert not summarize([1.0]).has_spread  # one value: no interval at all


def test_precision_section_leaves_out_differences_without_spread():
    from attnact.experiments.reporting import precision_section

    rows = [
        {"unit": "xunit", "n_seeds": 2, "diff_ci_low": -1.4, "diff_ci_high": -1.4},
        {"unit": "swish", "n_seeds": 2, "diff_ci_low": -3.0, "diff_ci_high": 1.0},
    ]
    text = precision_section(rows)
    assert "1 paired difference(s) with 2 seeds" in text and "narrowest ±2.00" in text
    assert "Left out: 1 difference(s) that are the same on every seed" in text
    assert "Left out" not in precision_section(rows[1:])

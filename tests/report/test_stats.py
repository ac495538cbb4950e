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


def test_seeds_for_half_width_is_the_fewest_seeds_whose_interval_is_narrow_enough():
    from attnact.report.stats import seeds_for_half_width

    # sd 1, target ±1: t(5)/√6 = 2.5706/2.449 = 1.049 misses, t(6)/√7 = 2.4469/2.646 = 0.925 meets
    assert seeds_for_half_width(1.0, 1.0) == 7
    # the pilot's AReLU − ReLU at SGD 1e-5 (sd 3.2, target ±2): t(11)·3.2/√12 = 2.033 misses,
    # t(12)·3.2/√13 = 1.934 meets (benchmarks/standard-preset-pilot.md: "about 13 seeds")
    assert seeds_for_half_width(3.2, 2.0) == 13
    assert seeds_for_half_width(0.0, 2.0) == 2
    assert seeds_for_half_width(1e6, 1.0, limit=50) == 50
    with pytest.raises(ValueError, match="half_width must be positive"):
        seeds_for_half_width(1.0, 0.0)
    with pytest.raises(ValueError, match="std must be a non-negative number"):
        seeds_for_half_width(float("nan"), 1.0)


def test_precision_section_prices_the_differences_that_miss_the_design_target():
    from attnact.experiments.reporting import DesignTarget, precision_section

    t5 = 2.570581836  # t_{0.975, 5}
    rows = [  # 6 seeds each: half-widths ±1.0 (within ±2) and ±4.0 (sd 4·√6/t5 = 3.81)
        {"act": "selu", "lr": "1e-4", "n_seeds": 6, "diff_ci_low": -1.0, "diff_ci_high": 1.0},
        {"act": "slaf", "lr": "1e-4", "n_seeds": 6, "diff_ci_low": 1.0, "diff_ci_high": 9.0},
    ]
    text = precision_section(rows, DesignTarget(2.0, lambda row: 36.0))
    assert "**Against the design target ±2:** 1 of 2 paired differences are within it." in text
    sd = 4.0 * math.sqrt(6) / t5
    assert f"a per-seed spread (sd of the paired Δ) of {sd:.2f} points" in text
    # t(n−1)·3.81/√n ≤ 2 first holds at n = 17 (t(16) = 2.1199: 1.961; t(15) = 2.1314: 2.031)
    assert "| slaf | 1e-4 | 6 | 3.81 | ±4.00 | 17 |" in text
    assert "at least 11 more runs" in text and "about 0.1 core-hours" in text  # 11 × 36 s
    assert "Against" not in precision_section(rows)  # no target, no verdict on it

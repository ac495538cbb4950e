"""CLAIMS.md: the verdict rule on known numbers, the generator on a small reports tree, the
catalogue against the registered experiments, and the committed file against the committed
reports."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from attnact.cli import main
from attnact.experiments import claims as cl
from attnact.experiments.registry import get_experiment, list_experiments

REPO = Path(__file__).resolve().parents[2]
REPORTS = REPO / "reports"

# Student-t quantiles t_{0.975, df} from printed tables (df = 1 and df = 4).
T1, T4 = 12.7062, 2.7764


# ------------------------------------------------------------------ the verdict rule
@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.1, 2.0, cl.SUPPORTED),
    (-2.0, -0.1, cl.CONTRADICTED),
    (-1.0, 1.0, cl.UNDETERMINED),
    (0.0, 1.0, cl.UNDETERMINED),  # touching zero is not beyond it
    (math.nan, math.nan, cl.UNDETERMINED),  # one seed: no interval
])
def test_verdict_of_one_interval(low: float, high: float, expected: str) -> None:
    assert cl.verdict(low, high) == expected


def _rows(values: dict[str, list[float]], **coords: str) -> list[dict[str, str]]:
    """results.csv rows: one per (unit, seed index)."""
    return [
        {"key": f"{u}-{s}", "status": "finished", **coords, "unit": u, "seed": str(s),
         "epochs": "3", "final_top1": str(v), "first_epoch_top1": "", "run_dir": ""}
        for u, vs in values.items() for s, v in enumerate(vs)
    ]


def test_two_seeds_paired_interval_from_the_t_table() -> None:
    # differences 1.0 and 1.4: mean 1.2, s = 0.2828, half-width t(1) s / sqrt(2) = 2.541
    rows = _rows({"atac": [90.0, 91.0], "relu": [89.0, 89.6]}, b="1")
    (e,) = cl.paired_effects(rows, cl.Comparison("unit", (("atac", "relu"),)))
    half = T1 * math.sqrt(0.08) / math.sqrt(2)
    assert e.diff.n == 2
    assert e.diff.mean == pytest.approx(1.2)
    assert e.diff.ci_low == pytest.approx(1.2 - half, abs=1e-3)
    assert e.diff.ci_high == pytest.approx(1.2 + half, abs=1e-3)
    assert e.verdict == cl.UNDETERMINED


def test_identical_differences_decide_nothing() -> None:
    # both seeds −1.40 (as xUnit − ATAC in the quick atac-activations report): a zero-width
    # t interval entirely below 0, which is no evidence of the seed-to-seed variance
    rows = _rows({"atac": [81.35, 82.75], "xunit": [82.75, 84.15]}, b="2")
    (e,) = cl.paired_effects(rows, cl.Comparison("unit", (("atac", "xunit"),)))
    assert e.diff.mean == pytest.approx(-1.4) and e.diff.half_width == pytest.approx(0, abs=1e-9)
    assert cl.verdict(e.diff.ci_low, e.diff.ci_high) == cl.CONTRADICTED  # the interval alone
    assert not e.diff.has_spread and e.verdict == cl.UNDETERMINED
    assert "no spread" in cl._effect_text(e, ())
    # the same mean with a little spread is a verdict again
    rows = _rows({"atac": [81.35, 82.70], "xunit": [82.75, 84.15]}, b="2")
    (e,) = cl.paired_effects(rows, cl.Comparison("unit", (("atac", "xunit"),)))
    assert e.diff.has_spread and e.verdict == cl.CONTRADICTED


def test_five_seeds_supported_and_reversed_contradicted() -> None:
    # differences 1.0, 1.2, 1.1, 0.9, 1.3: mean 1.1, s = 0.1581, half-width 0.1963
    atac = [90.0, 90.2, 90.1, 89.9, 90.3]
    rows = _rows({"atac": atac, "relu": [89.0] * 5}, b="1")
    (e,) = cl.paired_effects(rows, cl.Comparison("unit", (("atac", "relu"),)))
    assert (e.diff.ci_low, e.diff.ci_high) == pytest.approx(
        (1.1 - T4 * 0.158114 / math.sqrt(5), 1.1 + T4 * 0.158114 / math.sqrt(5)), abs=1e-3)
    assert e.verdict == cl.SUPPORTED
    (rev,) = cl.paired_effects(rows, cl.Comparison("unit", (("relu", "atac"),)))
    assert rev.verdict == cl.CONTRADICTED
    assert rev.diff.mean == pytest.approx(-1.1)


def test_pairing_uses_shared_seeds_and_splits_by_other_coordinates() -> None:
    rows = _rows({"atac": [90.0, 91.0, 92.0], "relu": [89.0, 90.0]}, b="1")
    rows += _rows({"atac": [80.0, 80.0], "relu": [81.0, 81.0]}, b="2")
    rows.append({**rows[0], "status": "failed", "final_top1": "0"})  # ignored by read_results
    finished = [r for r in rows if r["status"] == "finished"]
    effects = cl.paired_effects(finished, cl.Comparison("unit", (("atac", "relu"),)))
    by_b = {dict(e.at)["b"]: e for e in effects}
    assert by_b["1"].diff.n == 2 and by_b["1"].diff.mean == pytest.approx(1.0)
    assert by_b["2"].diff.mean == pytest.approx(-1.0)
    only_b2 = cl.paired_effects(
        finished, cl.Comparison("unit", (("atac", "relu"),), where={"b": ("2",)}))
    assert [dict(e.at)["b"] for e in only_b2] == ["2"]


def test_matches_the_committed_report_paired_differences() -> None:
    """The committed atac-ablation summary (written by the report code) has Δ to ReLU for
    every unit; the claims module recomputes them from results.csv on its own path."""
    rows = cl.read_results(REPORTS / "atac-ablation" / "quick" / "results.csv")
    with (REPORTS / "atac-ablation" / "quick" / "summary.csv").open() as f:
        summary = [r for r in csv.DictReader(f) if r["diff_mean"]]
    assert summary
    for s in summary:
        (e,) = cl.paired_effects(rows, cl.Comparison(
            "unit", ((s["unit"], "relu"),), where={"b": (s["b"],)}))
        assert e.diff.mean == pytest.approx(float(s["diff_mean"]), abs=1e-3)
        assert e.diff.ci_low == pytest.approx(float(s["diff_ci_low"]), abs=1e-3)
        assert e.diff.ci_high == pytest.approx(float(s["diff_ci_high"]), abs=1e-3)


@pytest.mark.parametrize(("verdicts", "rule", "expected"), [
    ([cl.SUPPORTED] * 3, "all", cl.SUPPORTED),
    ([cl.SUPPORTED, cl.SUPPORTED, cl.UNDETERMINED], "all", cl.UNDETERMINED),
    ([cl.SUPPORTED, cl.SUPPORTED, cl.CONTRADICTED], "all", cl.CONTRADICTED),
    ([cl.SUPPORTED, cl.SUPPORTED, cl.UNDETERMINED], "most", cl.SUPPORTED),
    ([cl.SUPPORTED, cl.UNDETERMINED, cl.UNDETERMINED, cl.UNDETERMINED], "most",
     cl.UNDETERMINED),
    ([cl.SUPPORTED, cl.CONTRADICTED], "most", cl.CONTRADICTED),
    ([], "all", cl.UNDETERMINED),
])
def test_combine(verdicts: list[str], rule: str, expected: str) -> None:
    assert cl.combine(verdicts, rule) == expected


def test_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rule"):
        cl.combine([], "any")
    with pytest.raises(ValueError, match="rule"):
        cl.Claim("X", "s", "t", "n", "atac-ablation", rule="some")
    with pytest.raises(ValueError, match="pair"):
        cl.Comparison("unit", ())
    with pytest.raises(ValueError, match="axis 'act' is not a column"):
        cl.paired_effects(_rows({"atac": [1.0]}), cl.Comparison("act", (("a", "b"),)))
    with pytest.raises(ValueError, match="reports must be an existing directory"):
        cl.write_claims(tmp_path / "missing")


# ------------------------------------------------------------------ the generator
def _write_report(root: Path, experiment: str, preset: str, rows: list[dict[str, str]],
                  provenance: bool) -> None:
    d = root / experiment / preset
    d.mkdir(parents=True)
    with (d / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    head = [f"# `{experiment}` ({preset} preset)", ""]
    if provenance:
        head += ["**Report written by:** attnact 9.9 (commit abc1234), torch 2.13.0.",
                 "**Provenance:** all 4 runs: attnact 9.9 (commit abc1234)."]
    (d / "table.md").write_text("\n".join(head) + "\n")


def test_generator_on_a_small_reports_tree(tmp_path: Path) -> None:
    quick = _rows({"atac": [90.0, 91.0], "relu": [89.0, 89.6]}, dataset="fashion_mnist", b="1")
    standard = _rows({"atac": [90.0, 90.2, 90.1, 89.9, 90.3], "relu": [89.0] * 5,
                      "se_activation": [60.0, 61.0, 59.0, 60.5, 60.2]},
                     dataset="fashion_mnist", b="1")
    _write_report(tmp_path, "atac-ablation", "quick", quick, provenance=False)
    _write_report(tmp_path, "atac-ablation", "standard", standard, provenance=True)
    replacement = [{**r, "sites": "0" if r["unit"] == "relu" else "3"} for r in quick]
    _write_report(tmp_path, "atac-replacement", "quick", replacement, provenance=False)
    catalogue = [c for c in cl.CLAIMS if c.id in ("C1", "C3", "C4", "C5")]
    text = cl.claims_markdown(tmp_path, catalogue)
    rows = {ln.split(" | ")[0]: ln for ln in text.splitlines() if ln.startswith("| **")}
    assert set(rows) == {"| **C1**", "| **C3**", "| **C4**", "| **C5**"}
    # the standard report wins over quick, and its numbers decide
    assert "`atac-ablation` (standard), fashion_mnist, 5 seeds" in rows["| **C3**"]
    assert "+1.10 [+0.90, +1.30]" in rows["| **C3**"]
    assert f"**{cl.SUPPORTED}**" in rows["| **C3**"]
    assert "[atac-ablation/standard](./atac-ablation/standard/table.md)" in rows["| **C3**"]
    assert f"**{cl.SUPPORTED}**" in rows["| **C1**"]
    assert "±0.20" in rows["| **C3**"]  # detectable effect: the half-width
    # no grid point of the comparison in the report / no report at all
    assert "none of the compared groups" in rows["| **C4**"]
    assert f"**{cl.NO_REPORT}**" in rows["| **C5**"]
    # provenance copied from the header, and its absence said
    assert "**Provenance:** all 4 runs: attnact 9.9 (commit abc1234)." in text
    assert "- No report yet: `atac-activations`." in text
    assert "atac-ablation/quick" not in text  # set aside for the standard report
    assert "[`atac-replacement/quick`](./atac-replacement/quick/table.md): no provenance" in text
    _write_report(tmp_path, "atac-activations", "quick",
                  _rows({"atac": [1.0, 2.0], "relu": [1.5, 2.5]}, b="1"), provenance=False)
    text = cl.claims_markdown(tmp_path, catalogue)
    assert "- No report yet" not in text
    assert "[atac-activations/quick](./atac-activations/quick/table.md)" in text
    # deterministic: the same tree gives the same file
    assert cl.claims_markdown(tmp_path, catalogue) == text


def test_command_line_writes_claims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_report(tmp_path, "atac-ablation", "quick",
                  _rows({"atac": [90.0, 91.0], "relu": [89.0, 89.6]}, b="1"), provenance=True)
    assert main(["reproduce", "--claims", "--out", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = (tmp_path / "CLAIMS.md").read_text()
    assert text == cl.claims_markdown(tmp_path)
    assert main(["reproduce", "atac-ablation", "--claims", "--out", str(tmp_path)]) == 2
    assert cl.main([str(tmp_path)]) == 0


# ------------------------------------------------------------------ the catalogue
def test_catalogue_names_registered_experiments_and_their_groups() -> None:
    ids = [c.id for c in cl.CLAIMS]
    assert ids == [*(f"C{i}" for i in range(1, 8)), *(f"A{i}" for i in range(1, 8))]
    names = set(list_experiments())
    for c in cl.CLAIMS:
        assert c.experiment in names, c.id
        if c.comparison is None:
            continue
        specs = get_experiment(c.experiment).grid("quick", 1)
        axis = c.comparison.axis
        values = {str(s.coords[axis]) for s in specs if axis in s.coords}
        for t, k in c.comparison.pairs:
            assert {t, k} <= values, (c.id, t, k, sorted(values))


# ------------------------------------------------------------------ the committed file
def test_committed_claims_are_up_to_date_with_the_committed_reports() -> None:
    committed = (REPORTS / "CLAIMS.md").read_text()
    assert committed == cl.claims_markdown(REPORTS), (
        "reports/CLAIMS.md is out of date with the reports: run `attnact reproduce --claims`")


def test_preferred_evidence_must_measure_what_the_claim_measures():
    own = cl.Comparison("unit", (("atac", "relu"),))
    other = cl.Comparison("unit", (("atac", "relu"),), metric="first_epoch_top1")
    with pytest.raises(ValueError, match="same metric"):
        cl.Claim("X1", "a paper", "a statement", "a number", "atac-ablation", own,
              prefer=(("atac-budget", other),))

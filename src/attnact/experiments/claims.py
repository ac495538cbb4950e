"""The papers' central claims and what the stored reports say about them: ``reports/CLAIMS.md``.

Each claim (C1-C7 from Dai et al., "Attention as Activation"; A1-A7 from Chen et al., "AReLU")
names the experiment whose report is its evidence and the comparisons that decide it: paired
differences ``treatment − control`` of one metric over the seed indices both groups share, read
from the report's ``results.csv`` (every run once). Every comparison is oriented so that the
paper says it is positive. The verdict of one comparison:

* supported — its 95% Student-t interval lies entirely above zero;
* contradicted — entirely below zero;
* not determined at this budget — the interval contains zero, or there are fewer than 2 seeds,
  or every seed gives the same difference (no spread: a zero-width interval that says nothing
  about the seed-to-seed variance; two seeds give it easily, accuracies being multiples of one
  test image).

A claim over several comparisons ("ATAC above every other unit") is supported when all are
supported and contradicted when any is contradicted (rule ``all``); a claim "for most cases"
is supported when more than half are supported and contradicted when at least half are
contradicted (rule ``most``). The intervals are per comparison, not corrected for the number of
comparisons. The detectable effect is the interval's half-width: a true difference much smaller
than it cannot be told from zero with this design.

The ``standard`` report of an experiment is used when it exists, else ``quick``; a claim may
prefer another experiment's report at the same preset (C3: the budget curve's longest training
before the ablation's). CLAIMS.md says which report it used, and copies each report's
provenance lines (or says that the report has none).

Run ``attnact reproduce --claims`` (or ``python -m attnact.experiments.claims [REPORTS]``).
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attnact.report.stats import Summary, paired_difference

__all__ = [
    "CLAIMS",
    "PRESET_PREFERENCE",
    "Claim",
    "Comparison",
    "Effect",
    "claims_markdown",
    "combine",
    "evaluate",
    "verdict",
    "write_claims",
]

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
UNDETERMINED = "not determined at this budget"
NO_REPORT = "not determined: no report yet"
NOT_NUMERIC = "not decided by a number here"

#: Presets in the order their reports are preferred as evidence.
PRESET_PREFERENCE = ("standard", "quick")

# Columns of results.csv that are outcomes or bookkeeping, not coordinates of a grid point.
_NOT_COORDINATES = frozenset({
    "key", "status", "seed", "final_top1", "first_epoch_top1", "best_top1", "final_test_loss",
    "params", "wall_time_s", "detail", "run_dir",
})


@dataclass(frozen=True)
class Comparison:
    """Paired differences ``treatment − control`` along ``axis`` (a results.csv column), one per
    combination of the other coordinates found in both groups.

    ``where`` keeps only rows whose column takes one of the listed values; ``ignore`` names
    columns that change together with ``axis`` (atac-replacement's ``unit`` with ``sites``) and
    so must not split the pairing.
    """

    axis: str
    pairs: tuple[tuple[str, str], ...]
    metric: str = "final_top1"
    where: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ignore: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.pairs:
            raise ValueError("Comparison needs at least one (treatment, control) pair")


@dataclass(frozen=True)
class Claim:
    """One statement of a paper, its number, and the comparison that tests it here."""

    id: str
    source: str  # the paper and where in it
    statement: str
    number: str  # the paper's figures for it
    experiment: str
    comparison: Comparison | None = None
    rule: str = "all"
    note: str = ""  # what the evidence does not cover, or why no number decides it
    # (experiment, comparison) tried before ``experiment`` at each preset: better evidence of
    # the same claim where its report exists (C3: the budget curve's longest training)
    prefer: tuple[tuple[str, Comparison], ...] = ()

    def __post_init__(self) -> None:
        if self.rule not in ("all", "most"):
            raise ValueError(f"Claim.rule must be 'all' or 'most', got {self.rule!r}")
        for experiment, comparison in self.prefer:
            if self.comparison is None or comparison.metric != self.comparison.metric:
                raise ValueError(f"claim {self.id}: the evidence preferred from {experiment} "
                                 "must compare the same metric as the claim's own")


@dataclass(frozen=True)
class Effect:
    """One paired comparison at one grid point."""

    treatment: str
    control: str
    at: tuple[tuple[str, str], ...]  # the other coordinates
    diff: Summary
    axis: str = "unit"

    @property
    def verdict(self) -> str:
        if not self.diff.has_spread:  # the same Δ on every seed: no evidence
            return UNDETERMINED
        return verdict(self.diff.ci_low, self.diff.ci_high)

    def label(self, shown: Sequence[str]) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.at if k in shown)
        # units and activations are named by themselves; other axes by "axis=value"
        t, c = ((self.treatment, self.control) if self.axis in ("unit", "act")
                else (f"{self.axis}={self.treatment}", f"{self.axis}={self.control}"))
        return f"{t} − {c}" + (f" ({where})" if where else "")


def verdict(ci_low: float, ci_high: float) -> str:
    """The verdict of one comparison the paper says is positive, from its 95% interval."""
    if math.isnan(ci_low) or math.isnan(ci_high):
        return UNDETERMINED
    if ci_low > 0:
        return SUPPORTED
    if ci_high < 0:
        return CONTRADICTED
    return UNDETERMINED


def combine(verdicts: Sequence[str], rule: str = "all") -> str:
    """A claim's verdict from its comparisons' (see the module docstring for the rules)."""
    if rule not in ("all", "most"):
        raise ValueError(f"rule must be 'all' or 'most', got {rule!r}")
    if not verdicts:
        return UNDETERMINED
    n = len(verdicts)
    n_sup, n_con = verdicts.count(SUPPORTED), verdicts.count(CONTRADICTED)
    if rule == "all":
        if n_con:
            return CONTRADICTED
        return SUPPORTED if n_sup == n else UNDETERMINED
    if 2 * n_sup > n:
        return SUPPORTED
    if 2 * n_con >= n:
        return CONTRADICTED
    return UNDETERMINED


def read_results(path: Path) -> list[dict[str, str]]:
    """The finished runs of a report's results.csv."""
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if row.get("status") == "finished"]


def paired_effects(rows: Sequence[Mapping[str, str]], comparison: Comparison) -> list[Effect]:
    """Every paired comparison ``comparison`` defines on ``rows`` (grid points in file order)."""
    if rows and comparison.axis not in rows[0]:
        raise ValueError(
            f"comparison axis {comparison.axis!r} is not a column of results.csv "
            f"(columns: {', '.join(rows[0])})"
        )
    kept = [r for r in rows if all(r.get(k) in v for k, v in comparison.where.items())]
    skip = _NOT_COORDINATES | {comparison.axis, *comparison.ignore}
    # value of the metric by (axis value, other coordinates) and seed index
    table: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, float]] = {}
    order: list[tuple[tuple[str, str], ...]] = []
    for r in kept:
        at = tuple((k, v) for k, v in r.items() if k not in skip)
        if at not in order:
            order.append(at)
        value = r.get(comparison.metric, "")
        if value not in ("", None):
            table.setdefault((r[comparison.axis], at), {})[r["seed"]] = float(value)
    effects = []
    for treatment, control in comparison.pairs:
        for at in order:
            t, c = table.get((treatment, at)), table.get((control, at))
            if not t or not c:
                continue
            seeds = sorted(set(t) & set(c), key=int)
            if seeds:
                diff = paired_difference([t[s] for s in seeds], [c[s] for s in seeds])
                effects.append(Effect(treatment, control, at, diff, comparison.axis))
    return effects


@dataclass(frozen=True)
class Finding:
    """A claim with its evidence: the report used and the effects found in it."""

    claim: Claim
    preset: str | None  # None: no report of the experiment
    effects: tuple[Effect, ...]
    datasets: tuple[str, ...]
    experiment: str  # the report used (or missing): the claim's experiment or one it prefers

    @property
    def verdict(self) -> str:
        if self.claim.comparison is None:
            return NOT_NUMERIC
        if self.preset is None or not self.effects:
            return NO_REPORT
        return combine([e.verdict for e in self.effects], self.claim.rule)

    @property
    def decisive(self) -> Effect | None:
        """The effect that decides the verdict: the clearest contradiction if there is one,
        else the weakest support (lowest interval end)."""
        if not self.effects:
            return None
        against = [e for e in self.effects if e.verdict == CONTRADICTED]
        if against and self.verdict == CONTRADICTED:
            return min(against, key=lambda e: e.diff.ci_high)
        return min(self.effects, key=lambda e: e.diff.ci_low)

    @property
    def varying(self) -> list[str]:
        """The coordinates that differ between the effects (the ones worth naming)."""
        keys: dict[str, set[str]] = {}
        for e in self.effects:
            for k, v in e.at:
                keys.setdefault(k, set()).add(v)
        return [k for k, vs in keys.items() if len(vs) > 1]


def evidence(claim: Claim, reports: Path) -> tuple[str, str, Path, Comparison | None] | None:
    """The report that is ``claim``'s evidence, as (experiment, preset, directory, comparison):
    presets in :data:`PRESET_PREFERENCE` order, and at each the claim's preferred experiments
    before its own."""
    options = [*claim.prefer, (claim.experiment, claim.comparison)]
    for preset in PRESET_PREFERENCE:
        for experiment, comparison in options:
            d = reports / experiment / preset
            if (d / "results.csv").is_file():
                return experiment, preset, d, comparison
    return None


def evaluate(claim: Claim, reports: Path) -> Finding:
    """The evidence for ``claim`` in the reports tree ``reports``."""
    found = evidence(claim, reports)
    if found is None:
        return Finding(claim, None, (), (), claim.experiment)
    experiment, preset, d, comparison = found
    rows = read_results(d / "results.csv")
    datasets = tuple(sorted({r.get("dataset") or r.get("transfer") or "?" for r in rows}))
    effects = () if comparison is None else tuple(paired_effects(rows, comparison))
    return Finding(claim, preset, effects, datasets, experiment)


def _num(x: float) -> str:
    return f"{x:+.2f}"


def _effect_text(e: Effect, shown: Sequence[str]) -> str:
    d = e.diff
    if d.n < 2:
        return f"{e.label(shown)}: {_num(d.mean)} (1 seed, no interval)"
    if not e.diff.has_spread:
        return f"{e.label(shown)}: {_num(d.mean)} (the same on all {d.n} seeds: no spread)"
    return f"{e.label(shown)}: {_num(d.mean)} [{_num(d.ci_low)}, {_num(d.ci_high)}]"


def _evidence_cell(f: Finding) -> str:
    c = f.claim
    if f.preset is None:
        return f"`{c.experiment}`: no committed report."
    seeds = sorted({e.diff.n for e in f.effects})
    head = (f"`{f.experiment}` ({f.preset}), {', '.join(f.datasets)}, "
            f"{'/'.join(map(str, seeds)) or '–'} seeds")
    if c.comparison is None:
        return head.rsplit(",", 1)[0] + "."
    if not f.effects:
        return head + ": none of the compared groups are in the report."
    metric = "first-epoch top-1" if c.comparison.metric == "first_epoch_top1" else "top-1"
    dec = f.decisive
    assert dec is not None
    n = len(f.effects)
    if n == 1:
        body = f"Δ {metric} (points) {_effect_text(dec, [])}"
    else:
        vs = [e.verdict for e in f.effects]
        body = (f"{n} paired Δ {metric} (points): {vs.count(SUPPORTED)} supported, "
                f"{vs.count(CONTRADICTED)} contradicted, {vs.count(UNDETERMINED)} open; "
                f"{'clearest contradiction' if f.verdict == CONTRADICTED else 'weakest'}: "
                f"{_effect_text(dec, f.varying)}")
    return f"{head}. {body}"


def _detectable_cell(f: Finding) -> str:
    hw = [e.diff.half_width for e in f.effects if e.diff.has_spread]
    if not hw:
        return "–"
    lo, hi = min(hw), max(hw)
    return f"±{lo:.2f}" if math.isclose(lo, hi, abs_tol=0.005) else f"±{lo:.2f} … ±{hi:.2f}"


def _link(f: Finding) -> str:
    if f.preset is None:
        return "–"
    return f"[{f.experiment}/{f.preset}](./{f.experiment}/{f.preset}/table.md)"


def _provenance(reports: Path, experiment: str, preset: str) -> list[str]:
    """The provenance lines of a report's header, as its table.md states them."""
    table = reports / experiment / preset / "table.md"
    if not table.is_file():
        return ["no table.md"]
    lines = [ln.strip() for ln in table.read_text().splitlines()
             if ln.startswith(("**Report written by", "**Provenance"))]
    return lines or ["no provenance recorded: this report predates run provenance "
                     "(regenerate it to know which code made its runs)."]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claims_markdown(reports: Path, claims: Sequence[Claim] | None = None) -> str:
    """CLAIMS.md for the reports tree ``reports`` (deterministic: no dates, no machine)."""
    claims = CLAIMS if claims is None else claims
    findings = [evaluate(c, reports) for c in claims]
    lines = [
        "# The papers' claims and what the reports here say",
        "",
        "Generated by `attnact reproduce --claims` from the committed reports under `reports/` "
        "(each report's `results.csv`); do not edit by hand — a test fails when this file is "
        "out of date with them.",
        "",
        "**How to read it.** Every claim is tested as paired differences Δ = (the unit the "
        "paper favours) − (the other), in accuracy points, over the seed indices both share "
        "(same data order), with a Student-t 95% interval. Verdict of one Δ: *supported* when "
        "its interval lies above 0, *contradicted* when below, *not determined at this budget* "
        "when it contains 0 or when every seed gives the same Δ (no spread, so no interval). "
        "A claim over several Δ is supported when all are (\"for most "
        "cases\": more than half) and contradicted when any is (\"most\": at least half); "
        "intervals are not corrected for the number of Δ. *Detectable* is the interval's "
        "half-width: smaller true effects cannot be told from 0 at this budget. The `standard` "
        "report of an experiment is used when it exists, else `quick`; quick reports run on "
        "Fashion-MNIST with a CPU-sized budget, not the papers' data, so a verdict here is "
        "about this setting, not a replication.",
        "",
        "| claim | the paper says | our evidence: Δ [95% CI] | detectable | verdict | report |",
        "|---|---|---|---|---|---|",
    ]
    for f in findings:
        c = f.claim
        said = f"{c.source}: {c.statement} ({c.number})"
        ours = _evidence_cell(f) + (f" {c.note}" if c.note else "")
        lines.append("| " + " | ".join(_cell(x) for x in (
            f"**{c.id}**", said, ours, _detectable_cell(f), f"**{f.verdict}**", _link(f),
        )) + " |")
    lines += ["", "## Reports used and their provenance", ""]
    used = sorted({(f.experiment, f.preset) for f in findings if f.preset is not None})
    for experiment, preset in used:
        assert preset is not None
        lines.append(f"- [`{experiment}/{preset}`](./{experiment}/{preset}/table.md): "
                     + " ".join(_provenance(reports, experiment, preset)))
    missing = sorted({f.claim.experiment for f in findings if f.preset is None})
    if missing:
        lines.append("- No report yet: " + ", ".join(f"`{m}`" for m in missing) + ".")
    lines += ["", "## Every comparison", ""]
    for f in findings:
        if not f.effects:
            continue
        lines.append(f"**{f.claim.id}** (`{f.experiment}`, {f.preset}; "
                     f"{f.claim.comparison.metric if f.claim.comparison else ''}):")
        lines.append("")
        shown = f.varying
        for e in f.effects:
            lines.append(f"- {_effect_text(e, shown)}, {e.diff.n} seeds — {e.verdict}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_claims(reports: Path | str = "reports", out: Path | str | None = None) -> Path:
    """Write CLAIMS.md (default ``<reports>/CLAIMS.md``) and return its path."""
    reports = Path(reports)
    if not reports.is_dir():
        raise ValueError(f"reports must be an existing directory of reports, got {str(reports)!r}")
    path = Path(out) if out is not None else reports / "CLAIMS.md"
    text = claims_markdown(reports)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- the catalogue
_B = {"b": ("1", "2", "3", "4", "5")}  # every depth a report has (the paper: all of them)
# atac-budget's longest training length per CPU preset (atac.BUDGET_EPOCHS; a test checks)
_LONGEST_BUDGET = ("6", "12")
_SMALL_LR = {"lr": ("1e-4", "1e-5")}
_AREL_OTHERS = ("sigmoid", "tanh", "relu", "relu6", "leaky_relu", "rrelu", "elu", "celu",
                "selu", "gelu", "softplus", "swish", "maxout", "prelu", "apl", "pau", "slaf",
                "mixture")


def _vs(treatment: str, controls: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return tuple((treatment, c) for c in controls)


_ATAC = "Dai et al., ATAC"
_ARELU = "Chen et al., AReLU"

CLAIMS: tuple[Claim, ...] = (
    Claim("C1", f"{_ATAC}, Table III (Q1)",
          "SEActivation (global context) is significantly worse than ATAC: locality is of "
          "vital importance",
          "CIFAR-10 b=1: 54.8 vs 90.6; CIFAR-100 b=1: 38.8 vs 76.4",
          "atac-ablation", Comparison("unit", _vs("atac", ["se_activation"]), where=_B)),
    Claim("C2", f"{_ATAC}, Table III (Q2)",
          "at the same budget ATAC beats going deeper (NiN) and block-wise refinement "
          "(LocalSENet)",
          "CIFAR-10 b=1: ATAC 90.6, LocalSENet 90.6, NiN 89.3; CIFAR-100 b=1: 76.4, 76.2, 74.3",
          "atac-ablation", Comparison("unit", _vs("atac", ["nin", "localse"]), where=_B)),
    Claim("C3", f"{_ATAC}, Table III",
          "ATAC (every ReLU replaced) is more accurate than the ReLU network",
          "CIFAR-10 b=1: 90.6 vs 89.5; CIFAR-100 b=1: 76.4 vs 73.7",
          "atac-ablation", Comparison("unit", _vs("atac", ["relu"]), where=_B),
          prefer=(("atac-budget", Comparison("unit", _vs("atac", ["relu"]),
                                             where={"b": ("1",),
                                                    "train_epochs": _LONGEST_BUDGET})),),
          note="Where `atac-budget` has a report, its longest training is the evidence (the "
               "paper's claim is about trained networks); the curve over three lengths, which "
               "says whether ATAC's deficit at short budgets closes, is in that report."),
    Claim("C4", f"{_ATAC}, Fig. 6 (Q3)",
          "performance tends to increase as more ReLUs are replaced by ATAC, up to a fully "
          "attentional network",
          "figure only",
          "atac-replacement",
          Comparison("sites", (("7", "0"),), ignore=("unit", "fraction", "of")),
          note="Tested as all sites ATAC vs none; the monotone trend is in the report's curve."),
    Claim("C5", f"{_ATAC}, Fig. 7 (Q4)",
          "ATAC beats ReLU, SELU, Swish, xUnit (and GELU, PReLU, footnote 2) in every setting",
          "figure only",
          "atac-activations",
          Comparison("unit", _vs("atac", ["relu", "selu", "swish", "xunit", "gelu", "prelu"]),
                     where=_B)),
    Claim("C6", f"{_ATAC}, Fig. 8",
          "ATAC-ResNet beats ResNet, SE-ResNet and GE-ResNet for all settings",
          "figure only",
          "atac-networks",
          Comparison("unit", _vs("atac", ["relu", "se_resnet", "ge_resnet"]), where=_B)),
    Claim("C7", f"{_ATAC}, Table IV",
          "ATAC-ResNet-50 has the best ImageNet top-1 error with fewer parameters than "
          "SE-ResNet-50 and GE-θ⁺-ResNet-50",
          "top-1 err. 21.41 vs ResNet-50 23.30; 28.0M params, 4.4 GFlops",
          "atac-imagenet",
          note="ImageNet training is out of reach here; the report can count parameters "
               "and MACs only."),
    Claim("A1", f"{_ARELU}, Table 1",
          "AReLU converges fastest (first-epoch accuracy) at the small learning rates 1e-4 "
          "and 1e-5, SGD and Adam, against all 18 other activations",
          "Table 1; its numbers are not in the copy of the paper here",
          "arelu-convergence",
          Comparison("act", _vs("arelu", _AREL_OTHERS), metric="first_epoch_top1",
                     where=_SMALL_LR)),
    Claim("A2", f"{_ARELU}, Table 4",
          "ELSA plugged into an activation improves its first-epoch accuracy in most cases",
          "Table 4; its numbers are not in the copy of the paper here",
          "elsa",
          Comparison("act", tuple((f"elsa_{a}", a) for a in _AREL_OTHERS),
                     metric="first_epoch_top1"),
          rule="most"),
    Claim("A3", f"{_ARELU}, Fig. 2(a)",
          "AReLU is insensitive to its initialisation; a larger initial β speeds up "
          "convergence",
          "figure only",
          "arelu-init",
          Comparison("beta", (("4.0", "0.5"),), metric="first_epoch_top1"),
          note="Tested: first-epoch accuracy with β₀ = 4 vs β₀ = 0.5 at every α₀."),
    Claim("A4", f"{_ARELU}, Fig. 4",
          "AReLU converges faster than ReLU, LReLU, PReLU, SELU and PAU on all five "
          "architectures",
          "figure only",
          "arelu-cifar100",
          Comparison("act", _vs("arelu", ["relu", "leaky_relu", "prelu", "selu", "pau"]),
                     metric="first_epoch_top1")),
    Claim("A5", f"{_ARELU}, Table 2",
          "with pretraining and fine-tuning at lr 1e-5, AReLU beats every other activation",
          "Table 2; its numbers are not in the copy of the paper here",
          "arelu-transfer",
          Comparison("act", _vs("arelu", ["relu", "leaky_relu", "elu", "selu", "gelu",
                                          "prelu", "pau"])),
          note="Tested: accuracy after the longest fine-tuning (results.csv final top-1)."),
    Claim("A6", f"{_ARELU}, Table 3",
          "in MAML meta-learning AReLU has a clear advantage over the other activations",
          "Table 3; its numbers are not in the copy of the paper here",
          "arelu-meta",
          Comparison("act", _vs("arelu", ["relu", "leaky_relu", "selu", "prelu", "pau"]))),
    Claim("A7", f"{_ARELU}, Fig. 5",
          "Grad-CAM of AReLU's first-layer features highlights semantically more meaningful "
          "regions than ReLU's",
          "qualitative figure",
          "gradcam",
          note="Qualitative: read the report's heat maps."),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1:
        print("usage: python -m attnact.experiments.claims [REPORTS_DIR]", file=sys.stderr)
        return 2
    path = write_claims(args[0] if args else "reports")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The ``standard`` preset (issue #11): the conclusive CPU design for the central claims. Its
grids are checked against the design (benchmarks/standard-preset-pilot.md), its runs are
shared between experiments, and the budget curve's report is checked by hand on fabricated
runs."""

from __future__ import annotations

import csv
import json

import pytest

from attnact.experiments import RunStore, get_experiment, reproduce
from attnact.experiments.arelu_mnist import ACTIVATIONS, SMALL_LRS, lr_text
from attnact.experiments.atac import BUDGET_EPOCHS
from attnact.experiments.claims import claims_markdown

STANDARD = ("atac-ablation", "atac-activations", "atac-budget", "arelu-convergence", "elsa")


def quiet(_msg: str) -> None:
    pass


def test_only_the_central_claims_have_a_standard_preset():
    from attnact.experiments import list_experiments

    have = {n for n in list_experiments() if "standard" in get_experiment(n).presets}
    assert have == set(STANDARD)
    with pytest.raises(ValueError, match="has no preset 'standard'"):
        get_experiment("atac-replacement").grid("standard", 1)


@pytest.mark.parametrize("name", ["atac-ablation", "atac-activations"])
def test_atac_standard_grid_is_b1_on_ten_thousand_images_for_twelve_epochs(name):
    exp = get_experiment(name)
    seeds = exp.default_seeds["standard"]
    assert seeds >= 5  # the floor
    specs = exp.grid("standard", seeds)
    assert len(specs) == len(exp.units) * seeds
    for s in specs:
        c = s.config
        assert s.coords["b"] == 1 and c.model_kwargs["blocks"] == 1
        assert (c.dataset, c.pad_to, c.limit_train, c.limit_test, c.epochs) == (
            "fashion_mnist", 32, 10_000, None, 12)
        assert c.channels_last and c.schedule == "cosine" and c.optimizer == "nag"
        assert s.key == f"fashion_mnist-b1-{s.coords['unit']}-e12-seed{s.coords['seed']}"


def test_standard_runs_are_shared_between_ablation_activations_and_the_budget_curve():
    ablation = {s.key: s.config for s in get_experiment("atac-ablation").grid("standard", 6)}
    activations = {s.key: s.config for s in get_experiment("atac-activations").grid("standard",
                                                                                     6)}
    budget = {s.key: s for s in get_experiment("atac-budget").grid("standard", 6)}
    shared = set(ablation) & set(activations)
    assert {k.split("-")[2] for k in shared} == {"relu", "atac"} and len(shared) == 12
    longest = {k for k, s in budget.items() if s.coords["train_epochs"] == 12}
    assert longest == shared
    for k in longest:  # the same run: same key and the same config
        assert budget[k].config == ablation[k]
    lengths = sorted({s.coords["train_epochs"] for s in budget.values()})
    assert lengths == list(BUDGET_EPOCHS["standard"]) and len(lengths) >= 3
    for s in budget.values():  # every standard key names its length
        assert s.config.epochs == s.coords["train_epochs"]
        assert f"-e{s.coords['train_epochs']}-" in s.key


def test_budget_curve_paper_lengths_scale_the_lr_steps():
    specs = get_experiment("atac-budget").grid("paper", 1)
    by = {(s.coords["dataset"], s.coords["train_epochs"]): s.config for s in specs}
    assert by[("cifar10", 400)].milestones == [300, 350]  # the paper's own schedule
    assert by[("cifar100", 100)].milestones == [75, 88]


def test_arelu_standard_is_the_whole_training_set_at_the_small_learning_rates():
    conv = get_experiment("arelu-convergence")
    specs = conv.grid("standard", conv.default_seeds["standard"])
    assert len(specs) == 19 * 2 * 2 * conv.default_seeds["standard"]
    assert {s.coords["lr"] for s in specs} == {lr_text(x) for x in SMALL_LRS}
    assert {s.coords["act"] for s in specs} == set(ACTIVATIONS)
    for s in specs:  # channels_last: faster, the same numbers to rounding
        c = s.config
        assert (c.model, c.dataset, c.limit_train, c.limit_test, c.epochs, c.batch_size) == (
            "mnist_conv", "fashion_mnist", None, None, 1, 128)
        assert c.channels_last
    elsa = {s.key: s.config for s in get_experiment("elsa").grid("standard", 5)}
    shared = {s.key for s in specs} & set(elsa)
    assert len(shared) == 18 * 4 * 5  # every plain run of Table 4 is a Table 1 run
    assert all(elsa[k] == next(s.config for s in specs if s.key == k) for k in list(shared)[:5])


def _fake(store: RunStore, spec, top1: float) -> None:
    run_dir = store.prepare(spec)
    spec.config.replace(out_dir=str(run_dir)).to_yaml(run_dir / "config.yaml")
    (run_dir / "metrics.csv").write_text(
        "epoch,test_top1,test_top5,test_loss,epoch_time_s\n" f"1,{top1},99.0,0.5,3.0\n")
    (run_dir / "summary.json").write_text(
        json.dumps({"status": "finished", "params": 1, "wall_time_s": 6.0}))


def _report_with_atac_wobble(tmp_path, experiment: str, wobble: list[float]) -> str:
    """table.md of the standard ``experiment`` on fabricated runs, one seed per ``wobble``
    entry: every unit scores 85 + seed, ATAC that plus ``wobble[seed]``."""
    store = RunStore(tmp_path / "runs")
    for spec in get_experiment(experiment).grid("standard", len(wobble)):
        c = spec.coords
        _fake(store, spec, 85.0 + c["seed"] + (wobble[c["seed"]] if c["unit"] == "atac" else 0))
    result = reproduce(experiment, preset="standard", seeds=len(wobble), runs=tmp_path / "runs",
                       out=tmp_path / "rep", report_only=True, log=quiet)
    return result.files["table.md"].read_text()


def test_budget_report_and_claims_read_each_length_as_its_own_difference(tmp_path):
    """ATAC − ReLU fabricated as −1 at 1 epoch, +0.5 at 4 and +1 at 12 (plus seed noise common
    to both units): the report's paired differences are exactly those, and CLAIMS.md reads the
    budget curve's longest length, or else the standard report of atac-ablation (the same
    12-epoch runs), before the quick one."""
    exp = get_experiment("atac-budget")
    store = RunStore(tmp_path / "runs")
    gap = {1: -1.0, 4: 0.5, 12: 1.0}
    for spec in exp.design("standard", 3):  # with the top-up's seeds
        c = spec.coords
        atac_gap = gap[c["train_epochs"]] if c["unit"] == "atac" else 0.0
        _fake(store, spec, 85.0 + c["seed"] + atac_gap)
    reports = tmp_path / "reports"
    result = reproduce("atac-budget", preset="standard", seeds=3, runs=tmp_path / "runs",
                       out=reports / "atac-budget" / "standard", report_only=True, log=quiet)
    assert result.ok
    md = result.files["table.md"].read_text()
    assert "-1.00 [-1.00, -1.00]" in md and "+0.50 [0.50, 0.50]" in md
    assert "+1.00 [1.00, 1.00]" in md
    rows = list(csv.DictReader(result.files["results.csv"].open()))
    assert sorted({int(r["train_epochs"]) for r in rows}) == [1, 4, 12]
    # the ablation's standard report is made of the same store's b = 1 runs at 12 epochs
    ablation = get_experiment("atac-ablation")
    for spec in ablation.grid("standard", 3):
        if spec.coords["unit"] not in ("relu", "atac"):
            _fake(store, spec, 80.0 + spec.coords["seed"])
    done = reproduce("atac-ablation", preset="standard", seeds=3, runs=tmp_path / "runs",
                     out=reports / "atac-ablation" / "standard", report_only=True, log=quiet)
    assert done.ok
    # C3 prefers the budget curve's longest training (12 epochs: +1) to the ablation
    text = claims_markdown(reports)
    c3 = next(line for line in text.splitlines() if line.startswith("| **C3**"))
    # (the fabricated Δ is the same on every seed: CLAIMS.md says so and decides nothing)
    assert "`atac-budget` (standard)" in c3 and "+1.00 (the same on all 3 seeds" in c3
    assert "**not determined at this budget**" in c3
    assert "[atac-budget/standard](./atac-budget/standard/table.md)" in c3
    # without a budget report it is the ablation's standard report: the same 12-epoch runs
    (reports / "atac-budget" / "standard" / "results.csv").unlink()
    c3 = next(line for line in claims_markdown(reports).splitlines()
              if line.startswith("| **C3**"))
    assert "`atac-ablation` (standard)" in c3 and "+1.00 (the same on all 3 seeds" in c3


def test_c3_prefers_the_longest_budget_of_each_cpu_preset():
    from attnact.experiments.claims import CLAIMS

    c3 = next(c for c in CLAIMS if c.id == "C3")
    (experiment, comparison), = c3.prefer
    assert experiment == "atac-budget"
    assert comparison.where["train_epochs"] == tuple(
        str(max(BUDGET_EPOCHS[p])) for p in ("quick", "standard"))
    assert comparison.where["b"] == ("1",)


def test_standard_reports_state_the_design_target_and_the_achieved_widths(tmp_path):
    """ATAC − ReLU per seed fabricated as +0.2, +0.9, −0.1, +0.6 at every length: the report
    names the ±0.5 target and gives the Student-t half-width t₀.₉₇₅(3) · sd / √4 of those
    differences (scipy's, not the report's own statistics) as what the design detects."""
    from scipy import stats

    deltas = [0.2, 0.9, -0.1, 0.6]
    md = _report_with_atac_wobble(tmp_path, "atac-budget", deltas)
    assert "**Design target:** paired differences with 95% intervals within ±0.5 points" in md
    half = stats.t.ppf(0.975, 3) * stats.tstd(deltas) / len(deltas) ** 0.5
    precision = md.split("## Precision of the paired differences")[1]
    assert f"3 paired difference(s) with 4 seeds: 95% CI half-width median ±{half:.2f}" in precision
    # the narrowest and widest are named by their grid point, without the statistics columns
    assert "train_epochs" in precision and "unit atac" in precision
    assert not any(k in precision for k in ("diff_mean", "n_seeds", "ci_low"))
    # the quick preset has no target; its report still says what it can resolve
    quick = get_experiment("atac-ablation")
    assert quick.precision_targets.get("quick") is None
    assert get_experiment("elsa").precision_targets["standard"] == 2.0


def test_the_precision_top_up_is_the_plan_the_first_seeds_give():
    """STANDARD_TOPUP as committed equals what benchmarks/standard_topup_plan.py derives from
    the first design's seeds in the committed results.csv files (the top-up's own seeds are
    not read, so the plan stays the same after it ran)."""
    import importlib.util
    from pathlib import Path

    from attnact.experiments import arelu_mnist, atac

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location(
        "standard_topup_plan", root / "benchmarks" / "standard_topup_plan.py")
    assert spec is not None and spec.loader is not None
    plan = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plan)
    reports = root / "reports"

    def as_table(extra):
        return sorted((sorted(dict(p).items()), n) for p, n in extra.items())

    def committed(topup):
        return sorted((sorted(where.items()), n) for where, n in topup)

    by_exp, _ = plan.atac_plan(reports, 90 * 60)
    for name in ("atac-ablation", "atac-activations"):
        assert as_table(by_exp[name]) == committed(atac.STANDARD_TOPUP[name]), name
    budget, _ = plan.budget_plan(reports, 30 * 60)
    assert as_table(budget) == committed(atac.STANDARD_TOPUP["atac-budget"])
    mnist, runs = plan.mnist_plan(reports, 150)
    assert as_table(mnist) == committed(arelu_mnist.STANDARD_TOPUP) and runs == 146
    # every experiment's design takes them (design() refuses a point not in the grid), and
    # adds exactly the planned seeds: Table 1 and 4 share their plain runs, so the union of
    # their new keys is the 130 new runs
    first: set[str] = set()
    added: set[str] = set()
    for name in STANDARD:
        exp = get_experiment(name)
        seeds = exp.default_seeds["standard"]
        base = {s.key for s in exp.grid("standard", seeds)}
        extra = {s.key for s in exp.design("standard", seeds)} - base
        assert bool(extra) == bool(exp.topups.get("standard")), name
        if name in ("arelu-convergence", "elsa"):
            first |= base
            added |= extra
    assert len(added - first) == 130


def test_the_ablation_report_gives_the_widths_of_the_claims_comparisons_with_atac(tmp_path):
    """ATAC's top-1 fabricated as the other units' plus a per-seed wobble (0, 0.6, 0.2, 1.0)
    that they do not share: every unit − ATAC difference then has that spread, and the
    precision section reports its Student-t half-width (scipy's), not the narrower unit − ReLU
    one (ReLU and the other units move together, so those differences have no spread)."""
    from scipy import stats

    wobble = [0.0, 0.6, 0.2, 1.0]
    md = _report_with_atac_wobble(tmp_path, "atac-ablation", wobble)
    precision = md.split("## Precision of the paired")[1]
    half = stats.t.ppf(0.975, 3) * stats.tstd(wobble) / 2
    assert f"4 paired difference(s) with 4 seeds: 95% CI half-width median ±{half:.2f}" in precision
    assert "| se_activation | SEActivation vs ATAC (ours) | 4 |" in precision

"""The ATAC paper's experiments: grids (shape, configs, keys shared between experiments), the
paper's numbers, and reports built from fabricated finished runs whose numbers are checked by
hand; the reproduce CLI."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch

from attnact.cli import main
from attnact.experiments import RunStore, get_experiment, list_experiments, reproduce
from attnact.experiments.atac import (
    QUICK_RECIPE,
    TABLE_III,
    TABLE_IV,
    UNITS,
    atac_spec,
    fmt_number,
    host_cost,
    partial_unit,
)
from attnact.models import count_parameters, create_model
from attnact.train.config import config_identity

FIVE = ("atac-ablation", "atac-replacement", "atac-activations", "atac-networks",
        "atac-imagenet")


def quiet(_msg: str) -> None:
    pass


def fake_finished(store: RunStore, spec, top1: float, *, top5: float = 99.0) -> None:
    """A finished run as the engine leaves it (config.yaml, metrics.csv, summary.json)."""
    run_dir = store.prepare(spec)
    spec.config.replace(out_dir=str(run_dir)).to_yaml(run_dir / "config.yaml")
    (run_dir / "metrics.csv").write_text(
        "epoch,test_top1,test_top5,test_loss,epoch_time_s\n"
        f"1,{top1 - 10},{top5},1.0,3.0\n2,{top1},{top5},0.5,3.0\n"
    )
    (run_dir / "summary.json").write_text(
        json.dumps({"status": "finished", "params": 1, "wall_time_s": 6.0})
    )


# ---------------------------------------------------------------------------- registry, CLI
def test_the_five_experiments_and_the_extensions_are_listed(capsys):
    names = list_experiments()
    assert names[:5] == list(FIVE)
    assert {"atac-inner-relu", "atac-reduction", "atac-budget"} <= set(names)
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in FIVE:
        assert f"\n{name} " in "\n" + out
    assert "Table III" in out and "Fig. 6" in out and "Table IV" in out


def test_cli_errors_are_messages(capsys, tmp_path):
    assert main(["reproduce", "atac-ablatoin"]) == 2
    assert "did you mean atac-ablation" in capsys.readouterr().err
    assert main(["reproduce", "atac-ablation", "--preset", "fast"]) == 2
    assert "no preset 'fast' (allowed: paper, quick, standard)" in capsys.readouterr().err
    assert main(["reproduce"]) == 2
    assert "--list" in capsys.readouterr().err
    assert main(["reproduce", "atac-ablation", "--where", "depth=1"]) == 2
    assert "no coordinate 'depth'" in capsys.readouterr().err


def test_cli_dry_run_lists_the_grid_with_states(capsys, tmp_path):
    store = RunStore(tmp_path)
    exp = get_experiment("atac-ablation")
    fake_finished(store, exp.grid("quick", 2)[0], 80.0)
    assert main(["reproduce", "atac-ablation", "--where", "b=1", "--dry-run", "--runs",
                 str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "finished   fashion_mnist-b1-relu-seed0"
    assert lines[-1] == f"10 runs in {tmp_path}: 1 finished, 9 pending"


# ---------------------------------------------------------------------------- grids
def test_ablation_quick_grid():
    exp = get_experiment("atac-ablation")
    specs = exp.grid("quick", 2)
    assert len(specs) == 5 * 2 * 2 and len({s.key for s in specs}) == 20
    assert {s.coords["dataset"] for s in specs} == {"fashion_mnist"}
    assert {s.coords["b"] for s in specs} == {1, 2}
    by_key = {s.key: s for s in specs}
    nin = by_key["fashion_mnist-b2-nin-seed1"].config
    assert nin.model == "resnet_cifar" and nin.act == "relu" and nin.seed == 1
    assert nin.model_kwargs == {"blocks": 2, "variant": "nin"}
    for field, value in QUICK_RECIPE.items():
        assert getattr(nin, field) == value, field
    assert by_key["fashion_mnist-b1-se_activation-seed0"].config.act == "se_activation"
    assert by_key["fashion_mnist-b1-localse-seed0"].config.model_kwargs["variant"] == "localse"


def test_paper_grids_use_the_papers_datasets_depths_and_recipe():
    ablation = get_experiment("atac-ablation").grid("paper", 3)
    assert len(ablation) == 2 * 4 * 3 * 5
    assert {s.coords["dataset"] for s in ablation} == {"cifar10", "cifar100"}
    cfg = ablation[0].config
    assert (cfg.optimizer, cfg.lr, cfg.epochs, cfg.batch_size, cfg.milestones,
            cfg.weight_decay) == ("nag", 0.2, 400, 128, [300, 350], 1e-4)
    assert cfg.pad_to is None and cfg.limit_train is None
    for name, units in (("atac-activations", 7), ("atac-networks", 4)):
        specs = get_experiment(name).grid("paper", 3)
        assert {s.coords["b"] for s in specs} == {1, 2, 3, 4, 5}
        assert len(specs) == 2 * 5 * 3 * units
    replacement = get_experiment("atac-replacement").grid("paper", 3)
    assert {s.coords["sites"] for s in replacement} == set(range(20))  # b = 3: 19 sites
    imagenet = get_experiment("atac-imagenet").grid("paper", 1)
    assert [s.key for s in imagenet] == ["imagenet-resnet50_v1b-seed0",
                                         "imagenet-atac_resnet50-seed0"]
    assert imagenet[1].config.act == "atac" and imagenet[1].config.dataset == "imagenet"


def test_runs_are_shared_between_experiments():
    """One key = one configuration in every experiment, so a shared store trains it once."""
    seen: dict[str, dict] = {}
    for name in list_experiments():
        if not name.startswith("atac-"):
            continue
        for spec in get_experiment(name).grid("quick", 2):
            identity = config_identity(spec.config)
            assert seen.setdefault(spec.key, identity) == identity, spec.key
    replacement = {s.coords["sites"]: s.key for s in get_experiment("atac-replacement").grid(
        "quick", 1)}
    assert replacement[0] == "fashion_mnist-b1-relu-seed0"
    assert replacement[7] == "fashion_mnist-b1-atac-seed0"
    ablation = {s.key for s in get_experiment("atac-ablation").grid("quick", 2)}
    shared = ablation & {s.key for s in get_experiment("atac-replacement").grid("quick", 2)}
    assert len(shared) == 4


@pytest.mark.parametrize("k", range(8))
def test_replacement_levels_put_atac_at_the_last_k_sites(k):
    spec = atac_spec("quick", "fashion_mnist", 1, partial_unit(k, 7), 0)
    kw = dict(spec.config.model_kwargs)
    model = create_model("resnet_cifar", act=spec.config.act, num_classes=10, in_channels=1,
                         **kw)
    selected = [s.selected and s.unit == "atac" for s in model.act_sites]
    assert len(selected) == 7
    assert selected == [False] * (7 - k) + [True] * k


def test_every_quick_unit_builds_trains_one_step_and_costs_what_the_paper_says():
    """Each unit of the catalogue builds on padded Fashion-MNIST and takes a step; NiN and
    SEActivation cost exactly ATAC's parameters, LocalSENet about the same (Sec. IV-B)."""
    torch.manual_seed(0)
    x, y = torch.randn(2, 1, 32, 32), torch.tensor([0, 1])
    params = {}
    for name, unit in UNITS.items():
        cfg = atac_spec("quick", "fashion_mnist", 1, unit, 0).config
        kwargs = dict(cfg.model_kwargs)
        if cfg.act_kwargs:
            kwargs["act_kwargs"] = dict(cfg.act_kwargs)
        model = create_model("resnet_cifar", act=cfg.act, num_classes=10, in_channels=1,
                             image_size=32, **kwargs)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        assert math.isfinite(loss.item()), name
        params[name] = count_parameters(model)
    assert params["nin"] == params["atac"] == params["se_activation"]
    assert abs(params["localse"] - params["atac"]) / params["atac"] < 0.01
    assert params["atac_r1"] > params["atac"] > params["atac_r4"] > params["atac_r8"]
    assert params["atac_norelu"] == params["atac"]
    assert host_cost("fashion_mnist", 1, "atac", 32)[0] == params["atac"]


def _paper_text() -> str:
    """The ATAC paper's text as the project keeps it (shared/papers/ beside the checkout)."""
    for root in Path(__file__).resolve().parents:
        path = root / "shared" / "papers" / "attention-as-activation.md"
        if path.is_file():
            return path.read_text()
    pytest.skip("the paper's text (shared/papers/attention-as-activation.md) is not here")


def _table_rows(text: str, caption: str, stop: str) -> dict[str, list[str]]:
    """Tab-separated rows of one table of the paper's text, by their first cell."""
    block = text.split(caption, 1)[1].split(stop, 1)[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in re.sub(r"</?[bi]>", "", line).split("\t")]
        if len(cells) > 2:
            rows[cells[0]] = cells[1:]
    return rows


def test_table_iii_and_iv_are_the_papers_numbers():
    """Every constant against the paper's printed tables (Table III in fractions)."""
    text = _paper_text()
    table3 = _table_rows(text, "TABLE III:", "performance of the network")
    names = {"relu": "ReLU", "se_activation": "SEActivation", "nin": "NiN",
             "localse": "LocalSENet", "atac": "ATAC (ours)"}
    for unit, row_name in names.items():
        printed = [round(100 * float(v), 1) for v in table3[row_name]]
        assert list(TABLE_III["cifar10"][unit]) == printed[:4], unit
        assert list(TABLE_III["cifar100"][unit]) == printed[4:], unit
    table4 = _table_rows(text, "TABLE IV:", "increasing the depth")
    assert len(TABLE_IV) == len(table4) - 1  # the header row
    for (name, gflops, params, top1, top5), printed in zip(
            TABLE_IV, list(table4.values())[1:], strict=True):
        assert (gflops, params, top1) == (float(printed[0]), float(printed[1].rstrip("M")),
                                          float(printed[2])), name
        assert top5 == (None if printed[3] == "/" else float(printed[3])), name


# ---------------------------------------------------------------------------- reports
def test_ablation_report_numbers_by_hand(tmp_path):
    """Fabricated accuracies: ReLU 80 + seed, every other unit ReLU + offset; the table shows
    mean ± std, the paired difference (exactly the offset) and Table III beside ours."""
    exp = get_experiment("atac-ablation")
    store = RunStore(tmp_path / "runs")
    offset = {"relu": 0.0, "se_activation": -30.0, "nin": -0.5, "localse": 0.5, "atac": 1.0}
    for spec in exp.grid("quick", 2):
        c = spec.coords
        fake_finished(store, spec, 80.0 + 2 * c["seed"] + offset[c["unit"]] + c["b"])
    result = reproduce("atac-ablation", runs=tmp_path / "runs", out=tmp_path / "rep",
                       report_only=True, command="attnact reproduce atac-ablation", log=quiet)
    assert result.ok
    md = result.files["table.md"].read_text()
    # Table III layout: ATAC at b = 1: seeds 82.0, 84.0 -> 83.00 ± 1.41; paper CIFAR-10 90.6
    assert "| ATAC (ours) | 83.00 ± 1.41 (90.6) | 84.00 ± 1.41 (92.7) |" in md
    assert "| SEActivation | 52.00 ± 1.41 (54.8) |" in md
    # detail: paired difference to ReLU is exactly the offset (std 0 -> CI collapses)
    assert "| ATAC (ours) | 1 | 2 | 83.00 ± 1.41 | [70.29, 95.71] | +1.00 [1.00, 1.00] |" in md
    assert "| ReLU | 2 | 2 | 83.00 ± 1.41 | [70.29, 95.71] | baseline | 92.0 † |" not in md
    assert "paper, CIFAR-10 (%) †" in md and "not a like-for-like comparison" in md
    assert "Fashion-MNIST only" in md
    assert f"first {QUICK_RECIPE['limit_train']} training images" in md
    assert "**Command:** `attnact reproduce atac-ablation`" in md
    assert "20 of 20 finished" in md
    summary = {(r["unit"], r["b"]): r for r in csv.DictReader(result.files["summary.csv"].open())}
    assert summary[("nin", "2")]["diff_mean"] == "-0.5" and summary[("nin", "2")]["paper"] == \
        "91.7"
    assert (tmp_path / "rep" / "accuracy_vs_b_fashion_mnist.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(result.files["results.csv"].open()))
    assert len(rows) == 20 and len({r["key"] for r in rows}) == 20
    assert "\\begin{tabular}" in result.files["table.tex"].read_text()


def test_replacement_report_normalised_gain_by_hand(tmp_path):
    """gain(k) = 2·k/7 points on both seeds -> normalised gain k/7 exactly; a full gain whose
    CI includes zero triggers the caution."""
    exp = get_experiment("atac-replacement")
    store = RunStore(tmp_path / "runs")
    for spec in exp.grid("quick", 2):
        k, s = spec.coords["sites"], spec.coords["seed"]
        fake_finished(store, spec, 85.0 + s + 2.0 * k / 7)
    result = reproduce(exp, runs=tmp_path / "runs", out=tmp_path / "rep", report_only=True,
                       log=quiet)
    md = result.files["table.md"].read_text()
    assert "| 0/7 | 0.000 | 2 | 85.50 ± 0.71 | [79.15, 91.85] | baseline | 0.00 | figure only |" \
        in md
    assert "| 3/7 | 0.429 | 2 | 86.36 ± 0.71 |" in md and "+0.86 [0.86, 0.86] | 0.43 |" in md
    assert "| 7/7 | 1.000 |" in md and "+2.00 [2.00, 2.00] | 1.00 |" in md
    assert "Caution" not in md
    for name in ("gain_curve_fashion_mnist.png", "accuracy_vs_fraction_fashion_mnist.png"):
        assert result.files[name].read_bytes()[:4] == b"\x89PNG"

    # a noisy full gain: +3 on seed 0, -1 on seed 1 -> CI of the mean gain includes 0
    full = next(s for s in exp.grid("quick", 2) if s.coords == {
        "dataset": "fashion_mnist", "b": 1, "unit": "atac", "seed": 1, "sites": 7, "of": 7,
        "fraction": 1.0})
    fake_finished(store, full, 85.0 + 1 - 1.0)
    md = reproduce(exp, runs=tmp_path / "runs", out=tmp_path / "rep", report_only=True,
                   log=quiet).files["table.md"].read_text()
    assert "**Caution:** the 95% CI of the full network's gain includes 0" in md


def test_figure_only_experiments_say_so_and_check_the_parameter_claim(tmp_path):
    exp = get_experiment("atac-activations")
    store = RunStore(tmp_path / "runs")
    for spec in exp.grid("quick", 2)[:7]:  # b = 1, seed 0 only
        fake_finished(store, spec, 85.0)
    result = reproduce(exp, runs=tmp_path / "runs", out=tmp_path / "rep", report_only=True,
                       log=quiet)
    md = result.files["table.md"].read_text()
    assert "figure only" in md and "7 of 28 finished" in md
    assert "| xUnit | 85.00 | – |" in md  # b = 2 not run: a dash, not a number
    relu5 = count_parameters(create_model("resnet_cifar", act="relu", blocks=5,
                                          num_classes=100))
    assert f"ReLU b = 5 has {relu5:,}" in md


def test_imagenet_report_costs_and_commands_without_imagenet(tmp_path, capsys):
    result = reproduce("atac-imagenet", preset="paper", runs=tmp_path / "runs",
                       out=tmp_path / "rep", report_only=True, log=quiet)
    md = result.files["table.md"].read_text()
    # counted here (meta device), beside Table IV's 3.86/25.6M and 4.4/28.0M
    assert "| ResNet-50-v1b | 4.09 | 3.86 | 25.56M | 25.6M | – |" in md
    assert "| ATAC-ResNet-50 | 4.40 | 4.40 | 27.93M | 28.0M | – |" in md
    assert "torchrun --nproc-per-node 8 -m attnact train --preset atac-imagenet" in md
    assert str(tmp_path / "runs" / "imagenet-atac_resnet50-seed0") in md
    assert "--resume act=relu" in md  # the ATAC run is the preset itself
    assert not result.ok  # nothing trained: the exit status says so


def test_imagenet_paper_refuses_to_train_without_the_data(tmp_path, monkeypatch):
    import attnact.data

    monkeypatch.setattr(attnact.data, "is_available", lambda name, data_dir=None: False)
    with pytest.raises(ValueError, match=r"imagenet not found.*--report-only"):
        reproduce("atac-imagenet", preset="paper", runs=tmp_path / "runs",
                  out=tmp_path / "rep", log=quiet)
    assert not (tmp_path / "runs").exists()


def test_quick_recipe_is_what_the_docstrings_and_headers_say():
    """The settings the docstrings and report headers state are the recipe's (no drift)."""
    r = QUICK_RECIPE
    exp = get_experiment("atac-ablation")
    text = exp.settings("quick")
    for fragment in (f"first {r['limit_train']} training images",
                     f"first {r['limit_test']} test images",
                     f"{r['epochs']} epochs of batch {r['batch_size']}", f"NAG lr {r['lr']:g}",
                     f"cosine decay to zero after {r['warmup_epochs']:g} warm-up epochs",
                     "b ∈ {1, 2}", "zero-padded to 32×32", "Fashion-MNIST only"):
        assert fragment in text, fragment
    import attnact.experiments.atac as atac

    for doc in (atac.__doc__, type(exp).__doc__, type(get_experiment("atac-replacement")).__doc__):
        for fragment in (f"first {r['limit_train']} training and", f"{r['limit_test']} test images",
                         f"{r['epochs']} epochs of", f"batch {r['batch_size']}",
                         f"NAG lr {r['lr']:g}", f"{r['warmup_epochs']:g} warm-up epoch",
                         f"weight decay {fmt_number(r['weight_decay'])}"):
            assert fragment in " ".join(doc.split()), fragment
    assert "k = 0 … 7" in get_experiment("atac-replacement").settings("quick")
    assert (fmt_number(5e-4), fmt_number(1e-4), fmt_number(0.1), fmt_number(0.075)) == (
        "5e-4", "1e-4", "0.1", "0.075")


@pytest.mark.slow
def test_quick_recipe_learns_in_one_epoch(tmp_path):
    """The quick recipe trains: one epoch of ResNet b = 1 on the real Fashion-MNIST subset is
    well above chance (10%)."""
    from attnact.data import is_available
    from attnact.train.engine import fit

    if not is_available("fashion_mnist"):
        pytest.skip("Fashion-MNIST not installed")
    spec = atac_spec("quick", "fashion_mnist", 1, UNITS["relu"], 0)
    result = fit(spec.config.replace(epochs=1, limit_train=4096, progress=False))
    assert result.history[0]["test_top1"] > 30.0


def test_report_paths_default_to_reports_experiment_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = reproduce("atac-replacement", report_only=True, log=quiet)
    assert result.out_dir == Path("reports/atac-replacement/quick")
    assert result.store.root == Path("runs/reproduce/quick")
    assert (tmp_path / "reports/atac-replacement/quick/table.md").is_file()

"""The AReLU paper's experiments: grid shapes (Table 1's 19 activations × 2 optimizers × 4
learning rates, runs shared between Table 1 and Table 4 and between Fig. 4 and Fig. 5), the α/β
tracker against Eq. 7's effective values, the transfer inputs, reports from fabricated runs with
numbers checked by hand, and small real runs where Fashion-MNIST is installed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attnact import create_act_layer, list_activations
from attnact.data import is_available
from attnact.experiments import RunStore, get_experiment, list_experiments, reproduce
from attnact.experiments.arelu_cifar import ARCHITECTURES, cifar_spec
from attnact.experiments.arelu_mnist import (
    ACTIVATIONS,
    LEARNABLE,
    LRS,
    NON_LEARNABLE,
    QUICK_RECIPE,
    AReLUParamTracker,
    lr_text,
    mnist_spec,
)
from attnact.experiments.arelu_transfer import render_svhn_style, to_rgb32
from attnact.units.arelu import AReLU

AREL_EXPERIMENTS = ("arelu-init", "arelu-convergence", "elsa", "arelu-cifar100",
                    "arelu-transfer", "arelu-meta", "gradcam")
needs_fashion = pytest.mark.skipif(not is_available("fashion_mnist"),
                                   reason="Fashion-MNIST not installed")


def quiet(_msg: str) -> None:
    pass


def fake_finished(store: RunStore, spec, first: float, final: float, **summary) -> None:
    """A finished run as the engine leaves it, with the given first- and last-epoch top-1."""
    run_dir = store.prepare(spec)
    spec.config.replace(out_dir=str(run_dir)).to_yaml(run_dir / "config.yaml")
    (run_dir / "metrics.csv").write_text(
        "epoch,test_top1,test_loss,epoch_time_s\n"
        f"1,{first},1.0,3.0\n2,{(first + final) / 2},0.8,3.0\n3,{final},0.5,3.0\n")
    (run_dir / "summary.json").write_text(json.dumps(
        {"status": "finished", "params": 1, "wall_time_s": 9.0, **summary}))


# ---------------------------------------------------------------------------- registry, grids
def test_every_arelu_experiment_is_listed_after_the_atac_ones():
    names = list_experiments()
    assert names[0] == "atac-ablation"
    for name in AREL_EXPERIMENTS:
        assert name in names
        exp = get_experiment(name)
        # the claims' experiments (Table 1: A1, Table 4: A2) also have the conclusive preset
        standard = {"standard"} if name in ("arelu-convergence", "elsa") else set()
        assert set(exp.presets) == {"paper", "quick"} | standard


def test_table1_has_13_non_learnable_5_learnable_and_arelu_all_registered():
    assert len(NON_LEARNABLE) == 13 and len(LEARNABLE) == 5
    assert ACTIVATIONS[-1] == "arelu" and len(set(ACTIVATIONS)) == 19
    registered = set(list_activations())
    assert set(ACTIVATIONS) <= registered
    assert {f"elsa_{a}" for a in ACTIVATIONS if a != "arelu"} <= registered
    # The learnable ones have parameters, the non-learnable ones none (Table 1's split).
    for act in ACTIVATIONS:
        unit = create_act_layer(act, channels=8)
        n = sum(p.numel() for p in unit.parameters())
        assert (n > 0) == (act not in NON_LEARNABLE), act


def test_convergence_quick_grid_covers_19_acts_2_optimizers_4_lrs_2_seeds():
    specs = get_experiment("arelu-convergence").grid("quick", 2)
    assert len(specs) == 19 * 2 * 4 * 2 == len({s.key for s in specs})
    combos = {(s.coords["act"], s.coords["optimizer"], s.coords["lr"], s.coords["seed"])
              for s in specs}
    assert combos == {(a, o, lr_text(lr), k) for a in ACTIVATIONS for o in ("sgd", "adam")
                      for lr in LRS for k in (0, 1)}
    for s in specs:
        c = s.config
        assert (c.model, c.dataset, c.act, c.optimizer) == (
            "mnist_conv", "fashion_mnist", s.coords["act"], s.coords["optimizer"])
        assert lr_text(c.lr) == s.coords["lr"] and c.schedule == "constant"
        assert c.epochs == QUICK_RECIPE["epochs"] and c.seed == s.coords["seed"]
    paper = get_experiment("arelu-convergence").grid("paper", 5)
    assert len(paper) == 19 * 2 * 4 * 5
    assert {s.config.dataset for s in paper} == {"mnist"}
    assert {s.config.batch_size for s in paper} == {128}


def test_elsa_grid_shares_the_plain_runs_with_table1():
    conv = {s.key: s for s in get_experiment("arelu-convergence").grid("quick", 2)}
    elsa = get_experiment("elsa").grid("quick", 2)
    plain = [s for s in elsa if not s.coords["act"].startswith("elsa_")]
    assert len(plain) == 18 * 2 * 4 * 2 and len(elsa) == 2 * len(plain)
    for s in plain:  # the same key means the same configuration: trained once
        assert conv[s.key].config == s.config
    assert "arelu" not in {s.coords["act"] for s in elsa}


def test_lr_text_is_the_papers_notation():
    assert [lr_text(x) for x in LRS] == ["1e-2", "1e-3", "1e-4", "1e-5"]
    assert lr_text(0.005) == "5e-3"
    spec = mnist_spec("quick", "relu", "adam", 1e-4, 1)
    assert spec.key == "fashion_mnist-mnistconv-relu-adam-lr1e-4-seed1"


def test_fig4_grid_five_architectures_six_acts_and_gradcam_shares_resnet18():
    specs = get_experiment("arelu-cifar100").grid("quick", 2)
    assert {s.coords["arch"] for s in specs} == set(ARCHITECTURES)
    assert {"resnet18", "se_resnet18"} <= set(ARCHITECTURES) and len(ARCHITECTURES) == 5
    assert {s.coords["act"] for s in specs} == {"relu", "leaky_relu", "prelu", "selu", "pau",
                                                  "arelu"}
    assert len(specs) == 5 * 6 * 2
    for s in specs:  # the paper's optimiser settings in both presets
        c = s.config
        assert (c.optimizer, c.lr, c.batch_size, c.weight_decay, c.momentum) == (
            "sgd", 0.1, 64, 5e-4, 0.9)
    keys = {s.key for s in specs}
    cams = get_experiment("gradcam").grid("quick", 1)
    assert {s.coords["act"] for s in cams} == {"relu", "arelu"}
    assert {s.key for s in cams} <= keys
    assert cifar_spec("paper", "vgg16", "pau", 0).config.dataset == "cifar100"


# ---------------------------------------------------------------------------- Fig. 2 tracker
class _State:
    def __init__(self, model, step=0, epoch=0):
        from attnact.train.distributed import DistEnv

        self.model, self.global_step, self.epoch, self.step = model, step, epoch, 0
        self.env = DistEnv()


def test_tracker_records_effective_alpha_beta_of_eq7(tmp_path):
    model = torch.nn.Sequential(AReLU(alpha=1.5, beta=-1.0), torch.nn.ReLU(),
                                AReLU(alpha=0.3, beta=0.5))
    tracker = AReLUParamTracker(tmp_path, every=5)
    tracker.on_fit_start(_State(model))
    rows = {r["layer"]: r for r in tracker.rows}
    assert set(rows) == {"0", "2"}
    assert rows["0"]["alpha_eff"] == 0.99  # C(α) clamps to [0.01, 0.99]
    assert rows["2"]["alpha_eff"] == pytest.approx(0.3)
    assert rows["0"]["beta_eff"] == pytest.approx(1 + 1 / (1 + math.exp(1.0)))
    assert rows["2"]["beta_eff"] == pytest.approx(1 + 1 / (1 + math.exp(-0.5)))
    # The unit computes exactly these slopes (Eq. 7), independent of the tracker.
    x = torch.tensor([-2.0, 3.0])
    assert torch.allclose(model[2](x), torch.tensor([-2.0 * 0.3, 3.0 * rows["2"]["beta_eff"]]))
    tracker.on_step_end(_State(model, step=3))  # not a multiple of every=5
    assert len(tracker.rows) == 2
    tracker.on_step_end(_State(model, step=5))
    tracker.on_epoch_end(_State(model, step=7, epoch=0))
    assert len(tracker.rows) == 6
    written = (tmp_path / AReLUParamTracker.FILE).read_text().splitlines()
    assert len(written) == 7 and written[0].startswith("global_step,epoch,layer")
    # Resume at step 5: the rows after the checkpoint are dropped, earlier ones kept.
    again = AReLUParamTracker(tmp_path, every=5)
    again.on_fit_start(_State(model, step=5))
    assert [int(r["global_step"]) for r in again.rows] == [0, 0, 5, 5]


# ---------------------------------------------------------------------------- transfer inputs
def test_to_rgb32_pads_centred_and_repeats_channels():
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8)
    y = to_rgb32(x)
    assert y.shape == (3, 3, 32, 32) and y.dtype == torch.uint8
    expected = F.pad(x, (2, 2, 2, 2))
    for c in range(3):
        assert torch.equal(y[:, c:c + 1], expected)
    rgb = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(to_rgb32(rgb), rgb)
    with pytest.raises(ValueError, match="at most 32×32"):
        to_rgb32(torch.zeros(1, 1, 40, 40, dtype=torch.uint8))
    with pytest.raises(ValueError, match="uint8"):
        to_rgb32(torch.zeros(1, 1, 28, 28))


def test_svhn_style_rendering_is_coloured_contrasted_and_deterministic():
    x = torch.zeros(64, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 8:20, 8:20] = 255  # a bright square on black
    a, b = render_svhn_style(x, seed=3, noise=0.0), render_svhn_style(x, seed=3, noise=0.0)
    assert torch.equal(a, b) and a.shape == (64, 3, 32, 32) and a.dtype == torch.uint8
    assert not torch.equal(a, render_svhn_style(x, seed=4, noise=0.0))
    fg = a[:, :, 16, 16].float()  # inside the square: the foreground colour
    bg = a[:, :, 0, 0].float()  # padding: the background colour
    assert ((fg.mean(1) - bg.mean(1)).abs() >= 95).all()  # contrast kept
    assert (fg.std(0) > 20).all() and (bg.std(0) > 20).all()  # colours vary between images
    assert ((fg.mean(1) < bg.mean(1)).any() and (fg.mean(1) > bg.mean(1)).any())  # both ways


# ---------------------------------------------------------------------------- reports
def test_convergence_report_improvement_rows_checked_by_hand(tmp_path):
    exp = get_experiment("arelu-convergence")
    store = RunStore(tmp_path / "runs")
    where = {"act": ["relu", "tanh", "prelu", "arelu"], "optimizer": ["sgd"], "lr": ["1e-4"]}
    first = {"tanh": (20.0, 22.0), "relu": (30.0, 34.0), "prelu": (40.0, 41.0),
             "arelu": (50.0, 54.0)}
    for spec in exp.grid("quick", 2):
        a = spec.coords["act"]
        if a in first and spec.coords["optimizer"] == "sgd" and spec.coords["lr"] == "1e-4":
            fake_finished(store, spec, first[a][spec.coords["seed"]], 90.0)
    result = reproduce(exp, preset="quick", runs=store.root, out=tmp_path / "rep",
                       where=where, report_only=True, log=quiet)
    md = result.files["table.md"].read_text()
    # AReLU 52 ± 2.83; best non-learnable ReLU 32: +20.00, paired diffs 20, 20 → CI [20, 20].
    assert "| AReLU | **52.00 ± 2.83** |" in md
    assert "| ReLU | **32.00 ± 2.83** |" in md
    assert "+20.00 (vs ReLU) [20.00, 20.00]" in md
    # Best learnable PReLU 40.5: +11.50, paired diffs 10 and 13 → mean 11.5 ± t·2.12/√2.
    half = 12.706 * math.sqrt(4.5) / math.sqrt(2)
    assert f"+11.50 (vs PReLU) [{11.5 - half:.2f}, {11.5 + half:.2f}]" in md
    assert "| sgd | 1e-4 | 1 of 4 |" in md


def test_elsa_report_marks_improvements(tmp_path):
    exp = get_experiment("elsa")
    store = RunStore(tmp_path / "runs")
    first = {"relu": 30.0, "elsa_relu": 35.0, "tanh": 30.0, "elsa_tanh": 25.0}
    for spec in exp.grid("quick", 2):
        a = spec.coords["act"]
        if a in first and spec.coords["optimizer"] == "adam" and spec.coords["lr"] == "1e-3":
            fake_finished(store, spec, first[a] + spec.coords["seed"], 80.0)
    result = reproduce(exp, preset="quick", runs=store.root, out=tmp_path / "rep",
                       where={"act": list(first), "optimizer": ["adam"], "lr": ["1e-3"]},
                       report_only=True, log=quiet)
    md = result.files["table.md"].read_text()
    assert "| ELSA(ReLU) | 35.50 ± 0.71 ⇑ |" in md  # +5 on both seeds: CI above zero
    assert "| ELSA(Tanh) | 25.50 ± 0.71 |" in md
    assert "ELSA is above the plain activation in 1 of 2 cells (1 with the CI above zero)" in md


def test_transfer_report_rows(tmp_path):
    exp = get_experiment("arelu-transfer")
    store = RunStore(tmp_path / "runs")
    for spec in exp.grid("quick", 2):
        if spec.coords["act"] in ("relu", "arelu"):
            bonus = 10.0 if spec.coords["act"] == "arelu" else 0.0
            rows = {"no_pretrain": 10.0 + bonus, "no_finetune": 30.0 + bonus,
                    "finetune_5": 40.0 + bonus + spec.coords["seed"], "finetune_10": 45.0,
                    "finetune_20": 50.0 + bonus}
            fake_finished(store, spec, 40.0, 50.0, transfer=rows)
    result = reproduce(exp, preset="quick", runs=store.root, out=tmp_path / "rep",
                       where={"act": ["relu", "arelu"]}, report_only=True, log=quiet)
    md = result.files["table.md"].read_text()
    assert "| no pretraining | 10.00 ± 0.00 | **20.00 ± 0.00** |" in md
    assert "| pretrain + fine-tune 5 epochs | 40.50 ± 0.71 | **50.50 ± 0.71** |" in md
    assert "| pretrain + fine-tune 20 epochs | +10.00 [10.00, 10.00] |" in md


# ---------------------------------------------------------------------------- real runs
@needs_fashion
def test_init_experiment_tracks_and_reports_on_real_data(tmp_path, monkeypatch):
    import attnact.experiments.arelu_mnist as m

    monkeypatch.setitem(m.QUICK_RECIPE, "limit_train", 256)
    monkeypatch.setitem(m.QUICK_RECIPE, "limit_test", 200)
    monkeypatch.setattr(m, "QUICK_INIT_EPOCHS", 2)
    result = reproduce("arelu-init", preset="quick", seeds=1, runs=tmp_path / "runs",
                       out=tmp_path / "rep", where={"alpha": ["0.25"], "beta": ["1.0", "4.0"]},
                       backend="inline", log=quiet, verbose=False)
    assert result.ok
    for name in ("table.md", "accuracy_by_init.png", "alpha_beta_trajectory.png",
                 "learned_units.png"):
        assert result.files[name].is_file()
    rows = (result.store.run_dir(result.specs[0].key) / "arelu_params.csv").read_text()
    lines = rows.splitlines()
    assert len({line.split(",")[2] for line in lines[1:]}) == 3  # MNIST-Conv's three AReLUs
    first = lines[1].split(",")
    assert float(first[3]) == 0.25 and float(first[4]) == 1.0  # the initial values
    md = result.files["table.md"].read_text()
    assert "block1.act" in md and "Fig. 2(c)" in md


@needs_fashion
def test_fit_transfer_runs_every_phase_on_real_data(tmp_path):
    from attnact.experiments.arelu_transfer import fit_transfer
    from attnact.train.config import TrainConfig

    extra = {"source": {"dataset": "fashion_mnist", "limit_train": 256, "limit_test": 100},
             "target": {"dataset": "fashion_mnist", "style": "svhn", "train_offset": 1000,
                        "limit_train": 128, "limit_test": 100},
             "pretrain_epochs": 2, "pretrain_lr": 0.01, "finetune_epochs": 5}
    config = TrainConfig(model="mnist_conv", act="arelu", dataset="fashion_mnist", lr=1e-5,
                         batch_size=32, epochs=5, transfer=extra, out_dir=str(tmp_path / "run"),
                         progress=False)
    summary = fit_transfer(config)
    rows = summary["transfer"]
    assert set(rows) == {"no_pretrain", "no_finetune", "finetune_5"}
    assert rows["finetune_5"] == summary["final"]["test_top1"]
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["status"] == "finished" and written["transfer"] == rows
    for phase in ("pretrain", "finetune", "scratch"):
        assert (tmp_path / "run" / phase / "summary.json").is_file()
    # The fine-tuned model starts from the pretrained weights: its first epoch at lr 1e-5 is
    # far closer to the pretrained model's target accuracy than to chance.
    tuned = [float(r.split(",")[5]) for r in
             (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]]
    assert abs(tuned[0] - rows["no_finetune"]) < 5.0
    # Running it again resumes every finished phase: same numbers, no retraining.
    again = fit_transfer(config)
    assert again["transfer"] == rows
    with pytest.raises(ValueError, match="needs source and target"):
        fit_transfer(config.replace(transfer={"source": extra["source"]}))
    with pytest.raises(ValueError, match=r"TrainConfig.transfer must give"):
        fit_transfer(config.replace(transfer=None))


def test_engine_refuses_another_procedures_settings():
    from attnact.train.config import TrainConfig
    from attnact.train.engine import fit
    from attnact.train.settings import MAMLSettings

    with pytest.raises(ValueError, match=r"TrainConfig.maml is set.*plain training takes none"):
        fit(TrainConfig(maml=MAMLSettings(ways=5)))
    with pytest.raises(ValueError, match=r"TrainConfig.transfer is set"):
        fit(TrainConfig(transfer={"source": {"dataset": "mnist"}, "target": {"dataset": "svhn"}}))


def test_reports_of_a_missing_grid_still_render(tmp_path):
    for name in ("arelu-convergence", "arelu-cifar100", "gradcam"):
        result = reproduce(name, preset="quick", runs=tmp_path / "runs",
                           out=tmp_path / name, report_only=True, log=quiet,
                           where={"seed": ["0"]})
        assert not result.ok
        assert "Not finished" in result.files["table.md"].read_text()
        assert isinstance(result.out_dir, Path)


def test_meta_grid_is_the_papers_maml_setting():
    specs = get_experiment("arelu-meta").grid("quick", 2)
    assert {s.coords["shots"] for s in specs} == {1, 5}
    assert "arelu" in {s.coords["act"] for s in specs} and "pau" in {s.coords["act"] for s in specs}
    for s in specs:
        meta = s.config.maml
        assert (meta.ways, meta.shots, meta.tasks_per_step, meta.inner_steps,
                meta.iterations) == (5, s.coords["shots"], 32, 5, 100)
        assert s.config.lr == 0.005 and s.fit == "attnact.meta.maml:fit_maml"
        assert meta.split == "samples"  # test tasks come from the test split
    paper = get_experiment("arelu-meta").grid("paper", 1)
    assert {s.coords["act"] for s in paper} == set(ACTIVATIONS)
    assert {s.config.dataset for s in paper} == {"mnist"}


def test_meta_report_final_and_best_columns(tmp_path):
    exp = get_experiment("arelu-meta")
    store = RunStore(tmp_path / "runs")
    for spec in exp.grid("quick", 2):
        if spec.coords["act"] in ("relu", "arelu") and spec.coords["shots"] == 1:
            # first / middle / final evaluation: AReLU peaks then collapses, ReLU climbs.
            first, final = (60.0, 40.0) if spec.coords["act"] == "arelu" else (30.0, 50.0)
            fake_finished(store, spec, first + spec.coords["seed"], final)
    result = reproduce(exp, preset="quick", runs=store.root, out=tmp_path / "rep",
                       where={"act": ["relu", "arelu"], "shots": ["1"]}, report_only=True,
                       log=quiet)
    md = result.files["table.md"].read_text()
    assert "| ReLU | **50.00 ± 0.00** | 50.00 ± 0.00 |" in md
    assert "| AReLU | 40.00 ± 0.00 | **60.50 ± 0.71** |" in md
    assert "| AReLU | -10.00 [-10.00, -10.00] |" in md


def test_every_table1_activation_and_its_elsa_builds_mnist_conv():
    """Each of the grids' units builds MNIST-Conv and runs forward and backward (ELSA(Maxout)
    once failed here: the host did not widen the convolution in front of it)."""
    from attnact.models import create_model

    for act in (*ACTIVATIONS, *(f"elsa_{a}" for a in ACTIVATIONS if a != "arelu")):
        model = create_model("mnist_conv", act=act)
        model(torch.randn(2, 1, 28, 28)).sum().backward()
    widened = create_model("mnist_conv", act="elsa_maxout")
    assert widened.block1.conv.out_channels == 20  # Maxout's pool size 2 × the act's 10

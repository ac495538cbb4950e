"""Provenance: which code, versions and data made a run, and how reports show it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from attnact.train import TrainConfig, fit
from attnact.train.provenance import (
    collect,
    config_hash,
    git_state,
    other_code,
    same_code,
    summary_lines,
)


def _git(root, *args):
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def checkout(tmp_path):
    """A tiny git checkout laid out like attnact's (src/attnact, pyproject.toml, reports/)."""
    root = tmp_path / "repo"
    (root / "src" / "attnact").mkdir(parents=True)
    (root / "src" / "attnact" / "__init__.py").write_text("x = 1\n")
    (root / "pyproject.toml").write_text("[project]\n")
    (root / "reports").mkdir()
    _git(tmp_path, "init", "-q", str(root))
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    return root


def test_git_state_names_the_commit_and_what_makes_the_tree_dirty(checkout):
    state = git_state(checkout)
    assert state == {"commit": _git(checkout, "rev-parse", "HEAD"), "dirty": False}
    (checkout / "reports" / "table.md").write_text("a report\n")  # results are not code
    assert git_state(checkout)["dirty"] is False
    (checkout / "src" / "attnact" / "new.py").write_text("")  # new source: dirty
    assert git_state(checkout)["dirty"] is True
    (checkout / "src" / "attnact" / "new.py").unlink()
    (checkout / "pyproject.toml").write_text("[project]\nname='x'\n")
    assert git_state(checkout)["dirty"] is True
    assert git_state(checkout.parent) is None  # not a checkout


def test_the_running_checkout_is_recorded():
    state = git_state()
    if state is None:
        pytest.skip("attnact is not imported from a git checkout here")
    from pathlib import Path

    import attnact

    root = Path(attnact.__file__).resolve().parents[2]
    assert state["commit"] == _git(root, "rev-parse", "HEAD")


def test_config_hash_ignores_where_a_run_executes_and_sees_what_it_computes():
    base = TrainConfig(lr=0.1)
    assert config_hash(base) == config_hash(base.replace(out_dir="/x", progress=False,
                                                         device="cpu"))
    assert config_hash(base) != config_hash(base.replace(lr=0.2))
    assert config_hash(base).startswith("sha256:") and len(config_hash(base)) == 71


def test_dataset_fingerprint_follows_the_content_not_the_place(tmp_path, make_mnist,
                                                               monkeypatch):
    from attnact.data import dataset_fingerprint

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    make_mnist(tmp_path / "a" / "mnist", seed=1)
    make_mnist(tmp_path / "b" / "mnist", seed=1)
    make_mnist(tmp_path / "c" / "mnist", seed=2)
    fa = dataset_fingerprint("mnist", tmp_path / "a")
    assert fa.startswith("sha256:")
    assert fa == dataset_fingerprint("mnist", tmp_path / "b")
    assert fa != dataset_fingerprint("mnist", tmp_path / "c")
    labels = tmp_path / "b" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    stat = labels.stat()
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 1
    labels.write_bytes(bytes(data))
    # an edit made later than the filesystem's timestamp tick after the hash (here: 1 s)
    os.utime(labels, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert dataset_fingerprint("mnist", tmp_path / "b") != fa


def test_every_training_session_is_recorded(tmp_path, fakes):
    cfg = TrainConfig(model="tiny", dataset="fake", epochs=1, batch_size=16, progress=False,
                      out_dir=str(tmp_path / "run"))

    def train(c):
        torch.manual_seed(0)
        return fit(c, model=fakes.tiny_model(), loaders=fakes.make_loaders(batch_size=16))

    train(cfg)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (record,) = summary["provenance"]
    assert record["torch"] == str(torch.__version__)
    assert record["threads"] == torch.get_num_threads() and record["device"] == "cpu"
    assert record["cpu"].endswith(", " + torch.backends.cpu.get_cpu_capability())
    assert record["config_sha256"] == config_hash(cfg)
    assert record["data_sha256"] is None  # loaders passed in: no catalogued copy to hash
    train(cfg.replace(epochs=2, resume=True))
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["provenance"]) == 2  # the resumed session appended its own


def _record(commit, dirty=False, torch_version="2.13.0"):
    return {"attnact": "0.1.0", "git": {"commit": commit, "dirty": dirty},
            "torch": torch_version, "device": "cpu", "threads": 1, "dataset": "fashion_mnist",
            "data_sha256": "sha256:" + "ab" * 32}


def test_same_code_means_same_commit_clean_and_same_torch():
    assert same_code(_record("a" * 40), _record("a" * 40))
    assert not same_code(_record("a" * 40), _record("b" * 40))
    assert not same_code(_record("a" * 40, dirty=True), _record("a" * 40, dirty=True))
    assert not same_code(_record("a" * 40), _record("a" * 40, torch_version="2.14.1"))


def test_a_report_header_says_where_its_runs_come_from_and_which_differ(monkeypatch):
    import attnact.train.provenance as prov

    now = {"attnact": "0.1.0", "git": {"commit": "a" * 40, "dirty": False}, "torch": "2.13.0"}
    monkeypatch.setattr(prov, "current_code", lambda: now)
    runs = {"r1": {"provenance": [_record("a" * 40)]},
            "r2": {"provenance": [_record("a" * 40)]}}
    lines = summary_lines(runs)
    assert "all 2 runs: attnact 0.1.0@aaaaaaaaaaaa, torch 2.13.0" in lines[1]
    assert not any("other code" in line for line in lines)
    runs["r3"] = {"provenance": [_record("a" * 40), _record("b" * 40)]}  # resumed by other code
    runs["r4"] = {}
    text = "\n".join(summary_lines(runs))
    assert "the 4 runs come from 3 origins" in text
    assert "@aaaaaaaaaaaa, torch 2.13.0, cpu × 1 thread(s)" in text and " then " in text
    assert "no provenance record" in text
    runs["r5"] = {"provenance": [{**_record("a" * 40), "cpu": "AMD EPYC, AVX512"}]}
    assert "cpu (AMD EPYC, AVX512) × 1 thread(s)" in "\n".join(summary_lines(runs))
    assert "other code than this report's:** 2 run(s) (`r3`, `r4`)" in text
    assert other_code(runs, now) == ["r3", "r4"]


def test_reproduce_retrains_only_runs_of_other_code(tmp_path):
    from attnact.experiments import Experiment, RunSpec, RunStore, reproduce, run_key

    calls = []

    def fit_recording(cfg):
        from pathlib import Path

        out = Path(cfg.out_dir)
        calls.append(out.name)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.csv").write_text("epoch,test_top1\n1,50\n")
        record = collect(cfg, hash_data=False) if cfg.act == "relu" else {"attnact": "0.0.1"}
        (out / "summary.json").write_text(json.dumps({"status": "finished",
                                                      "provenance": [record]}))

    class Tiny(Experiment):
        name, title, source = "tiny-prov", "t", "a test"

        def grid(self, preset, seeds):
            return [RunSpec(run_key(a, "seed0"), {"act": a, "seed": 0},
                            TrainConfig(act=a, progress=False), fit=fit_recording)
                    for a in ("relu", "atac")]

        def required_datasets(self, specs):
            return []

        def report(self, results, out, context):
            return {}

    kw = dict(backend="inline", out=tmp_path / "rep", runs=tmp_path / "runs",
              log=lambda m: None)
    reproduce(Tiny(), **kw)
    assert sorted(calls) == ["atac-seed0", "relu-seed0"]
    calls.clear()
    with pytest.raises(ValueError, match="excludes report_only"):
        reproduce(Tiny(), retrain_other_code=True, report_only=True, **kw)
    reproduce(Tiny(), retrain_other_code=True, **kw)
    dirty = (git_state() or {}).get("dirty")
    # atac's run was made by "attnact 0.0.1": set aside (moved, kept) and trained again
    assert calls == (["relu-seed0", "atac-seed0"] if dirty else ["atac-seed0"])
    aside = list((tmp_path / "runs" / ".set-aside").iterdir())
    assert any(p.name.startswith("atac-seed0.") for p in aside)
    assert RunStore(tmp_path / "runs").keys() == ["atac-seed0", "relu-seed0"]

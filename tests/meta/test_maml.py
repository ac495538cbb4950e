"""MAML (attnact.meta): episode sampling, the functional inner loop, second-order meta-gradients
against an independent autograd implementation and finite differences, and the run-store fit
function on a tiny dataset written in the real (IDX) format."""

from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.func import functional_call

from attnact.data import load_arrays
from attnact.experiments import RunSpec, RunStore, execute_run
from attnact.meta import (
    METRIC_COLUMNS,
    TaskSampler,
    adapt,
    evaluate_tasks,
    fit_maml,
    meta_gradient,
    meta_step,
    model_params,
)
from attnact.models import create_model
from attnact.train.checkpoint import load_checkpoint
from attnact.train.config import TrainConfig
from attnact.units.arelu import AReLU


# ---------------------------------------------------------------------- helpers
def pool(n_per_class=(6, 6, 6, 6), size=5, seed=0):
    """uint8 N×1×size×size images; image i's pixel (0, 0) holds i, so positions are traceable."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    images = torch.randint(0, 256, (len(labels), 1, size, size), generator=g, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(len(labels), dtype=torch.uint8)
    return images, labels


def tiny_model(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, 6), AReLU(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)
    ).to(dtype)


def float_tasks(n_tasks=3, ways=3, shots=2, queries=3, dim=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(n_tasks, ways * shots, dim, generator=g, dtype=dtype)
    qx = torch.randn(n_tasks, ways * queries, dim, generator=g, dtype=dtype)
    sy = torch.arange(ways).repeat_interleave(shots).expand(n_tasks, -1)
    qy = torch.arange(ways).repeat_interleave(queries).expand(n_tasks, -1)
    return sx, sy, qx, qy


def reference_meta_grad(model, tasks, steps, lr, first_order):
    """MAML with torch.autograd only: create_graph=True through the inner steps (second order)
    or no graph through the inner gradients (first order)."""
    names = [n for n, _ in model.named_parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in model.parameters()]
    sx, sy, qx, qy = tasks
    total = 0.0
    for t in range(sx.shape[0]):
        fast = list(leaves)

        def f(x, weights):
            return functional_call(model, dict(zip(names, weights, strict=True)), (x,))

        for _ in range(steps):
            loss = F.cross_entropy(f(sx[t], fast), sy[t])
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [w - lr * g for w, g in zip(fast, grads, strict=True)]
        query = f(qx[t], fast)
        total = total + F.cross_entropy(query, qy[t])
    grads = torch.autograd.grad(total / sx.shape[0], leaves)
    return dict(zip(names, grads, strict=True))


def meta_loss(model, params, tasks, steps, lr):
    sx, sy, qx, qy = tasks
    losses = []
    for t in range(sx.shape[0]):
        fast = adapt(model, params, {}, sx[t], sy[t], steps, lr)
        losses.append(F.cross_entropy(functional_call(model, fast, (qx[t],)), qy[t]))
    return torch.stack(losses).mean()


def close(a, b, rtol, atol):
    return all(torch.allclose(a[k], b[k], rtol=rtol, atol=atol) for k in a)


def max_relative_error(a, b):
    """max |a − b| over max |b|, per tensor, worst tensor."""
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max()) for k in a)


def write_idx_gz(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def easy_mnist(tmp_path_factory) -> Path:
    """An easy 10-class MNIST-format dataset: class c is a bright 7×7 square at its own place,
    plus noise; 12 training and 8 test images per class."""
    root = tmp_path_factory.mktemp("maml-data")
    directory = root / "mnist"
    directory.mkdir()
    rng = np.random.default_rng(0)

    def split(per_class):
        labels = np.repeat(np.arange(10), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (len(labels), 28, 28))
        for i, c in enumerate(labels):
            r, q = divmod(int(c), 4)
            images[i, 2 + 8 * r : 9 + 8 * r, 1 + 7 * q : 8 + 7 * q] += 190
        return images.astype(np.uint8), labels.astype(np.uint8)

    for prefix, n in (("train", 12), ("t10k", 8)):
        images, labels = split(n)
        write_idx_gz(directory / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx_gz(directory / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


def maml_config(data_dir, out_dir=None, **extra):
    settings = dict(
        ways=5, shots=1, queries=3, tasks_per_step=4, inner_steps=2, inner_lr=0.01,
        iterations=4, eval_every=2, test_tasks=30,
    )
    settings.update(extra)
    return TrainConfig(
        model="mnist_conv", act="arelu", dataset="mnist", data_dir=str(data_dir), lr=0.01,
        seed=3, out_dir=None if out_dir is None else str(out_dir), maml=settings,
    )


# ---------------------------------------------------------------------- sampler
def test_sampler_shapes_relabelling_and_disjoint_support_query():
    images, labels = pool()
    sampler = TaskSampler(images, labels, ways=3, shots=2, queries=3)
    batch = sampler.sample(20, torch.Generator().manual_seed(1))
    assert batch.support_x.shape == (20, 6, 1, 5, 5) and batch.support_x.dtype == torch.float32
    assert batch.query_x.shape == (20, 9, 1, 5, 5)
    assert batch.support_y.tolist() == [[0, 0, 1, 1, 2, 2]] * 20
    assert batch.query_y.tolist() == [[0, 0, 0, 1, 1, 1, 2, 2, 2]] * 20
    # Relabelling: label i of task t is the original class classes[t, i], for every image.
    for idx, y in ((batch.support_index, batch.support_y), (batch.query_index, batch.query_y)):
        assert torch.equal(labels[idx], torch.gather(batch.classes, 1, y))
    # The images are the indexed ones (pixel (0, 0) holds the pool position).
    assert torch.equal((batch.support_x[:, :, 0, 0, 0] * 255).round().long(), batch.support_index)
    # Classes of a task are distinct and come in varying order.
    assert all(len(set(c)) == 3 for c in batch.classes.tolist())
    assert len({tuple(c) for c in batch.classes.tolist()}) > 5
    assert any(c != sorted(c) for c in batch.classes.tolist())
    for s, q in zip(batch.support_index.tolist(), batch.query_index.tolist(), strict=True):
        assert len(set(s) | set(q)) == len(s) + len(q)  # no image twice, none in both sets


def test_sampler_is_deterministic_given_the_generator():
    images, labels = pool()
    sampler = TaskSampler(images, labels, ways=2, shots=1, queries=2)
    a = sampler.sample(8, torch.Generator().manual_seed(5))
    b = sampler.sample(8, torch.Generator().manual_seed(5))
    c = sampler.sample(8, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.support_index, c.support_index)
    # Drawing in chunks from one generator gives the same tasks as drawing all at once.
    g = torch.Generator().manual_seed(5)
    first, second = sampler.sample(3, g), sampler.sample(5, g)
    assert torch.equal(torch.cat([first.query_index, second.query_index]), a.query_index)


def test_sampler_normalises_like_the_loaders_and_pads():
    images, labels = pool(size=4)
    flat = images[:, 0]  # N×H×W is accepted as one channel
    sampler = TaskSampler(flat, labels, 2, 1, 1, mean=[0.5], std=[0.25], pad_to=8)
    batch = sampler.sample(2, torch.Generator().manual_seed(0))
    assert batch.support_x.shape == (2, 2, 1, 8, 8)
    raw = images[batch.support_index].float() / 255
    assert torch.allclose(batch.support_x[..., 2:6, 2:6], (raw - 0.5) / 0.25, atol=1e-5)
    assert torch.allclose(batch.support_x[..., 0, :], torch.tensor(-2.0))  # zero padding
    assert sampler.image_shape == (1, 8, 8)


def test_sampler_restricted_to_classes_never_draws_others():
    images, labels = pool()
    sampler = TaskSampler(images, labels, ways=2, shots=2, queries=2, classes=[1, 3])
    batch = sampler.sample(10, torch.Generator().manual_seed(0))
    drawn = set(labels[batch.support_index].flatten().tolist())
    drawn |= set(labels[batch.query_index].flatten().tolist())
    assert drawn == {1, 3}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(ways=5, shots=1, queries=1), "only 4 classes"),
        (dict(ways=2, shots=4, queries=3), "too few in class"),
        (dict(ways=2, shots=1, queries=1, classes=[0, 7]), "have no images"),
        (dict(ways=2, shots=1, queries=1, classes=[0, 0]), "twice"),
        (dict(ways=2, shots=0, queries=1), "shots must be a positive"),
        (dict(ways=2, shots=1, queries=1, mean=[0.5]), "both mean and std"),
        (dict(ways=2, shots=1, queries=1, pad_to=3), "pad_to"),
    ],
)
def test_sampler_rejects_bad_settings(kwargs, message):
    images, labels = pool(n_per_class=(6, 6, 6, 5))
    with pytest.raises(ValueError, match=message):
        TaskSampler(images, labels, **kwargs)


def test_sampler_rejects_bad_arrays():
    images, labels = pool()
    with pytest.raises(ValueError, match="uint8"):
        TaskSampler(images.float(), labels, 2, 1, 1)
    with pytest.raises(ValueError, match="one per image"):
        TaskSampler(images, labels[:-1], 2, 1, 1)


# ---------------------------------------------------------------------- inner loop and gradients
def test_adapt_one_step_is_a_manual_sgd_step():
    model = tiny_model()
    sx, sy, _, _ = float_tasks()
    params, buffers = model_params(model)
    adapted = adapt(model, params, buffers, sx[0], sy[0], steps=1, lr=0.3)
    loss = F.cross_entropy(model(sx[0]), sy[0])
    grads = torch.autograd.grad(loss, list(model.parameters()))
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        assert torch.allclose(adapted[name], p.detach() - 0.3 * g, rtol=0, atol=1e-14), name
        assert not torch.equal(adapted[name], p.detach())  # every parameter moves, α and β too
    # Two steps differ from one; the module's own parameters are untouched.
    twice = adapt(model, params, buffers, sx[0], sy[0], steps=2, lr=0.3)
    assert not torch.allclose(twice["0.weight"], adapted["0.weight"])
    assert all(torch.equal(params[k], p) for k, p in model.named_parameters())


def test_adapt_is_differentiable_by_plain_autograd():
    model = tiny_model()
    sx, sy, qx, qy = float_tasks()
    leaves = {k: v.clone().requires_grad_() for k, v in model_params(model)[0].items()}
    fast = adapt(model, leaves, {}, sx[0], sy[0], steps=2, lr=0.3)
    loss = F.cross_entropy(functional_call(model, fast, (qx[0],)), qy[0])
    got = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
    ref = reference_meta_grad(model, tuple(t[:1] for t in (sx, sy, qx, qy)), 2, 0.3, False)
    assert close(got, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_second_order_meta_gradient_matches_autograd_and_finite_differences(batching):
    model = tiny_model()
    tasks = float_tasks()
    params, buffers = model_params(model)
    got, losses, accs, used = meta_gradient(model, params, buffers, tasks, 3, 0.5, False, batching)
    assert used == batching and losses.shape == accs.shape == (3,)
    ref = reference_meta_grad(model, tasks, 3, 0.5, first_order=False)
    assert close(got, ref, rtol=1e-9, atol=1e-12)
    # Central differences of the meta loss along a random direction.
    g = torch.Generator().manual_seed(9)
    direction = {k: torch.randn(v.shape, generator=g, dtype=v.dtype) for k, v in params.items()}
    eps = 1e-6
    plus = meta_loss(model, {k: v + eps * direction[k] for k, v in params.items()}, tasks, 3, 0.5)
    minus = meta_loss(model, {k: v - eps * direction[k] for k, v in params.items()}, tasks, 3, 0.5)
    numeric = float((plus - minus) / (2 * eps))
    analytic = float(sum((got[k] * direction[k]).sum() for k in got))
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9)
    assert float(losses.mean()) == pytest.approx(float(meta_loss(model, params, tasks, 3, 0.5)))


def test_first_order_is_fomaml_and_differs_from_second_order():
    model = tiny_model()
    tasks = float_tasks()
    params, buffers = model_params(model)
    first = meta_gradient(model, params, buffers, tasks, 3, 0.5, True, "vmap")[0]
    second = meta_gradient(model, params, buffers, tasks, 3, 0.5, False, "vmap")[0]
    assert close(first, reference_meta_grad(model, tasks, 3, 0.5, True), 1e-9, 1e-12)
    diff = math.sqrt(sum(float((first[k] - second[k]).pow(2).sum()) for k in first))
    norm = math.sqrt(sum(float(second[k].pow(2).sum()) for k in second))
    assert diff > 1e-3 * norm


def test_vmap_and_loop_agree_on_mnist_conv():
    torch.manual_seed(0)
    model = create_model("mnist_conv", act="arelu", num_classes=3)
    g = torch.Generator().manual_seed(0)
    tasks = (
        torch.randn(3, 3, 1, 28, 28, generator=g),
        torch.arange(3).expand(3, -1),
        torch.randn(3, 6, 1, 28, 28, generator=g),
        torch.arange(3).repeat_interleave(2).expand(3, -1),
    )
    params, buffers = model_params(model)
    a, la, _, _ = meta_gradient(model, params, buffers, tasks, 2, 0.01, False, "vmap")
    b, lb, _, _ = meta_gradient(model, params, buffers, tasks, 2, 0.01, False, "loop")
    assert torch.allclose(la, lb, rtol=1e-5)
    assert max_relative_error(a, b) < 1e-4
    fo = meta_gradient(model, params, buffers, tasks, 2, 0.01, True, "loop")[0]
    assert max_relative_error(fo, b) > 1e-3  # the check above can tell gradients apart
    assert float(a["block1.act.alpha"].abs().sum()) > 0  # learnable activations get gradients


def test_auto_batching_falls_back_to_the_loop_for_random_modules():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    tasks = float_tasks()
    params, buffers = model_params(model)
    with pytest.raises(RuntimeError, match="random"):
        meta_gradient(model, params, buffers, tasks, 1, 0.1, False, "vmap")
    with pytest.warns(UserWarning, match="one by one"):
        _, _, _, used = meta_gradient(model, params, buffers, tasks, 1, 0.1, False, "auto")
    assert used == "loop"
    assert meta_gradient(tiny_model(), *model_params(tiny_model()), tasks, 1, 0.1)[3] == "vmap"


def test_meta_step_updates_every_parameter_with_adam():
    torch.manual_seed(0)
    model = create_model("mnist_conv", act="arelu", num_classes=3)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    images, labels = pool(n_per_class=(4, 4, 4), size=28)
    tasks = TaskSampler(images, labels, 3, 1, 2).sample(2, torch.Generator().manual_seed(0))
    out = meta_step(model, optimizer, tasks, 2, 0.1)
    assert set(out) == {"loss", "acc", "batching"} and 0 <= out["acc"] <= 100
    for name, p in model.named_parameters():
        assert not torch.equal(p.detach(), before[name]), name  # α and β of AReLU included
        assert p.grad is None


def test_evaluate_tasks_is_repeatable_and_leaves_the_model():
    torch.manual_seed(0)
    model = create_model("mnist_conv", act="relu", num_classes=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images, labels = pool(n_per_class=(5, 5, 5, 5), size=28)
    sampler = TaskSampler(images, labels, 3, 1, 2)
    runs = [
        evaluate_tasks(model, None, sampler, 7, 2, 0.1, torch.Generator().manual_seed(4))
        for _ in range(2)
    ]
    assert torch.equal(runs[0].per_task, runs[1].per_task) and runs[0].per_task.shape == (7,)
    assert 0 <= runs[0].accuracy <= 100 and runs[0].ci95 > 0
    assert runs[0].accuracy == pytest.approx(float(runs[0].per_task.mean()))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    loop = evaluate_tasks(model, None, sampler, 7, 2, 0.1, torch.Generator().manual_seed(4),
                          batching="loop")
    assert torch.equal(loop.per_task, runs[0].per_task)


# ---------------------------------------------------------------------- fit_maml
def test_fit_maml_writes_a_finished_run_store_directory(easy_mnist, tmp_path):
    config = maml_config(easy_mnist)
    spec = RunSpec("maml-arelu", {"act": "arelu"}, config, fit="attnact.meta:fit_maml")
    outcome = execute_run(spec, tmp_path)
    assert outcome.status == "finished", outcome
    store = RunStore(tmp_path)
    run_dir = store.run_dir("maml-arelu")
    assert {"config.yaml", "metrics.csv", "checkpoint.pt", "summary.json"} <= {
        p.name for p in run_dir.iterdir()
    }
    stored = TrainConfig.from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    assert stored.maml.ways == 5 and stored.maml == config.maml
    with (run_dir / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(METRIC_COLUMNS) and [r["epoch"] for r in rows] == ["2", "4"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs"] == summary["epochs_completed"] == 4
    assert summary["final"]["epoch"] == 4 and summary["best"]["test_top1"] >= max(
        float(r["test_top1"]) for r in rows
    ) - 1e-9
    assert summary["meta"]["ways"] == 5 and summary["meta"]["batching"] == "vmap"
    assert summary["params"] == sum(p.numel() for p in create_model(
        "mnist_conv", act="arelu", num_classes=5).parameters())
    record = store.record("maml-arelu")
    # Easy data: far above the 20% chance of 5-way tasks after meta-training (81% measured).
    assert record.final_top1 > 50, rows
    assert record.metric("test_top1_ci") > 0
    assert execute_run(spec, tmp_path).status == "skipped"


def test_fit_maml_resumes_exactly(easy_mnist, tmp_path):
    straight = fit_maml(maml_config(easy_mnist, tmp_path / "a"))
    fit_maml(maml_config(easy_mnist, tmp_path / "b", iterations=2))
    with pytest.raises(FileExistsError):
        fit_maml(maml_config(easy_mnist, tmp_path / "b"))
    resumed = fit_maml(maml_config(easy_mnist, tmp_path / "b").replace(resume=True))
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert a["iteration"] == b["iteration"] == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]

    assert strip(a["history"]) == strip(b["history"])
    assert straight["final"]["test_top1"] == resumed["final"]["test_top1"]
    # A different seed meta-trains differently: the comparison above can fail.
    other = fit_maml(maml_config(easy_mnist, tmp_path / "c").replace(seed=4))
    assert other["final"] != straight["final"]


def test_fit_maml_resume_rebuilds_a_csv_that_lags_the_checkpoint(easy_mnist, tmp_path):
    """Killed between the last checkpoint and its CSV write, a run resumes with nothing left to
    train; the resume must still write the last row (the run store counts such a run unfinished
    and resumes it, so without this it would never finish)."""
    out = tmp_path / "run"
    fit_maml(maml_config(easy_mnist, out))
    path = out / "metrics.csv"
    whole = path.read_text()
    path.write_text("".join(whole.splitlines(keepends=True)[:-1]))
    fit_maml(maml_config(easy_mnist, out).replace(resume=True))
    assert path.read_text() == whole


def test_split_classes_holds_test_classes_out_of_meta_training(easy_mnist, monkeypatch):
    drawn: list[tuple[TaskSampler, torch.Tensor]] = []
    original = TaskSampler.sample

    def spy(self, n_tasks, generator=None):
        batch = original(self, n_tasks, generator)
        for idx in (batch.support_index, batch.query_index):
            drawn.append((self, self.labels[idx]))
        return batch

    monkeypatch.setattr(TaskSampler, "sample", spy)
    summary = fit_maml(maml_config(easy_mnist, split="classes", iterations=2, test_tasks=4))
    train_classes, test_classes = summary["meta"]["train_classes"], summary["meta"]["test_classes"]
    assert train_classes == [0, 1, 2, 3, 4] and test_classes == [5, 6, 7, 8, 9]
    train_x, _ = load_arrays("mnist", "train", easy_mnist)
    test_x, _ = load_arrays("mnist", "test", easy_mnist)
    seen_train, seen_test = set(), set()
    for sampler, labels in drawn:
        if torch.equal(sampler.images, train_x):
            seen_train |= set(labels.flatten().tolist())
        else:
            assert torch.equal(sampler.images, test_x)  # test tasks come from the test split
            seen_test |= set(labels.flatten().tolist())
    assert seen_train == set(train_classes) and seen_test == set(test_classes)

    drawn.clear()
    fit_maml(maml_config(easy_mnist, iterations=1, test_tasks=2, train_classes=[0, 1, 2, 3, 4]))
    pools = {("train" if torch.equal(s.images, train_x) else "test") for s, _ in drawn}
    assert pools == {"train", "test"}
    assert all(torch.equal(s.images, test_x) for s, _ in drawn if not torch.equal(
        s.images, train_x))
    with pytest.raises(ValueError, match="disjoint"):
        fit_maml(maml_config(easy_mnist, split="classes", train_classes=[0, 1],
                             test_classes=[1, 2]))


def test_every_evaluation_and_activation_meets_the_same_test_tasks(easy_mnist, monkeypatch):
    test_x, _ = load_arrays("mnist", "test", easy_mnist)
    seen: list[torch.Tensor] = []
    original = TaskSampler.sample

    def spy(self, n_tasks, generator=None):
        batch = original(self, n_tasks, generator)
        if torch.equal(self.images, test_x):
            seen.append(torch.cat([batch.support_index, batch.query_index], 1))
        return batch

    monkeypatch.setattr(TaskSampler, "sample", spy)
    for act in ("relu", "arelu"):
        fit_maml(maml_config(easy_mnist, iterations=2, eval_every=1, test_tasks=5).replace(act=act))
    assert len(seen) == 4 and all(torch.equal(s, seen[0]) for s in seen)
    fit_maml(maml_config(easy_mnist, iterations=1, test_tasks=5).replace(seed=4))
    assert not torch.equal(seen[-1], seen[0])  # another seed, other tasks


def test_fit_maml_without_out_dir_writes_nothing(easy_mnist, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summary = fit_maml(maml_config(easy_mnist, iterations=1, test_tasks=2, first_order=True,
                                   batching="loop"))
    assert summary["status"] == "finished" and summary["epochs_completed"] == 1
    assert summary["meta"]["batching"] == "loop" and summary["meta"]["first_order"] is True
    assert list(tmp_path.iterdir()) == []


def test_fit_maml_rejects_unknown_settings(easy_mnist):
    with pytest.raises(ValueError, match="did you mean inner_lr"):
        fit_maml(maml_config(easy_mnist, inner_rl=0.1))
    with pytest.raises(ValueError, match="ways=11"):
        fit_maml(maml_config(easy_mnist, ways=11))
    with pytest.raises(ValueError, match=r"maml\.split"):
        fit_maml(maml_config(easy_mnist, split="tasks"))


def test_fit_maml_resumes_a_checkpoint_of_the_previous_version_and_logs_once(
        easy_mnist, tmp_path, monkeypatch):
    """A checkpoint whose config holds the settings as ``extra`` (attnact before typed
    settings) resumes without a changed-config warning; the MLflow logger (its file store, read
    back with MlflowClient) holds each evaluation once across the two sessions."""
    pytest.importorskip("mlflow")
    import warnings

    from mlflow.tracking import MlflowClient

    from attnact.train.checkpoint import save_checkpoint
    from attnact.train.rundir import RunDirectory

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)
    straight = fit_maml(maml_config(easy_mnist, tmp_path / "a"))
    first = maml_config(easy_mnist, tmp_path / "b", iterations=2).replace(loggers=["mlflow"],
                                                                          log_every_steps=1)
    fit_maml(first)
    files = RunDirectory(tmp_path / "b")
    ckpt = load_checkpoint(files.checkpoint_path)
    old = {k: v for k, v in ckpt["config"].items()
           if k not in ("loggers", "log_every_steps", "mlflow_tracking_uri", "maml", "transfer")}
    ckpt["config"] = {**old, "tensorboard": False, "extra": ckpt["config"]["maml"]}
    save_checkpoint(files.checkpoint_path, ckpt)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        resumed = fit_maml(first.replace(maml={**first.maml.to_dict(), "iterations": 4},
                                         resume=True))
    assert not [w for w in seen if "changed config" in str(w.message)]
    assert resumed["final"]["test_top1"] == straight["final"]["test_top1"]
    ids = files.read_tracking()["mlflow"]
    client = MlflowClient(tracking_uri=ids["tracking_uri"])
    top1 = client.get_metric_history(ids["run_id"], "test/top1")
    history = load_checkpoint(files.checkpoint_path)["history"]  # evaluations at 2 and 4
    assert sorted((m.step, m.value) for m in top1) == [(r["epoch"], r["test_top1"])
                                                       for r in history]
    assert [r["epoch"] for r in history] == [2, 4]
    assert sorted(m.step for m in client.get_metric_history(ids["run_id"],
                                                            "train/step_loss")) == [1, 2, 3, 4]
    assert client.get_run(ids["run_id"]).data.params["maml.ways"] == "5"

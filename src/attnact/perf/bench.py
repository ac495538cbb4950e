"""``attnact bench``: the cost of each unit and of whole models as ratios, side by side.

For every variant of a unit (ReLU, AReLU and ATAC in their fast, memory-efficient and reference
implementations, ELSA, SEActivation) and every host model (``resnet_cifar`` with b = 3,
``mnist_conv``, ``resnet50_v1b`` at a small batch), three figures:

* **train step**: median time of forward + backward (+ SGD update for models), as a ratio to the
  ReLU variant of the same host and to the unit's reference implementation;
* **inference**: median time of an eval-mode forward under ``torch.no_grad``, same ratios;
* **saved bytes**: bytes of the tensors autograd keeps for backward during one training forward
  (counted with ``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters
  left out — they exist anyway), as a ratio to ReLU's. Deterministic, unlike times.

Times are medians of interleaved rounds (every variant once per round) measured in one process
(DESIGN.md: never absolute times on a shared machine); only ratios are reported. A variant whose
options this build does not know (an implementation not available) is listed as skipped with the
reason, not silently dropped.
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attnact.fileio import atomic_write_json, atomic_write_text
from attnact.perf.steptime import interleaved_medians
from attnact.report.tables import to_markdown

__all__ = [
    "HOSTS",
    "VARIANTS",
    "BenchResult",
    "Host",
    "Variant",
    "resolve_host",
    "run_bench",
    "saved_bytes",
    "write_bench",
]


@dataclass(frozen=True)
class Variant:
    """One way of computing a unit. ``reference``: the label of the variant that is its plain
    torch.nn composition (the ratio column "vs reference")."""

    label: str
    act: str
    act_kwargs: Mapping[str, Any] = field(default_factory=dict)
    reference: str | None = None
    compiled_kernels: bool = True  # False: attnact.set_fused(False) while this variant runs


VARIANTS: tuple[Variant, ...] = (
    Variant("relu", "relu"),
    Variant("arelu", "arelu", reference="arelu (reference)"),
    Variant("arelu (eager kernels)", "arelu", reference="arelu (reference)",
            compiled_kernels=False),
    Variant("arelu (reference)", "arelu", {"implementation": "reference"}),
    Variant("elsa_gelu", "elsa_gelu", reference="elsa_gelu (reference)"),
    Variant("elsa_gelu (reference)", "elsa_gelu", {"implementation": "reference"}),
    Variant("atac", "atac", reference="atac (reference)"),
    Variant("atac (memory-efficient)", "atac", {"memory_efficient": True},
            reference="atac (reference)"),
    Variant("atac (reference)", "atac", {"implementation": "reference"}),
)


@dataclass(frozen=True)
class Host:
    """A model (or a bare unit, ``model=None``) and the batch it is measured on."""

    name: str
    model: str | None
    input_shape: tuple[int, ...]  # one sample: (C, H, W)
    batch: int
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_classes: int = 10
    channels_last: bool = True


HOSTS: dict[str, Host] = {
    # A bare unit at the widest site of ResNet-20's first stage, on a CIFAR-sized batch.
    "unit": Host("unit", None, (16, 32, 32), 128),
    # Issue #6's reference measurement: ResNet-20-v2 family, b = 3, batch 128, 32×32.
    "resnet_cifar_b3": Host("resnet_cifar_b3", "resnet_cifar", (3, 32, 32), 128,
                            {"blocks": 3}),
    "mnist_conv": Host("mnist_conv", "mnist_conv", (1, 28, 28), 128, channels_last=False),
    "resnet50_v1b": Host("resnet50_v1b", "resnet50_v1b", (3, 224, 224), 4,
                         num_classes=1000),
}


def resolve_host(host: str | Host) -> Host:
    """A :class:`Host` by name: one of :data:`HOSTS`, or ``MODEL@DATASET`` — any registered
    model at the input size and classes of a run on that dataset (the same fitting as
    ``attnact train``; no data is read), at batch 32 (4 for inputs larger than 64×64)."""
    if isinstance(host, Host):
        return host
    if host in HOSTS:
        return HOSTS[host]
    model, sep, dataset = host.partition("@")
    if not sep or not model or not dataset:
        raise ValueError(f"unknown bench host {host!r}: one of {', '.join(HOSTS)}, or "
                         "MODEL@DATASET (e.g. resnet18@cifar10)")
    from attnact.models import fit_to_input, model_spec
    from attnact.train.build import data_shape
    from attnact.train.config import TrainConfig

    spec = model_spec(model)
    shape = data_shape(TrainConfig(model=spec.name, dataset=dataset))
    batch = 32 if max(shape.input_size[1:]) <= 64 else 4
    return Host(host, spec.name, shape.input_size, batch,
                fit_to_input(spec, shape.input_size, {}), num_classes=shape.num_classes)


def saved_bytes(forward: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``forward()`` runs,
    leaving out the storages of ``exclude`` (a model's parameters)."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in excluded:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return sum(seen.values())


def _build(host: Host, variant: Variant) -> nn.Module:
    from attnact import create_act_layer
    from attnact.models import create_model

    if host.model is None:
        return create_act_layer(variant.act, channels=host.input_shape[0],
                                **dict(variant.act_kwargs))
    from attnact.models import model_spec

    kwargs = dict(host.model_kwargs)
    if variant.act_kwargs:
        kwargs["act_kwargs"] = dict(variant.act_kwargs)
    if "in_channels" in model_spec(host.model).arguments:
        kwargs.setdefault("in_channels", host.input_shape[0])
    return create_model(host.model, act=variant.act, num_classes=host.num_classes, **kwargs)


def _to_format(t: torch.Tensor, host: Host) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if host.channels_last else t


@dataclass
class BenchResult:
    """One (host, variant) row; ratios are None for a skipped variant."""

    host: str
    variant: str
    train_vs_relu: float | None = None
    train_vs_reference: float | None = None
    infer_vs_relu: float | None = None
    infer_vs_reference: float | None = None
    saved_bytes: int | None = None
    saved_vs_relu: float | None = None
    skipped: str | None = None


def _without_compiled_kernels(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with the fused kernels eager (``fused_mode(False)``)."""
    from attnact.units.fused import fused_mode

    def run() -> Any:
        with fused_mode(False):
            return fn()

    return run


def _steps(host: Host, models: Mapping[str, nn.Module], seed: int,
           eager: Iterable[str] = ()) -> tuple[
        dict[str, Callable[[], None]], dict[str, Callable[[], None]], dict[str, int]]:
    g = torch.Generator().manual_seed(seed)
    x = _to_format(torch.randn(host.batch, *host.input_shape, generator=g), host)
    y = torch.randint(0, host.num_classes, (host.batch,), generator=g)
    train: dict[str, Callable[[], None]] = {}
    infer: dict[str, Callable[[], None]] = {}
    saved: dict[str, int] = {}
    for label, model in models.items():
        model = model.to(memory_format=torch.channels_last) if host.channels_last else model
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=1e-4) if params else None
        exclude = list(params)
        if host.model is None:
            xin = x.clone().requires_grad_(True)
            # A fixed random upstream gradient; mul by a constant saves only that constant,
            # which is left out of the count like the parameters.
            w = torch.randn(x.shape, generator=g)
            exclude.append(w)

            def loss(m: nn.Module = model, xin: torch.Tensor = xin,
                     w: torch.Tensor = w) -> torch.Tensor:
                return (m(xin) * w).sum()
        else:
            def loss(m: nn.Module = model) -> torch.Tensor:
                return F.cross_entropy(m(x), y)

        def step(m: nn.Module = model, loss: Callable[[], torch.Tensor] = loss,
                 opt: Any = opt) -> None:
            m.train()
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            loss().backward()
            if opt is not None:
                opt.step()

        def forward(m: nn.Module = model) -> None:
            m.eval()
            with torch.no_grad():
                m(x)

        if label in eager:
            step, forward, loss = map(_without_compiled_kernels, (step, forward, loss))
        train[label], infer[label] = step, forward
        model.train()
        saved[label] = saved_bytes(loss, exclude=exclude)
    return train, infer, saved


def run_bench(
    hosts: Sequence[str | Host] = ("unit", "resnet_cifar_b3", "mnist_conv", "resnet50_v1b"),
    variants: Sequence[Variant] = VARIANTS,
    *,
    rounds: int = 15,
    warmup: int = 3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[BenchResult]:
    """Measure every variant on every host (see the module docstring; hosts by name, see
    :func:`resolve_host`)."""
    resolved = [resolve_host(h) for h in hosts]  # every name checked before anything runs
    labels = [v.label for v in variants]
    if "relu" not in labels:
        raise ValueError("the variants must include 'relu' (every ratio is relative to it)")
    results: list[BenchResult] = []
    for host in resolved:
        name = host.name
        models: dict[str, nn.Module] = {}
        skipped: dict[str, str] = {}
        for v in variants:
            try:
                torch.manual_seed(seed)
                models[v.label] = _build(host, v)
            except (TypeError, ValueError) as err:  # an option this build does not have
                skipped[v.label] = f"{type(err).__name__}: {err}"
        if log:
            log(f"[bench] {name}: {len(models)} variants, {rounds} rounds")
        eager = [v.label for v in variants if not v.compiled_kernels]
        train, infer, saved = _steps(host, models, seed, eager)
        t_train = interleaved_medians(train, rounds=rounds, warmup=warmup)
        t_infer = interleaved_medians(infer, rounds=rounds, warmup=warmup)
        for v in variants:
            if v.label in skipped:
                results.append(BenchResult(name, v.label, skipped=skipped[v.label]))
                continue
            ref = v.reference if v.reference in models else None
            results.append(BenchResult(
                name, v.label,
                train_vs_relu=t_train[v.label] / t_train["relu"],
                train_vs_reference=t_train[v.label] / t_train[ref] if ref else None,
                infer_vs_relu=t_infer[v.label] / t_infer["relu"],
                infer_vs_reference=t_infer[v.label] / t_infer[ref] if ref else None,
                saved_bytes=saved[v.label],
                saved_vs_relu=saved[v.label] / saved["relu"] if saved["relu"] else None,
            ))
    return results


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def markdown_table(results: Sequence[BenchResult]) -> str:
    rows = []
    for r in results:
        if r.skipped:
            rows.append({"host": r.host, "variant": r.variant, "train step vs ReLU": "skipped",
                         "vs reference": "", "inference vs ReLU": "", "inf. vs reference": "",
                         "saved for backward vs ReLU": r.skipped})
            continue
        rows.append({"host": r.host, "variant": r.variant,
                     "train step vs ReLU": _fmt(r.train_vs_relu),
                     "vs reference": _fmt(r.train_vs_reference),
                     "inference vs ReLU": _fmt(r.infer_vs_relu),
                     "inf. vs reference": _fmt(r.infer_vs_reference),
                     "saved for backward vs ReLU": (f"{_fmt(r.saved_vs_relu)} "
                                                    f"({(r.saved_bytes or 0) / 2**20:.1f} MiB)")})
    return to_markdown(rows)


def write_bench(results: Sequence[BenchResult], out: str | Path, *, name: str, command: str,
                rounds: int) -> dict[str, Path]:
    """``<out>/<name>.json`` and ``<out>/<name>.md`` (atomically)."""
    meta = {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__), "python": platform.python_version(),
        "machine": platform.machine(), "threads": torch.get_num_threads(), "rounds": rounds,
        "hosts": {h: asdict(resolve_host(h)) for h in dict.fromkeys(r.host for r in results)},
    }
    out = Path(out)
    md = (f"# attnact bench: {name}\n\n`{command}` — {meta['date']}, torch {meta['torch']}, "
          f"{meta['threads']} thread(s), median of {rounds} interleaved rounds; ratios only "
          f"(DESIGN.md). Saved bytes: tensors autograd keeps for backward in one training "
          f"forward, parameters excluded.\n\n" + markdown_table(results) + "\n")
    return {
        "json": atomic_write_json(out / f"{name}.json",
                                  {"meta": meta, "results": [asdict(r) for r in results]}),
        "md": atomic_write_text(out / f"{name}.md", md),
    }


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")

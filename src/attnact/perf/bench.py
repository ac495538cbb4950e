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
(DESIGN.md, Performance: how to measure — never absolute times on a shared machine); only
ratios are reported. A variant whose options this build does not know (an implementation not
available) is listed as skipped with the reason, not silently dropped.
"""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

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
    compile_model: bool = False  # True: the whole model under torch.compile(model)
    native_kernels: bool = True  # False: attnact.units.native.set_native(False) while it runs
    norm_act_fusion: bool = True  # False: attnact.units.norm_act.set_fusion(False) while it runs
    baseline: str = "relu"  # the label whose time is 1.0 in "vs ReLU" (a compiled twin for
    # compiled models: the peer comparison is compiled against compiled)


VARIANTS: tuple[Variant, ...] = (
    Variant("relu", "relu"),
    Variant("arelu", "arelu", reference="arelu (reference)"),
    Variant("arelu (Function)", "arelu", reference="arelu (reference)", native_kernels=False),
    Variant("arelu (Function, eager kernels)", "arelu", reference="arelu (reference)",
            compiled_kernels=False, native_kernels=False),
    Variant("arelu (reference)", "arelu", {"implementation": "reference"}),
    Variant("elsa_gelu", "elsa_gelu", reference="elsa_gelu (reference)"),
    Variant("elsa_gelu (Function)", "elsa_gelu", reference="elsa_gelu (reference)",
            native_kernels=False),
    Variant("elsa_gelu (reference)", "elsa_gelu", {"implementation": "reference"}),
    Variant("atac", "atac", reference="atac (reference)"),
    Variant("atac (memory-efficient)", "atac", {"memory_efficient": True},
            reference="atac (reference)"),
    # BN → ATAC sites of the hosts as act(bn(x)) instead of one fused node (units/norm_act.py):
    # ATAC then saves its own input BN(x) (issue #14's memory gap); same for the bare unit
    Variant("atac (BN unfused)", "atac", reference="atac (reference)", norm_act_fusion=False),
    Variant("atac (memory-efficient, BN unfused)", "atac", {"memory_efficient": True},
            reference="atac (reference)", norm_act_fusion=False),
    Variant("atac (reference)", "atac", {"implementation": "reference"}),
    # ATAC's fast and memory-efficient paths on their autograd Function instead of the native
    # operators (what runs where the native operators do not build)
    Variant("atac (Function)", "atac", reference="atac (reference)", native_kernels=False),
    Variant("atac (memory-efficient, Function)", "atac", {"memory_efficient": True},
            reference="atac (reference)", native_kernels=False),
    # The peers under torch.compile(model), side by side (DESIGN.md, Performance: how to
    # measure): the plain compositions compiled with the whole network, attnact's default under
    # the same compile, and the ReLU network compiled as their baseline.
    Variant("relu (compiled model)", "relu", compile_model=True,
            baseline="relu (compiled model)"),
    Variant("arelu (compiled model)", "arelu", compile_model=True,
            baseline="relu (compiled model)", reference="arelu (reference, compiled model)"),
    Variant("arelu (reference, compiled model)", "arelu", {"implementation": "reference"},
            compile_model=True, baseline="relu (compiled model)"),
    Variant("atac (compiled model)", "atac", compile_model=True,
            baseline="relu (compiled model)", reference="atac (reference, compiled model)"),
    Variant("atac (reference, compiled model)", "atac", {"implementation": "reference"},
            compile_model=True, baseline="relu (compiled model)"),
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
    leaving out the storages of ``exclude`` (a model's parameters).

    Examples:
        ReLU keeps its output for backward (1000 float32 values: 4000 bytes); AReLU's
        Function keeps one x-sized tensor too, plus its two one-element parameters:

        >>> import torch, attnact
        >>> from attnact.perf.bench import saved_bytes
        >>> x = torch.randn(1000, requires_grad=True)
        >>> saved_bytes(lambda: torch.relu(x))
        4000
        >>> saved_bytes(lambda: attnact.AReLU()(x))
        4008
    """
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
    """One (host, variant) row; ratios are None for a skipped variant.

    Roofline fields (eager variants; None under ``torch.compile(model)``, whose kernels the
    operator count cannot see): ``bytes_moved`` per training step (:func:`~attnact.perf.
    roofline.traffic`); ``floor_vs_relu``: the step's time if the bytes it moves beyond ReLU's
    moved at the measured DRAM bandwidth and the rest took ReLU's time, as a ratio to ReLU (the
    limit a faster kernel could approach); ``bandwidth_fraction``: the bytes beyond ReLU's over
    the time beyond ReLU's, as a fraction of that bandwidth (the unit's achieved share; for the
    bare-unit host the whole step's bytes over its whole time).
    """

    host: str
    variant: str
    train_vs_relu: float | None = None
    train_vs_reference: float | None = None
    infer_vs_relu: float | None = None
    infer_vs_reference: float | None = None
    saved_bytes: int | None = None
    saved_vs_relu: float | None = None
    bytes_moved: int | None = None
    floor_vs_relu: float | None = None
    bandwidth_fraction: float | None = None
    skipped: str | None = None


def _without_native(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with attnact's native operators switched off."""
    from attnact.units import native

    def run() -> Any:
        native.set_native(False)
        try:
            return fn()
        finally:
            native.set_native(None)

    return run


def _without_norm_act_fusion(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with the hosts' BN → ATAC sites unfused (``set_fusion(False)``)."""
    from attnact.units import norm_act

    def run() -> Any:
        norm_act.set_fusion(False)
        try:
            return fn()
        finally:
            norm_act.set_fusion(None)

    return run


def _without_compiled_kernels(fn: Callable[[], Any]) -> Callable[[], Any]:
    """``fn`` run with the fused kernels eager (``fused_mode(False)``)."""
    from attnact.units.fused import fused_mode

    def run() -> Any:
        with fused_mode(False):
            return fn()

    return run


@dataclass
class _Steps:
    train: dict[str, Callable[[], None]] = field(default_factory=dict)
    infer: dict[str, Callable[[], None]] = field(default_factory=dict)
    saved: dict[str, int] = field(default_factory=dict)
    moved: dict[str, int] = field(default_factory=dict)


def _steps(host: Host, models: Mapping[str, nn.Module], seed: int,
           eager: Iterable[str] = (), compiled: Iterable[str] = (),
           no_native: Iterable[str] = (), unfused: Iterable[str] = ()) -> _Steps:
    from attnact.perf.roofline import traffic

    g = torch.Generator().manual_seed(seed)
    x = _to_format(torch.randn(host.batch, *host.input_shape, generator=g), host)
    y = torch.randint(0, host.num_classes, (host.batch,), generator=g)
    out = _Steps()
    compiled = set(compiled)
    if compiled:
        # Every compiled model shares the host's forward code objects; each model, mode and
        # grad state is a guard set of its own, and at dynamo's default limit of 8 per code
        # object the later models would silently run eagerly.
        cfg = torch._dynamo.config
        cfg.recompile_limit = max(cfg.recompile_limit, 64)
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 1024)
    for label, model in models.items():
        # Module.to takes memory_format at run time; torch's overloads leave it out
        model = model.to(memory_format=torch.channels_last) if host.channels_last else model  # type: ignore[call-overload]
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=1e-4) if params else None
        exclude: list[torch.Tensor] = list(params)
        run: Callable[..., Any] = torch.compile(model) if label in compiled else model
        loss: Callable[[], torch.Tensor]
        if host.model is None:
            xin = x.clone().requires_grad_(True)
            # A fixed random upstream gradient; mul by a constant saves only that constant,
            # which is left out of the count like the parameters.
            w = torch.randn(x.shape, generator=g)
            exclude.append(w)

            def unit_loss(m: Callable[..., Any] = run, xin: torch.Tensor = xin,
                          w: torch.Tensor = w) -> torch.Tensor:
                return cast(torch.Tensor, (m(xin) * w).sum())
            loss = unit_loss
        else:
            def host_loss(m: Callable[..., Any] = run) -> torch.Tensor:
                return F.cross_entropy(m(x), y)
            loss = host_loss

        def train_step(m: nn.Module = model, loss: Callable[[], torch.Tensor] = loss,
                       opt: Any = opt) -> None:
            m.train()
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            loss().backward()
            if opt is not None:
                opt.step()

        def infer_step(m: nn.Module = model, run: Callable[..., Any] = run) -> None:
            m.eval()
            with torch.no_grad():
                run(x)

        step: Callable[[], Any] = train_step
        forward: Callable[[], Any] = infer_step

        if label in eager:
            step, forward, loss = map(_without_compiled_kernels, (step, forward, loss))
        if label in no_native:
            step, forward, loss = map(_without_native, (step, forward, loss))
        if label in unfused:
            step, forward, loss = map(_without_norm_act_fusion, (step, forward, loss))
        out.train[label], out.infer[label] = step, forward
        model.train()
        out.saved[label] = saved_bytes(loss, exclude=exclude)
        if label not in compiled:
            step()  # warm: compiled kernels are counted as they run once compiled
            out.moved[label] = traffic(step)[0]
    return out


def _roofline(moved: int | None, base: int | None, t: float, t_base: float, bandwidth: float,
              bare_unit: bool) -> tuple[float | None, float | None]:
    """(floor vs baseline, achieved fraction of the bandwidth) of one row (BenchResult)."""
    if moved is None or base is None:
        return None, None
    if bare_unit:
        return (t_base + max(moved - base, 0) / bandwidth) / t_base, moved / t / bandwidth
    extra_bytes, extra_time = moved - base, t - t_base
    fraction = extra_bytes / extra_time / bandwidth if extra_time > 0 and extra_bytes > 0 else None
    return (t_base + max(extra_bytes, 0) / bandwidth) / t_base, fraction


def run_bench(
    hosts: Sequence[str | Host] = ("unit", "resnet_cifar_b3", "mnist_conv", "resnet50_v1b"),
    variants: Sequence[Variant] = VARIANTS,
    *,
    rounds: int = 15,
    warmup: int = 3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
    bandwidth: Mapping[str, float] | None = None,
) -> list[BenchResult]:
    """Measure every variant on every host (see the module docstring; hosts by name, see
    :func:`resolve_host`). ``bandwidth``: bytes per second by name (``"dram"`` is the
    roofline's), measured with :func:`~attnact.perf.roofline.measure_bandwidth` when not
    given."""
    from attnact.perf.roofline import measure_bandwidth

    resolved = [resolve_host(h) for h in hosts]  # every name checked before anything runs
    labels = [v.label for v in variants]
    if "relu" not in labels:
        raise ValueError("the variants must include 'relu' (every ratio is relative to it)")
    missing = sorted({v.baseline for v in variants} - set(labels))
    if missing:
        raise ValueError(f"the variants' baselines {missing} are not among the variants")
    if bandwidth is None:
        bandwidth = {"dram": measure_bandwidth()["best"],
                     "cache": measure_bandwidth(8 * 2**20, repeats=30)["best"]}
    bw = bandwidth["dram"]
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
        compiled = [v.label for v in variants if v.compile_model]
        no_native = [v.label for v in variants if not v.native_kernels]
        unfused = [v.label for v in variants if not v.norm_act_fusion]
        st = _steps(host, models, seed, eager, compiled, no_native, unfused)
        t_train = interleaved_medians(st.train, rounds=rounds, warmup=warmup)
        t_infer = interleaved_medians(st.infer, rounds=rounds, warmup=warmup)
        for v in variants:
            if v.label in skipped:
                results.append(BenchResult(name, v.label, skipped=skipped[v.label]))
                continue
            if v.baseline in skipped:
                results.append(BenchResult(name, v.label,
                                           skipped=f"baseline {v.baseline!r} skipped"))
                continue
            ref = v.reference if v.reference in models else None
            base = v.baseline
            floor, fraction = _roofline(
                st.moved.get(v.label), st.moved.get(base), t_train[v.label], t_train[base],
                bw, host.model is None)
            results.append(BenchResult(
                name, v.label,
                train_vs_relu=t_train[v.label] / t_train[base],
                train_vs_reference=t_train[v.label] / t_train[ref] if ref else None,
                infer_vs_relu=t_infer[v.label] / t_infer[base],
                infer_vs_reference=t_infer[v.label] / t_infer[ref] if ref else None,
                saved_bytes=st.saved[v.label],
                saved_vs_relu=st.saved[v.label] / st.saved[base] if st.saved[base] else None,
                bytes_moved=st.moved.get(v.label),
                floor_vs_relu=floor, bandwidth_fraction=fraction,
            ))
    return results


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _mib(x: int | None) -> str:
    return "–" if x is None else f"{x / 2**20:.0f} MiB"


def markdown_table(results: Sequence[BenchResult]) -> str:
    rows = []
    for r in results:
        if r.skipped:
            rows.append({"host": r.host, "variant": r.variant, "train step vs ReLU": "skipped",
                         "vs reference": "", "inference vs ReLU": "", "inf. vs reference": "",
                         "saved for backward vs ReLU": r.skipped, "bytes moved / step": "",
                         "roofline floor vs ReLU": "", "achieved bandwidth": ""})
            continue
        rows.append({"host": r.host, "variant": r.variant,
                     "train step vs ReLU": _fmt(r.train_vs_relu),
                     "vs reference": _fmt(r.train_vs_reference),
                     "inference vs ReLU": _fmt(r.infer_vs_relu),
                     "inf. vs reference": _fmt(r.infer_vs_reference),
                     "saved for backward vs ReLU": (f"{_fmt(r.saved_vs_relu)} "
                                                    f"({(r.saved_bytes or 0) / 2**20:.1f} MiB)"),
                     "bytes moved / step": _mib(r.bytes_moved),
                     "roofline floor vs ReLU": _fmt(r.floor_vs_relu),
                     "achieved bandwidth": _pct(r.bandwidth_fraction)})
    return to_markdown(rows)


def write_bench(results: Sequence[BenchResult], out: str | Path, *, name: str, command: str,
                rounds: int, bandwidth: Mapping[str, float] | None = None,
                load: Sequence[float] | None = None,
                allocator: str | None = None) -> dict[str, Path]:
    """``<out>/<name>.json`` and ``<out>/<name>.md`` (atomically); ``bandwidth`` (bytes/s by
    name), ``load`` (load averages seen during the run) and ``allocator`` (the C library
    allocator's policy, :mod:`attnact.perf.malloc`) are recorded with the table."""
    from attnact.train.provenance import code_identity, current_code

    code = current_code()  # which code made the figures (a dirty tree says so)
    meta = {
        "command": command,
        "code": code, "made_by": f"attnact {code_identity(code)}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": str(torch.__version__), "python": platform.python_version(),
        "machine": platform.machine(), "threads": torch.get_num_threads(), "rounds": rounds,
        "hosts": {h: asdict(resolve_host(h)) for h in dict.fromkeys(r.host for r in results)},
        "bandwidth_bytes_per_s": dict(bandwidth or {}), "load_average": list(load or []),
        "allocator": allocator,
    }
    out = Path(out)
    context = ""
    if bandwidth:
        context += "Measured bandwidth (best of copy, add, sum): " + ", ".join(
            f"{k} {v / 1e9:.1f} GB/s" for k, v in bandwidth.items()) + " (dram: 256 MiB "
        context += ("buffers, the roofline's; cache: 8 MiB). Roofline floor: ReLU's time plus "
                    "the bytes moved beyond ReLU's at the DRAM bandwidth; achieved bandwidth: "
                    "those extra bytes over the extra time (whole step for the bare unit). ")
    if load:
        context += "Load average during the run: " + ", ".join(f"{v:.2f}" for v in load) + ". "
    if allocator:
        context += f"Allocator: {allocator}."
    md = (f"# attnact bench: {name}\n\n`{command}` — {meta['made_by']}, {meta['date']}, "
          f"torch {meta['torch']}, "
          f"{meta['threads']} thread(s), median of {rounds} interleaved rounds; ratios only "
          f"(DESIGN.md, Performance: how to measure). Saved bytes: tensors autograd keeps for "
          f"backward in one training forward, parameters excluded. Compiled-model rows are "
          f"ratios to the compiled ReLU network.\n\n{context}\n\n" + markdown_table(results)
          + "\n")
    return {
        "json": atomic_write_json(out / f"{name}.json",
                                  {"meta": meta, "results": [asdict(r) for r in results]}),
        "md": atomic_write_text(out / f"{name}.md", md),
    }


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")

"""The authors' MXNet Gluon networks (YimianDai/open-atac) as attnact models.

Source: Y. Dai et al., "Attention as Activation", ICPR 2020; the authors'
``model/classification.py`` (``ResNet20V2ATAC`` with ``ResBlockV2ATAC``, ``ResNet50_v1bATAC``
with ``BottleneckV1bATAC``) and ``model/activation.py`` (``ChaATAC``). ``save_parameters``
names every parameter by its place in the network, so the names and shapes alone say which
network a file holds:

=========================================  ==========================================
Gluon ``ResNet20V2ATAC``                   attnact ``resnet_cifar``
=========================================  ==========================================
``features.0`` BatchNorm(scale=False,      ``input_bn`` (no affine; MXNet ignores the
center=False)                              stored gamma, beta must be 0)
``features.1`` 3×3 conv                    ``stem``
``features.{2+s}.{j}`` ResBlockV2ATAC      ``layer{s+1}.{j}``: bn1, conv1, bn2, conv2,
                                           downsample; ``msAA1/2`` → ``act1/2``
``features.{2+S}`` BatchNorm, then the     ``bn``, ``act``
final activation ``features.{3+S}``
``output`` Dense                           ``fc``
=========================================  ==========================================

``ResNet50_v1bATAC`` has torchvision-style names already (``conv1``, ``bn1``,
``layer{s}.{j}.conv1``…``bn3``, ``downsample.0/1``, ``fc``); its ``relu1``/``relu2`` are
attnact's ``act1``/``act2``. A ``ChaATAC`` is ``module.{k}`` children — [GlobalAvgPool], Conv,
BatchNorm, [ReLU], Conv, BatchNorm, Sigmoid — so the indices of its parameterised children give
``use_global`` and ``use_relu``, and its first convolution's shape gives C // r.

Activation sites without ATAC parameters become ReLU: ``replace_act='relu'`` in the authors'
scripts, and a parameter-free unit (ReLU, ELU, SELU, GELU, Swish) cannot be told apart from the
file. Where ATAC sits follows the authors' ``--act-layers``: for ``ResNet20V2ATAC`` with
``act_order='bac'`` the last sites in forward order, with ``'pre'`` the first, which attnact's
activation plan expresses as ``act_fraction`` with ``order='last_first'`` / ``'first_first'``;
for ``ResNet50_v1bATAC`` the last ``act_layers`` stages (attnact's ``act_stages``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from attnact.weights.mxnet_params import read_params
from attnact.weights.preprocess import CIFAR_EVAL, IMAGENET_EVAL, EvalPreprocessing

if TYPE_CHECKING:
    from attnact.models.act_plan import ActSite

__all__ = [
    "ArchitectureError",
    "OpenATACArchitecture",
    "convert_open_atac",
    "infer_architecture",
    "load_open_atac",
]

_BN = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean",
       "running_var": "running_var"}
# attnact's ATAC submodules, in the order ChaATAC's parameterised children come.
_ATAC_PARTS = ("conv1", "bn1", "conv2", "bn2")
# indices of ChaATAC's parameterised children -> (use_global, use_relu)
_ATAC_LAYOUTS: dict[tuple[int, ...], tuple[bool, bool]] = {
    (0, 1, 3, 4): (False, True),
    (0, 1, 2, 3): (False, False),
    (1, 2, 4, 5): (True, True),
    (1, 2, 3, 4): (True, False),
}


class ArchitectureError(ValueError):
    """The parameters match no network of the authors' code that attnact can build."""


@dataclass(frozen=True)
class OpenATACArchitecture:
    """What a parameter file holds, and the attnact model that reproduces it.

    Attributes:
        gluon: the authors' class (``"ResNet20V2ATAC"`` or ``"ResNet50_v1bATAC"``).
        model: attnact registry name (``"resnet_cifar"`` / ``"resnet50_v1b"``).
        kwargs: ``attnact.create_model(model, **kwargs)`` builds the network.
        atac_sites: per attnact activation site (forward order), whether it is an ATAC.
        gluon_sites: the Gluon prefix of each site (``"features.2.0.msAA1"``).
        preprocessing: the authors' evaluation preprocessing for this family.
    """

    gluon: str
    model: str
    kwargs: Mapping[str, Any]
    atac_sites: tuple[bool, ...]
    gluon_sites: tuple[str, ...]
    preprocessing: EvalPreprocessing = field(repr=False)

    def describe(self) -> str:
        n = sum(self.atac_sites)
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.gluon} -> attnact {self.model}({args}); {n} of {len(self.atac_sites)} " \
            "activation sites are ATAC"


# ------------------------------------------------------------------------------- inference


def _fail(name: str, why: str) -> ArchitectureError:
    return ArchitectureError(f"parameter {name!r} does not fit: {why}")


def _count(params: Mapping[str, np.ndarray], fmt: str) -> int:
    """How many consecutive k = 0, 1, … have ``fmt.format(k)`` among the names."""
    k = 0
    while fmt.format(k) in params:
        k += 1
    return k


def _atac_children(params: Mapping[str, np.ndarray], prefix: str) -> list[int]:
    pat = re.compile(re.escape(prefix) + r"\.module\.(\d+)\.")
    found = {int(m.group(1)) for name in params if (m := pat.match(name))}
    return sorted(found)


def _atac_options(
    params: Mapping[str, np.ndarray], sites: list[str]
) -> tuple[int, bool, bool]:
    """(r, use_global, use_relu) shared by every ATAC site; r as the authors' integer --r."""
    layout: tuple[int, ...] | None = None
    pairs = []
    for site in sites:
        idx = tuple(_atac_children(params, site))
        first = f"{site}.module.{idx[0]}.weight" if idx else site
        if idx not in _ATAC_LAYOUTS:
            raise _fail(first, f"a ChaATAC has parameterised children at module indices "
                        f"{list(_ATAC_LAYOUTS)}, this one at {list(idx)}")
        if layout is not None and idx != layout:
            raise _fail(first, f"ChaATAC layout {list(idx)} differs from the first unit's "
                        f"{list(layout)} (attnact builds one kind of unit per network)")
        layout = idx
        w = params.get(first)
        if w is None or w.ndim != 4:
            raise _fail(first, "expected a 1×1 convolution weight (C/r, C, 1, 1)")
        pairs.append((first, int(w.shape[1]), int(w.shape[0])))
    assert layout is not None
    use_global, use_relu = _ATAC_LAYOUTS[layout]
    top = max(c for _, c, _ in pairs)
    for r in range(1, top + 1):  # the smallest integer r with C // r == hidden at every site
        if all(c // r == h for _, c, h in pairs):
            return r, use_global, use_relu
    name, c, h = pairs[0]
    raise _fail(name, f"no integer r gives C // r = hidden at every ATAC site (here C={c}, "
                f"hidden={h})")


def _plan(mask: list[bool], sites: list[str], params: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """ActPlan arguments that put ATAC at exactly the sites in ``mask``."""
    n, k = len(mask), sum(mask)
    if k == 0:
        return {"act": "relu"}
    if k == n:
        return {"act": "atac"}
    if mask == [False] * (n - k) + [True] * k:
        order = "last_first"
    elif mask == [True] * k + [False] * (n - k):
        order = "first_first"
    else:
        odd = next(s for s, m in zip(sites, mask, strict=True) if m)
        raise _fail(f"{odd}.module.{_atac_children(params, odd)[0]}.weight",
                    "ATAC sites are neither the first nor the last sites in forward order, as "
                    "the authors' --act-layers places them")
    return {"act": "atac", "act_fraction": k / n, "order": order}


def _infer_cifar(params: Mapping[str, np.ndarray]) -> OpenATACArchitecture:
    stem = params["features.1.weight"]
    if stem.ndim != 4:
        raise _fail("features.1.weight", f"expected the 3×3 stem convolution, shape {stem.shape}")
    width, in_channels = int(stem.shape[0]), int(stem.shape[1])
    blocks = _count(params, "features.2.{}.bn1.gamma")
    if blocks == 0:
        raise _fail("features.2", "expected stage 1 blocks features.2.{j}.bn1.* (ResBlockV2ATAC)")
    sites = []
    for s in range(3):
        for j in range(blocks):
            sites += [f"features.{2 + s}.{j}.msAA1", f"features.{2 + s}.{j}.msAA2"]
    sites.append("features.6")  # 3 stages: features.5 is the last BatchNorm
    mask = [bool(_atac_children(params, p)) for p in sites]
    kwargs: dict[str, Any] = {
        "blocks": blocks,
        "num_classes": int(params["output.weight"].shape[0]),
        "in_channels": in_channels,
        "width": width,
    }
    plan = _plan(mask, sites, params)
    if any(mask):
        r, use_global, use_relu = _atac_options(params, [p for p, m in zip(sites, mask,
                                                                           strict=True) if m])
        plan.update(r=r, act_kwargs={"use_relu": use_relu, "use_global": use_global})
    kwargs = {**plan, **kwargs}
    return OpenATACArchitecture("ResNet20V2ATAC", "resnet_cifar", kwargs, tuple(mask),
                                tuple(sites), CIFAR_EVAL)


_RESNET50_LAYERS = (3, 4, 6, 3)


def _infer_resnet50(params: Mapping[str, np.ndarray]) -> OpenATACArchitecture:
    sites, mask, stage_atac = [], [], []
    for s, n in enumerate(_RESNET50_LAYERS, start=1):
        got = _count(params, f"layer{s}.{{}}.conv1.weight")
        if got != n:
            name = f"layer{s}.{min(got, n)}.conv1.weight"
            raise _fail(name, f"ResNet-50-v1b has {n} bottlenecks in stage {s}, the file "
                        f"{got} (attnact builds ResNet-50 only)")
        atac = [bool(_atac_children(params, f"layer{s}.{j}.relu{k}"))
                for j in range(n) for k in (1, 2)]
        if any(atac) and not all(atac):
            names = [f"layer{s}.{j}.relu{k}" for j in range(n) for k in (1, 2)]
            first = names[atac.index(True)]
            raise _fail(f"{first}.module.{_atac_children(params, first)[0]}.weight",
                        f"stage {s} has ATAC at some sites only ({names[atac.index(False)]} "
                        "has none); the authors' --act-layers puts it in whole stages")
        stage_atac.append(all(atac))
        sites += [f"layer{s}.{j}.relu{k}" for j in range(n) for k in (1, 2)]
        mask += atac
    act_stages = sum(stage_atac)
    if stage_atac != [False] * (4 - act_stages) + [True] * act_stages:
        s = stage_atac.index(True) + 1
        raise _fail(f"layer{s}.0.relu1.module.0.weight", "ATAC stages are not the last ones, "
                    "as the authors' --act-layers places them")
    kwargs: dict[str, Any] = {
        "act": "atac" if act_stages else "relu",
        "num_classes": int(params["fc.weight"].shape[0]),
        "in_channels": int(params["conv1.weight"].shape[1]),
        "act_stages": act_stages,
    }
    if act_stages:
        atac_sites = [p for p, m in zip(sites, mask, strict=True) if m]
        r, use_global, use_relu = _atac_options(params, atac_sites)
        kwargs.update(r=r, act_kwargs={"use_relu": use_relu, "use_global": use_global})
    # attnact's sites are only those of the ATAC stages; the earlier ReLUs are fixed.
    keep = [i for i, p in enumerate(sites) if int(p[5]) > 4 - act_stages]
    return OpenATACArchitecture(
        "ResNet50_v1bATAC", "resnet50_v1b", kwargs, tuple(mask[i] for i in keep),
        tuple(sites[i] for i in keep), IMAGENET_EVAL
    )


def infer_architecture(params: Mapping[str, np.ndarray]) -> OpenATACArchitecture:
    """Which of the authors' networks ``params`` (name → array, as :func:`read_params` gives)
    holds, and its attnact equivalent.

    Raises:
        ArchitectureError: names or shapes that fit neither ``ResNet20V2ATAC`` nor
            ``ResNet50_v1bATAC`` (the message names the first parameter that does not fit).
    """
    if not params:
        raise ArchitectureError("the parameter file holds no parameters")
    if "features.1.weight" in params and "output.weight" in params:
        return _infer_cifar(params)
    if "conv1.weight" in params and "fc.weight" in params:
        return _infer_resnet50(params)
    first = next(iter(params))
    raise _fail(first, "expected the parameter names of the authors' ResNet20V2ATAC "
                "(features.*, output.*) or ResNet50_v1bATAC (conv1.*, layer{1-4}.*, fc.*) "
                "as Gluon save_parameters writes them")


# ------------------------------------------------------------------------------- mapping


Mapping_ = dict[str, str]


def _map_bn(out: Mapping_, src: str, dst: str) -> None:
    for g, t in _BN.items():
        out[f"{src}.{g}"] = f"{dst}.{t}"


def _map_atac(out: Mapping_, params: Mapping[str, np.ndarray], src: str, dst: str) -> None:
    for k, part in zip(_atac_children(params, src), _ATAC_PARTS, strict=True):
        if part.startswith("conv"):
            out[f"{src}.module.{k}.weight"] = f"{dst}.{part}.weight"
        else:
            _map_bn(out, f"{src}.module.{k}", f"{dst}.{part}")


def _names_cifar(arch: OpenATACArchitecture, params: Mapping[str, np.ndarray]) -> Mapping_:
    out: Mapping_ = {
        "features.0.running_mean": "input_bn.running_mean",
        "features.0.running_var": "input_bn.running_var",
        "features.1.weight": "stem.weight",
        "output.weight": "fc.weight",
        "output.bias": "fc.bias",
    }
    for s in range(3):
        for j in range(arch.kwargs["blocks"]):
            src, dst = f"features.{2 + s}.{j}", f"layer{s + 1}.{j}"
            for bn in ("bn1", "bn2"):
                _map_bn(out, f"{src}.{bn}", f"{dst}.{bn}")
            for conv in ("conv1", "conv2", "downsample"):
                out[f"{src}.{conv}.weight"] = f"{dst}.{conv}.weight"
    _map_bn(out, "features.5", "bn")
    for site, atac in zip(arch.gluon_sites, arch.atac_sites, strict=True):
        if atac:
            m = re.fullmatch(r"features\.(\d)\.(\d+)\.msAA(\d)", site)
            dst = f"layer{int(m[1]) - 1}.{m[2]}.act{m[3]}" if m else "act"
            _map_atac(out, params, site, dst)
    return out


def _names_resnet50(arch: OpenATACArchitecture, params: Mapping[str, np.ndarray]) -> Mapping_:
    out: Mapping_ = {"conv1.weight": "conv1.weight", "fc.weight": "fc.weight",
                     "fc.bias": "fc.bias"}
    _map_bn(out, "bn1", "bn1")
    for s, n in enumerate(_RESNET50_LAYERS, start=1):
        for j in range(n):
            p = f"layer{s}.{j}"
            for k in (1, 2, 3):
                out[f"{p}.conv{k}.weight"] = f"{p}.conv{k}.weight"
                _map_bn(out, f"{p}.bn{k}", f"{p}.bn{k}")
            out[f"{p}.downsample.0.weight"] = f"{p}.downsample.0.weight"
            _map_bn(out, f"{p}.downsample.1", f"{p}.downsample.1")
    for site, atac in zip(arch.gluon_sites, arch.atac_sites, strict=True):
        if atac:
            _map_atac(out, params, site, site.replace(".relu", ".act"))
    return out


def _check_input_bn(params: Mapping[str, np.ndarray]) -> set[str]:
    """The Gluon names that carry no value for attnact (MXNet ignores them too)."""
    beta = params.get("features.0.beta")
    if beta is not None and np.any(beta != 0):
        raise _fail("features.0.beta", "the input BatchNorm(center=False) has a nonzero beta, "
                    "which attnact's affine-free input_bn cannot hold")
    return {"features.0.gamma", "features.0.beta"}  # gamma: BatchNorm(scale=False) fixes it


def convert_open_atac(params: Mapping[str, np.ndarray]) -> nn.Module:
    """The attnact model holding ``params`` (a Gluon ``ResNet20V2ATAC`` / ``ResNet50_v1bATAC``
    parameter dict), in eval mode, float32.

    The model carries ``model.open_atac`` (its :class:`OpenATACArchitecture`) and
    ``model.preprocessing`` (the authors' evaluation preprocessing).

    Raises:
        ArchitectureError: a parameter that fits no known architecture (named), a parameter the
            architecture needs that the file lacks (named), or a shape that differs.
    """
    from attnact.models import create_model

    arch = infer_architecture(params)
    kwargs = dict(arch.kwargs)
    model = create_model(arch.model, **kwargs)
    sites = cast("tuple[ActSite, ...]", model.act_sites)  # set by every registered host
    built = tuple(site.selected and site.unit == "atac" for site in sites)
    if built != arch.atac_sites:  # the plan's rounding or order put a unit elsewhere
        raise ArchitectureError(f"internal: attnact placed ATAC at {built}, the file at "
                                f"{arch.atac_sites}")
    names: Callable[..., Mapping_] = _names_cifar if arch.model == "resnet_cifar" \
        else _names_resnet50
    mapping = names(arch, params)
    ignored = _check_input_bn(params) if arch.model == "resnet_cifar" else set()
    state = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for name, array in params.items():
        if name in ignored:
            continue
        target = mapping.get(name)
        if target is None or target not in state:
            raise _fail(name, f"{arch.describe()} has no place for it")
        if tuple(array.shape) != tuple(state[target].shape):
            raise _fail(name, f"shape {tuple(array.shape)}, but {arch.describe()} needs "
                        f"{tuple(state[target].shape)} for {target}")
        loaded[target] = torch.from_numpy(np.array(array, dtype=np.float32))  # a writable copy
    missing = [k for k in state if k not in loaded and not k.endswith("num_batches_tracked")]
    if missing:
        back = {v: k for k, v in mapping.items()}
        raise ArchitectureError(
            f"the file lacks parameter {back.get(missing[0], missing[0])!r} "
            f"(attnact {missing[0]}) that {arch.describe()} needs"
        )
    state.update(loaded)
    model.load_state_dict(state)
    # any attribute may be set on a module; torch types __setattr__ for tensors and modules
    model.open_atac = arch  # type: ignore[assignment]
    model.preprocessing = arch.preprocessing  # type: ignore[assignment]
    return model.eval()


def load_open_atac(path: str | os.PathLike[str]) -> nn.Module:
    """Read the authors' Gluon ``.params`` file and return the equivalent attnact model in eval
    mode (float32; float16 parameters as the authors' ImageNet run stored them are widened).

    No MXNet is needed: the file is read by :func:`~attnact.weights.mxnet_params.read_params`.

    Raises:
        NotMXNetParamsError: the file is not a Gluon parameter file.
        ArchitectureError: its parameters match no known architecture (the first one that does
            not fit is named).

    Examples:
        A file that is not a Gluon parameter file is refused before anything is built:

        >>> import pathlib, tempfile, attnact
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "model.params"
        >>> _ = path.write_bytes(b"not a params file")
        >>> attnact.load_open_atac(path)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        attnact.weights.mxnet_params.NotMXNetParamsError: ...fewer than the 24-byte header...
    """
    model = convert_open_atac(read_params(path))
    model.open_atac_source = str(path)  # type: ignore[assignment]  # see convert_open_atac
    return model

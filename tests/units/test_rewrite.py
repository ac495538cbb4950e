"""Tests of attnact.units.rewrite: the one home of the module/fx rewriting helpers and of the
site-selection rule shared by convert_activations, fuse_for_inference and ActPlan."""

from __future__ import annotations

import copy
import math
import pathlib
import re
import warnings

import pytest
import torch
from torch import fx, nn

import attnact
from attnact import ATAC, AReLU, convert_activations
from attnact.models import ActPlan
from attnact.units.rewrite import (
    ORDERS,
    LeafTracer,
    alias_paths,
    attach_attribute,
    has_hooks,
    is_attnact_unit,
    module_paths,
    select_sites,
    set_module,
)

# ---------------------------------------------------------------------------------------------
# select_sites: round(f·n) sites, halves up, last first (ATAC paper Fig. 6) or first first
# ---------------------------------------------------------------------------------------------

# (n, fraction, order) -> indices, worked out by hand: f·n, rounded half up, from the end or start.
_TABLE = [
    (0, 0.0, "last_first", []),
    (0, 1.0, "last_first", []),
    (1, 0.0, "last_first", []),
    (1, 0.49, "last_first", []),  # 0.49 sites
    (1, 0.5, "last_first", [0]),  # 0.5 rounds up (Python's round() gives 0)
    (1, 1.0, "first_first", [0]),
    (2, 0.25, "last_first", [1]),  # 0.5 -> 1
    (2, 0.25, "first_first", [0]),
    (3, 0.5, "last_first", [1, 2]),  # 1.5 -> 2
    (3, 0.5, "first_first", [0, 1]),
    (4, 0.125, "last_first", [3]),  # 0.5 -> 1
    (4, 0.6, "last_first", [2, 3]),  # 2.4 -> 2
    (5, 0.5, "last_first", [2, 3, 4]),  # 2.5 -> 3 (round() would give 2)
    (5, 0.5, "first_first", [0, 1, 2]),
    (10, 0.25, "last_first", [7, 8, 9]),  # 2.5 -> 3
    (10, 0.34, "first_first", [0, 1, 2]),  # 3.4 -> 3
    (19, 0.5, "last_first", list(range(9, 19))),  # 9.5 -> 10
    (19, 1.0, "first_first", list(range(19))),
]


@pytest.mark.parametrize(("n", "fraction", "order", "expected"), _TABLE)
def test_select_sites_table(n: int, fraction: float, order: str, expected: list[int]) -> None:
    assert list(select_sites(n, fraction, order)) == expected


# Fig. 6 on the b = 1 host (ResNet-20-v2 family: 6b + 1 = 7 ReLU sites): level k replaces the
# last k of the 7 ReLUs; k/7 in floating point (3/7·7 = 3.0000000000000004) must still give k.
_FIG6_LAST = {
    0: [], 1: [6], 2: [5, 6], 3: [4, 5, 6], 4: [3, 4, 5, 6], 5: [2, 3, 4, 5, 6],
    6: [1, 2, 3, 4, 5, 6], 7: [0, 1, 2, 3, 4, 5, 6],
}


@pytest.mark.parametrize("k", range(8))
def test_fig6_levels_k_over_7(k: int) -> None:
    assert list(select_sites(7, k / 7, "last_first")) == _FIG6_LAST[k]
    assert list(select_sites(7, k / 7, "first_first")) == list(range(k))
    assert list(select_sites(7, k / 7)) == _FIG6_LAST[k]  # last_first is the default


@pytest.mark.parametrize("n", [0, 1, 7, 13, 19])
@pytest.mark.parametrize("fraction", [0.0, 1 / 14, 0.1, 0.25, 0.5, 2 / 3, 1.0])
@pytest.mark.parametrize("order", ORDERS)
def test_act_plan_selects_what_select_sites_says(n: int, fraction: float, order: str) -> None:
    # ActPlan (hosts built with a fraction) and convert_activations (a converted ReLU host) must
    # pick the same sites; ActPlan goes through the one rule.
    plan = ActPlan("atac", num_sites=n, act_fraction=fraction, order=order)
    assert sorted(plan.selected_indices) == list(select_sites(n, fraction, order))


def test_convert_selects_what_select_sites_says() -> None:
    model = nn.Sequential(*(m for _ in range(7) for m in (nn.Linear(4, 4), nn.ReLU())))
    for k in range(8):
        out = convert_activations(model, "arelu", fraction=k / 7)
        assert [s.index for s in out.conversion_report.replaced] == _FIG6_LAST[k]


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((-1, 0.5, "last_first"), "n must be an integer >= 0"),
        ((True, 0.5, "last_first"), "n must be an integer >= 0"),
        ((2.0, 0.5, "last_first"), "n must be an integer >= 0"),
        ((3, 1.5, "last_first"), r"fraction must be a number in \[0, 1\]"),
        ((3, -0.1, "last_first"), r"fraction must be a number in \[0, 1\]"),
        ((3, math.nan, "last_first"), r"fraction must be a number in \[0, 1\]"),
        ((3, True, "last_first"), r"fraction must be a number in \[0, 1\]"),
        ((3, "half", "last_first"), r"fraction must be a number in \[0, 1\]"),
        ((3, 0.5, "last"), "order must be one of 'last_first', 'first_first'"),
        ((3, 0.5, None), "order must be one of"),
    ],
)
def test_select_sites_bad_input(args: tuple, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        select_sites(*args)


# ---------------------------------------------------------------------------------------------
# Module paths
# ---------------------------------------------------------------------------------------------


def _shared_model() -> tuple[nn.Module, nn.Module]:
    shared = nn.ReLU()
    model = nn.Sequential(nn.Linear(2, 2), shared, nn.Sequential(nn.Linear(2, 2), shared))
    return model, shared


def test_set_module_nested_and_top_level() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    unit, top = AReLU(), nn.Tanh()
    set_module(model, "1.1", unit)
    set_module(model, "0", top)
    assert model[1][1] is unit and model[0] is top
    assert [k for k, _ in model.named_modules()] == ["", "0", "1", "1.0", "1.1"]


def test_set_module_unknown_parent_is_an_error() -> None:
    with pytest.raises(AttributeError, match="nope"):
        set_module(nn.Sequential(nn.ReLU()), "nope.relu", nn.ReLU())


def test_alias_paths_and_module_paths_see_every_registration() -> None:
    model, shared = _shared_model()
    assert alias_paths(model, shared) == ["1", "2.1"]  # named_modules() alone gives only "1"
    assert alias_paths(model, nn.ReLU()) == []  # not in the model
    paths = module_paths(model)
    assert paths[id(model)] == [""]
    assert paths[id(shared)] == ["1", "2.1"]
    assert paths[id(model[2][0])] == ["2.0"]
    # a swap through every alias leaves no path at the old module
    unit = AReLU()
    for p in alias_paths(model, shared):
        set_module(model, p, unit)
    assert alias_paths(model, shared) == [] and alias_paths(model, unit) == ["1", "2.1"]


# ---------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "register",
    [
        lambda m: m.register_forward_hook(lambda *a: None),
        lambda m: m.register_forward_pre_hook(lambda *a: None),
        lambda m: m.register_full_backward_hook(lambda *a: None),
        lambda m: m.register_full_backward_pre_hook(lambda *a: None),
    ],
    ids=["forward", "forward_pre", "backward", "backward_pre"],
)
def test_has_hooks_sees_each_kind_and_its_removal(register) -> None:
    m = nn.Conv2d(2, 2, 1)
    assert not has_hooks(m)
    handle = register(m)
    assert has_hooks(m)
    handle.remove()
    assert not has_hooks(m)


def test_has_hooks_is_about_the_module_itself() -> None:
    child = nn.Conv2d(2, 2, 1)
    parent = nn.Sequential(child)
    child.register_forward_hook(lambda *a: None)
    assert has_hooks(child) and not has_hooks(parent)


# ---------------------------------------------------------------------------------------------
# The fx tracer
# ---------------------------------------------------------------------------------------------


class DataDependent(nn.Module):
    """Python control flow on a value: fx cannot trace into it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x


class Host(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.act = ATAC(4)
        self.odd = DataDependent()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.odd(self.act(self.conv(x))))


def _called(graph: fx.Graph) -> list[str]:
    return [n.target for n in graph.nodes if n.op == "call_module"]


def test_tracer_keeps_attnact_units_and_leaf_types_opaque() -> None:
    model = Host().eval()
    graph = LeafTracer((DataDependent,)).trace(model)
    # ATAC's inner conv/bn/relu are not traced into; the data-dependent module is one call
    assert _called(graph) == ["conv", "act", "odd", "relu"]
    gm = fx.GraphModule(model, graph)
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(gm(x), model(x))


def test_tracer_leaf_predicate() -> None:
    model = Host().eval()
    graph = LeafTracer(leaf=lambda m: isinstance(m, (DataDependent, nn.ReLU))).trace(model)
    assert _called(graph) == ["conv", "act", "odd", "relu"]


def test_tracer_stack_names_the_module_that_failed() -> None:
    tracer = LeafTracer()
    with pytest.raises(fx.proxy.TraceError):
        tracer.trace(Host().eval())
    assert [type(m) for m in tracer.stack] == [DataDependent]  # the root is not a call


def test_plain_fx_tracer_would_trace_into_units_and_fail() -> None:
    # the contrast that makes the leaf rule matter: torch's own tracer goes inside ATAC and
    # fails on its shape check
    class NoOdd(Host):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.act(self.conv(x)))

    model = NoOdd().eval()
    with pytest.raises(fx.proxy.TraceError):
        fx.Tracer().trace(model)
    assert _called(LeafTracer().trace(model)) == ["conv", "act", "relu"]


def test_is_attnact_unit() -> None:
    assert is_attnact_unit(ATAC(4)) and is_attnact_unit(AReLU())
    assert not is_attnact_unit(nn.ReLU()) and not is_attnact_unit(Host())


def test_converted_graph_module_survives_save_and_load(tmp_path: pathlib.Path) -> None:
    # loading re-traces with a no-argument subclass of the tracer class recorded in the module
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu = nn.Conv2d(3, 4, 1), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.relu(self.conv(x)) + 1)

    out = convert_activations(Twice(), "arelu").eval()
    assert isinstance(out, fx.GraphModule)
    path = tmp_path / "gm.pt"
    torch.save(out, path)
    back = torch.load(path, weights_only=False).eval()
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(back(x), out(x))


# ---------------------------------------------------------------------------------------------
# attach_attribute
# ---------------------------------------------------------------------------------------------


def test_attach_attribute_survives_deepcopy_of_a_graph_module() -> None:
    gm = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    report = object()
    attach_attribute(gm, "some_report", report)
    assert gm.some_report is report
    assert copy.deepcopy(gm).some_report is not None

    plain_gm = fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2)))
    plain_gm.some_report = report  # a plain setattr is lost by GraphModule's deepcopy
    assert not hasattr(copy.deepcopy(plain_gm), "some_report")


def test_attach_attribute_on_a_plain_module() -> None:
    m = nn.Linear(2, 2)
    attach_attribute(m, "tag", 3)
    assert m.tag == 3 and copy.deepcopy(m).tag == 3


# ---------------------------------------------------------------------------------------------
# convert_activations' warnings point at the user's call (its steps are nested functions)
# ---------------------------------------------------------------------------------------------


def test_no_match_warning_points_at_the_caller() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        convert_activations(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), "arelu")
    hits = [w for w in caught if "matched no activation call site" in str(w.message)]
    assert len(hits) == 1 and hits[0].filename == __file__


def test_fallback_warning_points_at_the_caller() -> None:
    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(x) if x.sum() > 0 else -x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = convert_activations(Untraceable(), "arelu")
    hits = [w for w in caught if "module registration order" in str(w.message)]
    assert len(hits) == 1 and hits[0].filename == __file__
    assert isinstance(out.relu, AReLU)


# ---------------------------------------------------------------------------------------------
# One home: no other module of the package defines these helpers again
# ---------------------------------------------------------------------------------------------

_SRC = pathlib.Path(attnact.__file__).parent
_COPIES = {
    "def _set_module / set_module": re.compile(r"^\s*def _?set_module\(", re.M),
    "def _alias_paths": re.compile(r"^\s*def _?alias_paths\(", re.M),
    "def _has_hooks": re.compile(r"^\s*def _?has_hooks\(", re.M),
    "a subclass of fx.Tracer": re.compile(r"^\s*class \w+\((torch\.)?fx\.Tracer\)", re.M),
    "the round-half-up selection": re.compile(r"floor\([^)\n]*\*[^)\n]*\+ 0\.5\)"),
    "the preserved-attributes key": re.compile(r"_user_preserved_attributes"),
}


def test_the_shared_helpers_have_one_home() -> None:
    home = _SRC / "units" / "rewrite.py"
    found = [
        f"{path.relative_to(_SRC)}: {what}"
        for path in sorted(_SRC.rglob("*.py")) if path != home
        for what, pattern in _COPIES.items() if pattern.search(path.read_text())
    ]
    assert found == []
    text = home.read_text()
    assert all(p.search(text) for p in _COPIES.values())  # the patterns do match the home

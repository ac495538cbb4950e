"""Conventions every unit shares: the derivative at exactly x = 0, and the refusal of integer and
bool inputs (issue #12)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attnact
from attnact.units.arelu import arelu, arelu_reference, elsa, elsa_reference
from attnact.units.registry import activation_spec, create_act_layer, list_activations

# --- x = 0 ------------------------------------------------------------------------------------
# F = R + L (AReLU Eq. 7) differentiated term by term: R'(0) = 0 as torch.relu (and the
# authors' relu-based code) has it, L'(0) = σ(β) because Eq. (5) puts x = 0 in the x ≥ 0 branch.


def _grad_at(fn, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_()
    fn(x).sum().backward()
    return x.grad


@pytest.mark.parametrize("beta", [2.0, -1.0])
@pytest.mark.parametrize(
    "path",
    ["arelu_function", "arelu_reference", "arelu_module", "elsa_function", "elsa_reference",
     "elsa_relu_module", "elsa_registry"],
)
def test_input_gradient_at_zero_is_sigmoid_beta_on_every_path(path: str, beta: float) -> None:
    a = torch.tensor([0.75], dtype=torch.float64)
    b = torch.tensor([beta], dtype=torch.float64)
    relu = nn.ReLU()
    fns = {
        "arelu_function": lambda x: arelu(x, a, b, implementation="function"),
        "arelu_reference": lambda x: arelu_reference(x, a, b),
        "arelu_module": attnact.AReLU(0.75, beta).double(),
        "elsa_function": lambda x: elsa(x, a, b, relu, implementation="function"),
        "elsa_reference": lambda x: elsa_reference(x, a, b, relu),
        "elsa_relu_module": attnact.ELSA("relu", 0.75, beta).double(),
        "elsa_registry": create_act_layer("elsa_relu", alpha=0.75, beta=beta).double(),
    }
    # +0 and -0 (what zero padding and a ReLU feed), next to the two branches
    x = torch.tensor([0.0, -0.0, 1.5, -1.5], dtype=torch.float64)
    got = _grad_at(fns[path], x)
    sig = torch.sigmoid(b).item()
    want = torch.tensor([sig, sig, 1 + sig, 0.75], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-15, atol=0)


def test_arelu_equals_elsa_relu_in_gradients_on_zero_padded_maps() -> None:
    torch.manual_seed(0)
    x = torch.nn.functional.pad(torch.relu(torch.randn(2, 3, 4, 4)), (1, 1, 1, 1))
    assert (x == 0).sum() > 40
    m1, m2 = attnact.AReLU(), attnact.ELSA("relu")
    g1 = torch.randn_like(x)
    outs = []
    for m in (m1, m2):
        xx = x.clone().requires_grad_()
        y = m(xx)
        y.backward(g1)
        outs.append((y.detach(), xx.grad, m.alpha.grad, m.beta.grad))
    for u, v in zip(*outs, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-6, atol=1e-7)


# --- integer and bool inputs ------------------------------------------------------------------


def _attnact_units() -> list[str]:
    names = []
    for name in list_activations():
        m = create_act_layer(name, channels=4)
        if not type(m).__module__.startswith("torch."):  # torch.nn's own classes: its rules
            names.append(name)
    return names


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
@pytest.mark.parametrize("name", _attnact_units())
def test_every_unit_refuses_integer_and_bool_inputs(name: str, dtype: torch.dtype) -> None:
    spec = activation_spec(name)
    m = create_act_layer(name, channels=4)
    x = (torch.arange(2 * 4 * 3 * 3).reshape(2, 4, 3, 3) % 3).to(dtype)
    if not spec.elementwise or spec.needs_channels:
        x = x.reshape(2, 4, 3, 3)
    with pytest.raises(TypeError, match=f"needs a floating-point input.*{dtype}"):
        m(x)


def test_arelu_on_integers_was_truncated_and_is_now_refused() -> None:
    # the example: AReLU()(tensor([3, -3])) returned [3, 0]
    with pytest.raises(TypeError, match="AReLU needs a floating-point input"):
        attnact.AReLU()(torch.tensor([3, -3]))
    y = attnact.AReLU()(torch.tensor([3.0, -3.0]))
    torch.testing.assert_close(y, torch.tensor([3 * (1 + torch.sigmoid(torch.tensor(2.0))), -2.7]))


@pytest.mark.slow
def test_compiled_arelu_kernel_keeps_the_zero_convention() -> None:
    # the fused backward kernel compiled by inductor (where it selects with torch.where)
    attnact.set_fused(True)
    try:
        a = torch.tensor([0.75])
        b = torch.tensor([2.0])
        x = torch.tensor([0.0, -0.0, 1.5, -1.5] * 64, requires_grad=True)
        arelu(x, a, b, implementation="function").sum().backward()
    finally:
        attnact.set_fused(None)
    sig = torch.sigmoid(b).item()
    want = torch.tensor([sig, sig, 1 + sig, 0.75] * 64)
    torch.testing.assert_close(x.grad, want, rtol=1e-6, atol=0)

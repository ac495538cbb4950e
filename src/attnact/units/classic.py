"""Fixed (non-learnable) activations compared in both papers, registered under canonical names.

torch.nn already implements these exactly; where its module does not take ``inplace`` we add a
thin subclass that accepts and ignores it, so every unit fits an ``act_layer=`` slot, and that
refuses integer and bool inputs as every attnact unit does (:mod:`attnact.units.inputs`).
Defaults are those of each function's original paper (noted per registration).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnact.units.inputs import check_float_input
from attnact.units.registry import register_activation

__all__ = ["GELU", "Sigmoid", "Softplus", "Swish", "Tanh"]

# --- torch.nn classes that already accept ``inplace`` -------------------------------------------

register_activation(
    "relu", formula="max(0, x)", source="Nair & Hinton, ICML 2010"
)(nn.ReLU)
register_activation(
    "relu6", formula="min(max(0, x), 6)", source="Krizhevsky, tech. report 2010"
)(nn.ReLU6)
register_activation(
    "leaky_relu",
    formula="x if x >= 0 else 0.01 x",
    source="Maas, Hannun & Ng, ICML workshop 2013",
)(nn.LeakyReLU)
register_activation(
    "rrelu",
    formula="x if x >= 0 else a x, a ~ U(1/8, 1/3) in training, (1/8+1/3)/2 in eval",
    source="Xu, Wang, Chen & Li, arXiv 2015",
)(nn.RReLU)
register_activation(
    "elu",
    formula="x if x > 0 else exp(x) - 1",
    source="Clevert, Unterthiner & Hochreiter, ICLR 2016",
)(nn.ELU)
register_activation(
    "celu", formula="max(0, x) + min(0, a (exp(x/a) - 1)), a = 1", source="Barron, arXiv 2017"
)(nn.CELU)
register_activation(
    "selu",
    formula="l (x if x > 0 else a (exp(x) - 1)), l = 1.0507, a = 1.6733",
    source="Klambauer, Unterthiner, Mayr & Hochreiter, NeurIPS 2017",
)(nn.SELU)
register_activation(
    "mish", formula="x tanh(softplus(x))", source="Misra, BMVC 2020"
)(nn.Mish)
register_activation(
    "hard_swish", formula="x relu6(x + 3) / 6", source="Howard et al., ICCV 2019 (MobileNetV3)"
)(nn.Hardswish)
register_activation(
    "hard_sigmoid", formula="relu6(x + 3) / 6", source="Howard et al., ICCV 2019 (MobileNetV3)"
)(nn.Hardsigmoid)


# --- thin subclasses that add the ``inplace`` argument ------------------------------------------


@register_activation(
    "gelu", formula="x Phi(x) (Phi: standard normal CDF)", source="Hendrycks & Gimpel, arXiv 2016"
)
class GELU(nn.GELU):
    """GELU, x·Φ(x) (Hendrycks & Gimpel, 2016). ``inplace`` is accepted and ignored."""

    def __init__(self, approximate: str = "none", inplace: bool = False) -> None:
        super().__init__(approximate=approximate)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_float_input(input, "GELU")
        return super().forward(input)


register_activation(
    "gelu_tanh",
    formula="0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))",
    source="Hendrycks & Gimpel, arXiv 2016 (tanh approximation)",
    defaults={"approximate": "tanh"},
)(GELU)


@register_activation(
    "softplus", formula="log(1 + exp(x))", source="Glorot, Bordes & Bengio, AISTATS 2011"
)
class Softplus(nn.Softplus):
    """Softplus, log(1 + exp(βx))/β with β = 1. ``inplace`` is accepted and ignored."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0, inplace: bool = False) -> None:
        super().__init__(beta=beta, threshold=threshold)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_float_input(input, "Softplus")
        return super().forward(input)


@register_activation("sigmoid", formula="1 / (1 + exp(-x))", source="classical (logistic)")
class Sigmoid(nn.Sigmoid):
    """Logistic sigmoid. ``inplace`` is accepted and ignored."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_float_input(input, "Sigmoid")
        return super().forward(input)


@register_activation("tanh", formula="tanh(x)", source="classical")
class Tanh(nn.Tanh):
    """Hyperbolic tangent. ``inplace`` is accepted and ignored."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        check_float_input(input, "Tanh")
        return super().forward(input)


@register_activation(
    "swish", formula="x sigmoid(b x), b = 1", source="Ramachandran, Zoph & Le, ICLR workshop 2018"
)
class Swish(nn.Module):
    """Swish, x·σ(βx) (Ramachandran et al., 2018).

    With the default β = 1 (the variant both papers compare against, "Swish-1", equal to SiLU) it
    is non-learnable and runs as ``F.silu``. ``learnable=True`` makes β a trainable scalar, the
    paper's "Swish-β". ``inplace`` is accepted and ignored: the input is needed for backward.
    """

    def __init__(self, beta: float = 1.0, learnable: bool = False, inplace: bool = False) -> None:
        super().__init__()
        self.learnable = learnable
        if learnable:
            self.beta = nn.Parameter(torch.tensor(float(beta)))
        else:
            self.register_buffer("beta", torch.tensor(float(beta)), persistent=False)
        self._is_silu = (not learnable) and float(beta) == 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_float_input(x, "Swish")
        if self._is_silu:
            return F.silu(x)
        return x * torch.sigmoid(self.beta.to(x.dtype) * x)

    def extra_repr(self) -> str:
        return f"beta={float(self.beta):g}, learnable={self.learnable}"


register_activation(
    "silu", formula="x sigmoid(x)", source="Elfwing, Uchibe & Doya, Neural Networks 2018"
)(nn.SiLU)

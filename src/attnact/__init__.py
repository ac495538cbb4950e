"""attnact: attentional activation functions for PyTorch.

Implements ATAC (Dai et al., "Attention as Activation", ICPR 2020) and AReLU / ELSA (Chen et al.,
"AReLU: Attention-based Rectified Linear Unit", 2020), the activations they are compared with,
a registry and a converter that puts any of them into an existing model.
"""

from attnact.fuse import fuse_for_inference
from attnact.models import create_model, list_models, model_spec
from attnact.units import (
    ATAC,
    ELSA,
    ActivationSpec,
    AReLU,
    ConversionReport,
    ReplacedSite,
    SEActivation,
    SkippedSite,
    activation_spec,
    convert_activations,
    create_act_layer,
    fused_mode,
    list_activations,
    memory_efficient_mode,
    register_activation,
    set_fused,
    set_memory_efficient,
)
from attnact.weights import load_open_atac

__version__ = "0.1.0"

__all__ = [
    "ATAC",
    "ELSA",
    "AReLU",
    "ActivationSpec",
    "ConversionReport",
    "ReplacedSite",
    "SEActivation",
    "SkippedSite",
    "__version__",
    "activation_spec",
    "convert_activations",
    "create_act_layer",
    "create_model",
    "fuse_for_inference",
    "fused_mode",
    "list_activations",
    "list_models",
    "load_open_atac",
    "memory_efficient_mode",
    "model_spec",
    "register_activation",
    "set_fused",
    "set_memory_efficient",
]

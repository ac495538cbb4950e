"""Activation units. Importing this package registers every unit with the registry."""

# Import order matters only in that ELSA variants are generated last, over everything registered.
from attnact.units import classic, learnable, maxout, xunit  # noqa: F401  (registration)
from attnact.units.arelu import ELSA, AReLU, elsa_gate, register_elsa_variants
from attnact.units.arelu_function import AReLUFunction, ELSAFunction
from attnact.units.atac import (
    ATAC,
    SEActivation,
    memory_efficient_enabled,
    memory_efficient_mode,
    set_memory_efficient,
)
from attnact.units.atac_function import ATACFunction
from attnact.units.convert import ConversionReport, ReplacedSite, SkippedSite, convert_activations
from attnact.units.fused import fused_mode, fused_status, set_fused
from attnact.units.norm_act import fuse_norm_act, norm_then_act
from attnact.units.registry import (
    ActivationSpec,
    activation_spec,
    create_act_layer,
    list_activations,
    register_activation,
)

register_elsa_variants()

__all__ = [
    "ATAC",
    "ELSA",
    "AReLU",
    "AReLUFunction",
    "ATACFunction",
    "ActivationSpec",
    "ConversionReport",
    "ELSAFunction",
    "ReplacedSite",
    "SEActivation",
    "SkippedSite",
    "activation_spec",
    "convert_activations",
    "create_act_layer",
    "elsa_gate",
    "fuse_norm_act",
    "fused_mode",
    "fused_status",
    "list_activations",
    "memory_efficient_enabled",
    "memory_efficient_mode",
    "norm_then_act",
    "register_activation",
    "set_fused",
    "set_memory_efficient",
]

# ruff: noqa: E402, E501  (a measuring script: thread count set before attnact's import; closures called at once)
"""Compiled resnet_cifar b3 training step: ReLU vs AReLU (auto, reference) under torch.compile(model)."""

import os
import sys

import torch

torch.set_num_threads(2)
from attnact.perf.bench import Variant, run_bench

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
which = sys.argv[2] if len(sys.argv) > 2 else "arelu"
V = [
    Variant("relu", "relu"),
    Variant("relu (compiled model)", "relu", compile_model=True, baseline="relu (compiled model)"),
]
if "arelu" in which:
    V += [
        Variant("arelu", "arelu"),
        Variant(
            "arelu (compiled model)",
            "arelu",
            compile_model=True,
            baseline="relu (compiled model)",
            reference="arelu (reference, compiled model)",
        ),
        Variant(
            "arelu (reference, compiled model)",
            "arelu",
            {"implementation": "reference"},
            compile_model=True,
            baseline="relu (compiled model)",
        ),
    ]
if "elsa" in which:
    V += [
        Variant("elsa_gelu", "elsa_gelu"),
        Variant(
            "elsa_gelu (compiled model)",
            "elsa_gelu",
            compile_model=True,
            baseline="relu (compiled model)",
        ),
    ]
print(os.getloadavg())
res = run_bench(["resnet_cifar_b3"], V, rounds=rounds, bandwidth={"dram": 2e10}, log=print)
print(os.getloadavg())
for r in res:
    print(
        f"{r.variant:40s} train {r.train_vs_relu:.3f} infer {r.infer_vs_relu:.3f} saved {r.saved_vs_relu:.2f}"
    )

# ruff: noqa: E402  (a measuring script: thread count set before attnact's import; closures called at once)
"""Inference (eval, no_grad) of resnet_cifar b=3, batch 128, 32x32, channels_last, 2 threads:
ATAC networks after fuse_for_inference against the ReLU network, interleaved medians."""

import os
import sys

import torch

torch.set_num_threads(2)
from attnact import create_model, fuse_for_inference
from attnact.fuse import FusedATAC
from attnact.perf.steptime import interleaved_medians

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
print("load", os.getloadavg(), flush=True)
torch.manual_seed(0)
x = torch.randn(128, 3, 32, 32).to(memory_format=torch.channels_last)


def build(act):
    torch.manual_seed(0)
    m = create_model("resnet_cifar", act=act, num_classes=10, blocks=3)
    return m.to(memory_format=torch.channels_last).eval()


relu, atac = build("relu"), build("atac")
nets = {
    "relu": relu,
    "relu (fused)": fuse_for_inference(relu),
    "atac": atac,
    "atac (fused, native)": fuse_for_inference(atac),
}
composition = fuse_for_inference(atac)
for m in composition.modules():
    if isinstance(m, FusedATAC):
        m._native_fits = lambda x: False  # the composition of before: the fallback path
nets["atac (fused, composition)"] = composition


def call(m):
    def f():
        with torch.no_grad():
            m(x)

    return f


t = interleaved_medians({k: call(m) for k, m in nets.items()}, rounds=rounds, warmup=3)
print("load", os.getloadavg())
for k in nets:
    print(f"{k:28s} vs relu {t[k] / t['relu']:.3f}  vs relu (fused) {t[k] / t['relu (fused)']:.3f}")

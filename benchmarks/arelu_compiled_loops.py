# ruff: noqa: E402, B023  (a measuring script: thread count set before attnact's import; closures called at once)
"""Deterministic fusion evidence: the loops over activation-sized data in inductor's generated
code for a compiled training step of conv -> BN -> act -> conv (channels_last, 128x16x32x32)."""

import re
import sys

import torch
from torch import nn
from torch._inductor.utils import run_and_get_code

torch.set_num_threads(2)
from attnact import create_act_layer

N, C, H, W = 128, 16, 32, 32


def passes(code):
    # an outer loop over N*H*W positions (channels inner) or over all N*C*H*W elements
    return len(re.findall(rf"x\d+<static_cast<int64_t>\(({N * H * W}|{N * C * H * W})L\)", code))


for act in sys.argv[1:]:
    name, _, impl = act.partition(":")
    kw = {"implementation": impl} if impl else {}
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(C, C, 3, padding=1, bias=False),
        nn.BatchNorm2d(C),
        create_act_layer(name, channels=C, **kw),
        nn.Conv2d(C, C, 3, padding=1, bias=False),
    ).to(memory_format=torch.channels_last)
    x = torch.randn(N, C, H, W).to(memory_format=torch.channels_last)
    c = torch.compile(m)

    def f():
        c(x).square().mean().backward()

    _, codes = run_and_get_code(f)
    kernels = [re.findall(r"^(cpp_fused_\w+) = ", code, re.M) for code in codes]
    print(
        f"{act:22s} forward: {len(kernels[0])} kernels, {passes(codes[0])} loops over the map; "
        f"backward: {len(kernels[1])} kernels, {passes(codes[1])} loops over the map",
        flush=True,
    )

# ruff: noqa: E402  (a measuring script: the thread count is set before attnact's import)
"""One BatchNorm-then-ATAC node (norm_then_act, the networks' default path) at the three stage
shapes of resnet_cifar, batch 128, channels_last: forward, and forward + backward, mean of 10
calls after 3 warm-up calls, at the thread count given (default 1). Absolute times of one
process: compare the two thread counts, or the stages, never across machines."""

import sys
import time

import torch

torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
from attnact.units import ATAC
from attnact.units.norm_act import norm_then_act

torch.manual_seed(0)
print("threads", torch.get_num_threads())
for shape in [(128, 16, 32, 32), (128, 32, 16, 16), (128, 64, 8, 8)]:
    x = torch.randn(*shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(*shape).contiguous(memory_format=torch.channels_last)
    bn, act = torch.nn.BatchNorm2d(shape[1]).train(), ATAC(shape[1]).train()
    for _ in range(3):
        norm_then_act(bn, act, x).backward(g)
    t0 = time.perf_counter()
    for _ in range(10):
        norm_then_act(bn, act, x)
    t1 = time.perf_counter()
    for _ in range(10):
        norm_then_act(bn, act, x).backward(g)
    t2 = time.perf_counter()
    fwd, both = (t1 - t0) * 100, (t2 - t1) * 100  # ms per call
    print(f"{'x'.join(map(str, shape)):<14} forward {fwd:6.2f} ms   forward+backward "
          f"{both:6.2f} ms   backward {both - fwd:6.2f} ms")

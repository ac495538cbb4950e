"""MNIST-Conv (the AReLU experiments' host) in NCHW and channels_last, side by side in one
process, for every activation of arelu-convergence's grid and a few ELSA wrappers: the
training step's forward + backward at batch 128, one thread (the run store's setting), median of
5 interleaved rounds of 3 steps, and the largest relative difference between the two layouts'
parameter gradients on the same batch (RReLU draws its slopes at random: its gradients differ
by design). Absolute times of one process: read the ratio."""

import copy
import time

import torch
import torch.nn.functional as F

import attnact
from attnact.experiments.arelu_mnist import ACTIVATIONS

torch.set_num_threads(1)


def step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.item()


def main() -> None:
    acts = [*ACTIVATIONS, "elsa_relu", "elsa_tanh", "elsa_prelu"]
    print("| activation | NCHW ms | channels_last ms | ratio | gradient rel. difference |")
    print("|---|---|---|---|---|")
    for act in acts:
        torch.manual_seed(0)
        nchw = attnact.create_model("mnist_conv", act=act)
        cl = copy.deepcopy(nchw).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        x = torch.randn(128, 1, 28, 28)
        y = torch.randint(0, 10, (128,))
        inputs = {"nchw": (nchw, x), "cl": (cl, x.contiguous(memory_format=torch.channels_last))}
        grads = {}
        for name, (m, xi) in inputs.items():
            step(m, xi, y)
            grads[name] = [p.grad.clone() for p in m.parameters() if p.grad is not None]
        diff = max(((a - b).abs().max() / (b.abs().max() + 1e-12)).item()
                   for a, b in zip(grads["cl"], grads["nchw"], strict=True))
        times: dict[str, list[float]] = {k: [] for k in inputs}
        for _ in range(5):
            for name, (m, xi) in inputs.items():
                t0 = time.perf_counter()
                for _ in range(3):
                    step(m, xi, y)
                times[name].append((time.perf_counter() - t0) / 3 * 1e3)
        a, b = (sorted(times[k])[2] for k in ("nchw", "cl"))
        print(f"| {act} | {a:.1f} | {b:.1f} | {b / a:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()

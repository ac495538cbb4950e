"""Time of the first AReLU, ELSA and ATAC training step in a fresh process, cold and warm cache.

What the first call of a unit pays once per process: building (or loading) the native C++
operators (``torch.utils.cpp_extension``, cached under ``TORCH_EXTENSIONS_DIR``) and compiling
the element-wise kernels with ``torch.compile`` (inductor, cached under
``TORCHINDUCTOR_CACHE_DIR``). "Cold": both directories fresh and empty; "warm": the directories a
cold run just filled. Cold and warm runs alternate, each in a new Python process.

    .venv/bin/python benchmarks/first_forward.py --repeats 3 [--no-native]

Absolute wall times on a shared machine: the load average is printed with each run, and the
results belong in benchmarks/first-forward.md, not in docstrings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# Runs in the child process: one forward + backward per unit, in training mode, each timed;
# then the same call again (already built and compiled) for comparison.
CHILD = r"""
import json, time
t0 = time.perf_counter()
import torch
import attnact
from attnact.units import native
out = {"import_s": time.perf_counter() - t0}
torch.manual_seed(0)
units = {
    "arelu": (attnact.AReLU(), (8, 16, 32, 32)),
    "elsa": (attnact.ELSA("relu"), (8, 16, 32, 32)),
    # large enough for ATAC's fast path on CPU (attnact.units.atac.CPU_FAST_PATH_MIN)
    "atac": (attnact.ATAC(16), (64, 16, 32, 32)),
}
for name, (unit, shape) in units.items():
    for call in ("first", "second"):
        x = torch.randn(*shape, requires_grad=True)
        t = time.perf_counter()
        unit(x).sum().backward()
        out[f"{name}_{call}_s"] = time.perf_counter() - t
out["atac_path"] = units["atac"][0].path_for(torch.randn(64, 16, 32, 32))
out["native"] = native.why_not() or "built"
print("RESULT " + json.dumps(out))
"""


def run_child(ext_dir: str, inductor_dir: str, no_native: bool) -> dict[str, object]:
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=ext_dir, TORCHINDUCTOR_CACHE_DIR=inductor_dir)
    if no_native:
        env["ATTNACT_NO_NATIVE"] = "1"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, check=True)
    total = time.perf_counter() - t
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["process_s"] = total
    result["loadavg_1m"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-native", action="store_true",
                        help="ATTNACT_NO_NATIVE=1: the autograd Functions and their compiled "
                             "kernels only")
    args = parser.parse_args()
    rows = []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="attnact-cold-") as root:
            ext, ind = os.path.join(root, "ext"), os.path.join(root, "inductor")
            for state in ("cold", "warm"):
                row = {"repeat": i, "cache": state, **run_child(ext, ind, args.no_native)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\ncache  process  first-arelu  first-elsa  first-atac  load")
    for r in rows:
        print(f"{r['cache']:5}  {r['process_s']:6.1f}s  {r['arelu_first_s']:10.1f}s  "
              f"{r['elsa_first_s']:9.1f}s  {r['atac_first_s']:9.1f}s  {r['loadavg_1m']:.2f}")


if __name__ == "__main__":
    main()

"""``attnact bench``: see :mod:`attnact.perf.bench`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

__all__ = ["add_bench_subparser"]


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from attnact._checks import check_directory_argument
    from attnact.perf.bench import VARIANTS, resolve_host, run_bench, timestamp, write_bench

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.rounds < 1:
        raise ValueError(f"--rounds must be >= 1, got {args.rounds}")
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {args.warmup}")
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if not hosts:
        raise ValueError(f"--hosts {args.hosts!r} names no host")
    check_directory_argument("--out", args.out)
    if args.name is not None and (not args.name.strip() or "/" in args.name
                                  or args.name in (".", "..")):
        raise ValueError(f"--name must be a file name stem (no '/'), got {args.name!r}")
    wanted = [v.strip() for v in args.variants.split(",")] if args.variants else None
    variants = [v for v in VARIANTS if wanted is None or v.label in wanted or v.act in wanted]
    if wanted is not None and not any(v.label != "relu" for v in variants):
        raise ValueError(f"--variants {args.variants}: none known (labels: "
                         f"{', '.join(v.label for v in VARIANTS)})")
    if args.no_compiled_models:
        variants = [v for v in variants if not v.compile_model]
    if not any(v.label == "relu" for v in variants):
        variants.insert(0, VARIANTS[0])
    labels = {v.label for v in variants}
    variants += [b for b in VARIANTS
                 if b.label in {v.baseline for v in variants} - labels]
    for host in hosts:  # every name checked before anything is measured
        resolve_host(host)
    from attnact.perf.malloc import keep_freed_memory
    from attnact.perf.roofline import measure_bandwidth

    # before anything is allocated for the measurement: page faults of memory the C library
    # gave back between steps are not the models' cost (attnact.perf.malloc)
    allocator = "C library defaults" if args.default_malloc else (
        keep_freed_memory() or "C library defaults (not glibc: nothing changed)")
    load = [os.getloadavg()[0]]
    bandwidth = {"dram": measure_bandwidth()["best"],
                 "cache": measure_bandwidth(8 * 2**20, repeats=30)["best"]}
    results = run_bench(hosts, variants, rounds=args.rounds, warmup=args.warmup,
                        log=None if args.quiet else lambda m: print(m, file=sys.stderr),
                        bandwidth=bandwidth)
    load.append(os.getloadavg()[0])
    command = "attnact bench " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    files = write_bench(results, args.out, name=args.name or f"bench-{timestamp()}",
                        command=command.strip(), rounds=args.rounds, bandwidth=bandwidth,
                        load=load, allocator=allocator)
    print(files["md"].read_text())
    for kind, path in files.items():
        print(f"{kind:<5} {path}")
    return 0


def add_bench_subparser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="time and memory of the units and whole models, as ratios to ReLU",
        description=(
            "Training-step time, inference time and bytes saved for backward of each unit "
            "variant (fast, memory-efficient, reference) alone and in whole models, as ratios "
            "to ReLU and to the unit's reference implementation, measured side by side in one "
            "process (medians of interleaved rounds). Writes <out>/<name>.json and .md."
        ),
    )
    p.add_argument("--hosts", default="unit,resnet_cifar_b3,mnist_conv,resnet50_v1b",
                   help="comma-separated: unit, resnet_cifar_b3, mnist_conv, resnet50_v1b, or "
                        "MODEL@DATASET (any model at that dataset's input size)")
    p.add_argument("--variants", help="comma-separated labels or unit names (default: all)")
    p.add_argument("--rounds", type=int, default=15, help="timed interleaved rounds")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per variant first")
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    p.add_argument("--out", default="benchmarks", help="output directory")
    p.add_argument("--name", help="file name stem (default: bench-<timestamp>)")
    p.add_argument("--no-compiled-models", action="store_true",
                   help="leave out the variants under torch.compile(model) (they compile first)")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave the C library's allocator at its defaults (by default glibc is "
                        "told to keep freed memory, so that page faults of memory it gave back "
                        "between steps stay out of the ratios; attnact.perf.malloc)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_bench)
    return p

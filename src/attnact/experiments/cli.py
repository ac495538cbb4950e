"""``attnact reproduce``: run a paper experiment's grid and write its report.

Examples::

    attnact reproduce --list
    attnact reproduce --claims                            # reports/CLAIMS.md from the reports
    attnact reproduce atac-ablation                       # quick preset, 2 seeds, 1 worker
    attnact reproduce atac-ablation --preset paper --workers 4 --seeds 3
    attnact reproduce atac-ablation --where b=1,2 --dry-run
    attnact reproduce atac-imagenet --preset paper --report-only
    torchrun --nproc-per-node 8 -m attnact reproduce atac-imagenet --preset paper --backend inline

Re-running a command skips the runs that finished and resumes the others from their
checkpoints. Exit codes: 0 every run of the grid finished, 1 some did not (the report shows what
did), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from attnact._checks import check_directory_argument, check_positive_int
from attnact.experiments.keys import RunSpec, filter_specs
from attnact.experiments.reproduction import reproduce
from attnact.experiments.runners import BACKENDS
from attnact.experiments.store import RunStore
from attnact.train.config import LOGGERS

__all__ = ["add_reproduce_subparser", "run_reproduce"]


def add_reproduce_subparser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``reproduce`` to an ``argparse`` subparsers object; its handler is
    :func:`run_reproduce`."""
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce a paper experiment: a grid of runs and its report",
        description=(
            "Train an experiment's grid of runs (skipping finished ones, resuming unfinished "
            "ones) and write its report: results.csv (every run), table.md/table.tex (mean ± "
            "std and 95% CI over seeds, paired difference to the baseline, the paper's number "
            "beside ours) and figures. Presets: quick (Fashion-MNIST, CPU-sized) and paper (the "
            "paper's datasets and recipe)."
        ),
        epilog="list the experiments with: attnact reproduce --list",
    )
    p.add_argument("experiment", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--preset", default="quick", help="quick (default) or paper")
    p.add_argument("--seeds", type=int, help="seeds per grid point (default: the preset's)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once (default 1)")
    p.add_argument("--backend", default="process", choices=BACKENDS,
                   help="process (spawned workers, default), inline (this process; under "
                        "torchrun) or ray (needs the ray package)")
    p.add_argument("--threads", type=int,
                   help="intra-op threads per run (default: cores // workers)")
    p.add_argument("--out", help="report directory (default reports/<experiment>/<preset>)")
    p.add_argument("--runs", help="run store, shared by experiments (default "
                                  "runs/reproduce/<preset>)")
    p.add_argument("--where", action="append", default=[], metavar="AXIS=V1,V2",
                   help="only runs whose coordinate AXIS is one of the values (repeatable), "
                        "e.g. --where b=1,2 --where dataset=cifar10")
    p.add_argument("--dry-run", action="store_true",
                   help="list the grid's runs with their state and train nothing")
    p.add_argument("--archive", metavar="DIR",
                   help="copy the finished runs of the grid, their records without checkpoints "
                        "(a few KiB each), into the run store DIR, e.g. to commit them beside "
                        "the reports; a sweep or report on DIR counts them as finished. Trains "
                        "nothing")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing; write the report from the finished runs")
    p.add_argument("--retrain-other-code", action="store_true",
                   help="set aside (move, not delete) finished runs made by other code than "
                        "this attnact (another commit, a dirty tree, no provenance) and train "
                        "them anew")
    p.add_argument("--claims", action="store_true",
                   help="write CLAIMS.md (the papers' claims and their verdicts) from the "
                        "stored reports in --out (default reports) and exit")
    p.add_argument("--logger", dest="loggers", metavar="NAMES",
                   help=f"tracking backends of the runs trained, comma-separated: "
                        f"{', '.join(LOGGERS)} or none (default)")
    p.add_argument("--quiet", action="store_true", help="fewer messages, no progress bars")
    p.set_defaults(func=run_reproduce)
    return p


def _parse_where(items: list[str]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for item in items:
        axis, sep, values = item.partition("=")
        if not sep or not axis.strip() or not values.strip():
            raise ValueError(f"--where {item!r} is not of the form AXIS=V1,V2")
        where.setdefault(axis.strip(), []).extend(v.strip() for v in values.split(",") if v)
    return where


def _archive(store: RunStore, experiment: str, specs: list[RunSpec], into: RunStore) -> int:
    """``--archive``: the grid's finished runs copied into ``into``; the others are named."""
    if into.root.resolve() == store.root.resolve():
        raise ValueError(f"--archive {into.root} is the run store itself (--runs)")
    counts: dict[str, int] = {}
    for spec in specs:
        status = store.status(spec.key)
        outcome = store.archive(spec.key, into) if status == "finished" else f"left {status}"
        counts[outcome] = counts.get(outcome, 0) + 1
        if outcome.startswith("left"):
            print(f"{outcome:<14} {spec.key}")
    store.archive_sweeps(into, experiment)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    print(f"{len(specs)} runs of {store.root} archived into {into.root}: {summary}")
    return 0


def run_reproduce(args: argparse.Namespace) -> int:
    from attnact.experiments.registry import get_experiment, list_experiments

    if args.list:
        for name in list_experiments():
            exp = get_experiment(name)
            defaults = ", ".join(f"{k}: {v}" for k, v in exp.default_seeds.items())
            print(f"{name:<18} {exp.title}")
            print(f"{'':<18} {exp.source}; presets {', '.join(exp.presets)} (seeds {defaults})")
        return 0
    if args.claims:
        from attnact.experiments.claims import write_claims

        if args.experiment:
            raise ValueError("--claims reads every stored report: name no experiment with it")
        print(f"wrote {write_claims(args.out or 'reports')}")
        return 0
    if not args.experiment:
        raise ValueError(
            f"name an experiment (one of {', '.join(list_experiments())}) or pass --list"
        )
    modes = [f for f, on in (("--dry-run", args.dry_run), ("--report-only", args.report_only),
                              ("--archive", args.archive is not None)) if on]
    if len(modes) > 1:
        raise ValueError(f"{' and '.join(modes)} exclude each other")
    check_directory_argument("--out", args.out)
    check_directory_argument("--runs", args.runs)
    check_directory_argument("--archive", args.archive)
    exp = get_experiment(args.experiment)
    exp.check_preset(args.preset)
    where = _parse_where(args.where)
    if args.dry_run or args.archive is not None:
        seeds = args.seeds if args.seeds is not None else int(
            exp.default_seeds.get(args.preset, 1))
        check_positive_int("--seeds", seeds)
        specs = filter_specs(exp.design(args.preset, seeds), where)
        store = RunStore(args.runs or Path("runs") / "reproduce" / args.preset)
        if args.archive is not None:
            return _archive(store, exp.name, specs, RunStore(args.archive))
        counts: dict[str, int] = {}
        for spec in specs:
            status = store.status(spec.key)
            counts[status] = counts.get(status, 0) + 1
            print(f"{status:<10} {spec.key}")
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        print(f"{len(specs)} runs in {store.root}: {summary}")
        return 0
    # The command as typed when run as `attnact ...` / `python -m attnact ...`; reproduce()
    # rebuilds an equivalent one otherwise (main() called from Python).
    command = None
    if sys.argv and Path(sys.argv[0]).name in ("attnact", "__main__.py") and (
        "reproduce" in sys.argv
    ):
        command = " ".join(shlex.quote(a) for a in ["attnact", *sys.argv[1:]])
    result = reproduce(
        exp,
        preset=args.preset,
        seeds=args.seeds,
        workers=args.workers,
        backend=args.backend,
        threads=args.threads,
        out=args.out,
        runs=args.runs,
        where=where,
        report_only=args.report_only,
        verbose=not args.quiet,
        command=command,
        log=(lambda _m: None) if args.quiet else None,
        retrain_other_code=args.retrain_other_code,
        loggers=args.loggers,
    )
    if result.results is None:  # a torchrun rank other than 0
        return 0
    table = result.files.get("table.md")
    if table is not None and not args.quiet:
        print()
        print(table.read_text())
    for name, path in result.files.items():
        print(f"{name:<34} {path}")
    return 0 if result.ok else 1

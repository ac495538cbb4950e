"""The ``attnact`` command line (also ``python -m attnact``, so ``torchrun -m attnact train``).

Subcommands: ``compare`` (the main job; with no arguments, the embedded demo), ``train``,
``info``, ``list``, ``data``, ``reproduce``, ``bench``, ``weights``. Each subcommand's parser
lives beside the code it drives; this module only assembles them. Building the parser imports
no optional package (``attnact --help`` stays quick and works on a units-only install): a
subcommand whose module needs a missing extra is listed with a stub that names the extra.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attnact._extras import missing_extra_message

__all__ = ["build_parser", "main"]

DEFAULT_COMPARE_OUT = "runs/compare-demo"


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "activations":
        from attnact.units.catalog import activation_rows, activation_table_markdown

        if args.markdown:
            print(activation_table_markdown())
            return 0
        for row in activation_rows(include_elsa=args.elsa):
            kind = "learnable" if row.learnable else "fixed"
            print(f"{row.name:<22} {kind:<9} {row.params:>7} params  {row.formula}")
        return 0
    if args.what == "models":
        from attnact.models import list_models, model_spec

        for name in list_models():
            spec = model_spec(name)
            size = "x".join(map(str, spec.input_size))
            print(f"{name:<16} input {size:<10} {spec.num_classes:>5} classes  {spec.description}")
        return 0
    from attnact.data import datasets_rows
    from attnact.data.commands import check_data_dir

    check_data_dir(args.data_dir)
    for ds in datasets_rows(args.data_dir):
        where = ds.location if ds.found else "not found"
        print(f"{ds.name:<14} {ds.description}  [{where}]")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from attnact.models import info_report

    input_size, num_classes = args.input_size, args.num_classes
    if args.dataset is not None:
        # The input a run on that dataset gives the model: the same path as train and compare.
        from attnact.train.build import data_shape
        from attnact.train.config import TrainConfig

        if input_size is not None:
            raise ValueError("--input-size and --dataset exclude each other (the dataset "
                             "gives the input size; add pad_to with --pad-to)")
        shape = data_shape(TrainConfig(model=args.model, dataset=args.dataset,
                                       pad_to=args.pad_to))
        input_size = shape.input_size
        num_classes = num_classes or shape.num_classes
    elif args.pad_to is not None:
        raise ValueError("--pad-to needs --dataset")
    print(info_report(args.model, args.act, input_size=input_size, num_classes=num_classes))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from attnact._checks import check_directory_argument
    from attnact.experiments.compare import compare
    from attnact.train.cli import config_from_args

    # compare sets each run's activation from --acts: an act= override would be dropped
    for item in [*args.sets, *args.overrides]:
        if item.partition("=")[0].strip() == "act":
            raise ValueError(f"{item!r}: compare trains the activations of --acts; "
                             "name them there")
    check_directory_argument("--out", args.out)
    config = config_from_args(args)
    if args.quiet:
        config = config.replace(progress=False)
    acts = [a.strip() for a in args.acts.split(",") if a.strip()]
    report = compare(
        acts, config, Path(args.out), seeds=args.seeds, baseline=args.baseline,
        workers=args.workers, time_rounds=args.time_rounds,
    )
    print()
    print((Path(args.out) / "table.md").read_text())
    for name, path in report.files.items():
        print(f"{name:<11} {path}")
    return 0


def _add_compare_subparser(sub: Any) -> None:
    from attnact.experiments.compare import DEMO_ACTIVATIONS
    from attnact.train.cli import add_config_arguments

    p = sub.add_parser(
        "compare",
        help="train several activations under identical conditions and report them",
        description=(
            "Train each activation for several seeds under identical conditions (same data "
            "order and seed per seed index) and write a table (mean ± std, 95% CI, paired "
            "difference to the baseline, time per epoch), a CSV of every run and a figure. "
            "With no arguments: the embedded demo, mnist_conv on Fashion-MNIST. Re-running "
            "the same command skips finished runs and resumes unfinished ones."
        ),
    )
    add_config_arguments(p, preset="demo", skip=("act",))
    p.add_argument("--acts", default=",".join(DEMO_ACTIVATIONS), help="comma-separated names")
    p.add_argument("--seeds", type=int, default=2, help="runs per activation (default 2)")
    p.add_argument("--baseline", help="activation the others are compared to, one of --acts "
                                      "(default: relu if compared, else the first)")
    p.add_argument("--out", default=DEFAULT_COMPARE_OUT, help="output directory")
    p.add_argument("--workers", type=int, default=1,
                   help="runs trained at once, each in its own process (default 1)")
    p.add_argument("--time-rounds", type=int, default=15,
                   help="interleaved rounds of the step-time measurement (0: none; default 15)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_compare)


def _add_info_subparser(sub: Any) -> None:
    p = sub.add_parser("info", help="parameters and MACs of a model, per layer")
    p.add_argument("--model", required=True)
    p.add_argument("--act", default="relu")
    p.add_argument("--input-size", help="C,H,W (default: the model's)")
    p.add_argument("--dataset", help="take the input size and classes from this dataset")
    p.add_argument("--pad-to", type=int, help="with --dataset: images zero-padded to this side")
    p.add_argument("--num-classes", type=int)
    p.set_defaults(func=_cmd_info)


def _add_list_subparser(sub: Any) -> None:
    p = sub.add_parser("list", help="list activations, models or datasets")
    p.add_argument("what", choices=["activations", "models", "datasets"])
    p.add_argument("--markdown", action="store_true", help="activations as a markdown table")
    p.add_argument("--elsa", action="store_true", help="include the elsa_* variants")
    p.add_argument("--data-dir", help="where to look for datasets")
    p.set_defaults(func=_cmd_list)


def _imported(module: str, name: str) -> Callable[[Any], Any]:
    """``module.name``, imported when the parser is built (so a missing extra shows there)."""
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


# (subcommand, how to add its parser), in the order ``attnact --help`` lists them
_SUBCOMMANDS: tuple[tuple[str, Callable[[], Callable[[Any], Any]]], ...] = (
    ("compare", lambda: _add_compare_subparser),
    ("train", lambda: _imported("attnact.train.cli", "add_train_subparser")),
    ("info", lambda: _add_info_subparser),
    ("list", lambda: _add_list_subparser),
    ("data", lambda: _imported("attnact.data.commands", "add_data_subparser")),
    ("reproduce", lambda: _imported("attnact.experiments.cli", "add_reproduce_subparser")),
    ("bench", lambda: _imported("attnact.perf.cli", "add_bench_subparser")),
    ("weights", lambda: _imported("attnact.weights.commands", "add_weights_subparser")),
)


def _add_missing_extra_stub(sub: Any, command: str, message: str) -> None:
    """A subcommand that cannot load: listed by ``--help``, and running it prints ``message``."""
    p = sub.add_parser(command, help=f"(not available: {message})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def refuse(args: argparse.Namespace) -> int:
        print(f"attnact: error: {message}", file=sys.stderr)
        return 2

    p.set_defaults(func=refuse)


class _VersionAction(argparse.Action):
    """``--version``: attnact's and torch's versions, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        import torch

        try:
            ours = version("attnact")
        except PackageNotFoundError:  # a source tree that was never installed
            ours = "unknown"
        print(f"attnact {ours} (torch {torch.__version__})")  # stdout, as argparse's own
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnact", description="Attentional activation functions: ATAC, AReLU, ELSA."
    )
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    for command, adder in _SUBCOMMANDS:
        try:
            adder()(sub)
        except ImportError as err:
            message = missing_extra_message(command, err)
            if message is None:
                raise
            _add_missing_extra_stub(sub, command, message)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from attnact.train.cli import parse_args_with_overrides

    args = parse_args_with_overrides(build_parser(), argv)
    try:
        return int(args.func(args))
    except ValueError as err:  # bad input: a clear message, not a traceback
        print(f"attnact: error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:  # an optional package the command needs is not installed
        message = missing_extra_message(args.command, err)
        if message is None:
            raise
        print(f"attnact: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())

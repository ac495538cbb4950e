"""``attnact train``: one run from a preset, a YAML file, flags and ``key=value`` overrides.

Precedence, lowest first: defaults < ``--preset`` < ``--config file.yaml`` < named flags
(``--epochs 3``) < ``--set key=value`` / positional ``key=value``. Examples::

    attnact train --preset demo
    attnact train --preset atac-cifar --act relu --out runs/relu-b3 model_kwargs.blocks=3
    attnact train --preset atac-cifar --out runs/relu-b3 --resume
    torchrun --nproc-per-node 2 -m attnact train --preset demo --out runs/ddp

Exit codes: 0 finished, 2 bad arguments or config, 3 diverged (non-finite loss), 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnact.train.config import LOGGERS, TrainConfig, list_presets

__all__ = [
    "add_config_arguments",
    "add_train_subparser",
    "config_from_args",
    "main",
    "parse_args_with_overrides",
    "run_train",
]

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130

# flag -> TrainConfig field, for the commonly used fields
_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--model", "model", str, "host network (attnact.models.list_models())"),
    ("--act", "act", str, "activation unit (attnact.list_activations())"),
    ("--dataset", "dataset", str, "dataset name"),
    ("--data-dir", "data_dir", str, "where the dataset files are"),
    ("--epochs", "epochs", int, "number of epochs"),
    ("--lr", "lr", float, "base learning rate"),
    ("--batch-size", "batch_size", int, "GLOBAL batch size (split over torchrun processes)"),
    ("--optimizer", "optimizer", str, "sgd, nag or adam"),
    ("--seed", "seed", int, "random seed"),
    ("--device", "device", str, "auto, cpu or cuda"),
    ("--limit-train", "limit_train", int, "train on the first N training samples only"),
    ("--limit-test", "limit_test", int, "evaluate on the first N test samples only"),
)


def add_train_subparser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add ``train`` to an ``argparse`` subparsers object; its handler is :func:`run_train`."""
    p = subparsers.add_parser(
        "train",
        help="train one model; writes a run directory",
        description=(
            "Train one model. Settings come from --preset, then --config, then the flags, then "
            "key=value overrides (any TrainConfig field; values are YAML: milestones=[30,60], "
            "act_kwargs.alpha=0.5). Data parallel: torchrun --nproc-per-node N -m attnact train."
        ),
        epilog=f"presets: {', '.join(list_presets())}",
    )
    _add_arguments(p)
    p.set_defaults(func=run_train)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p)
    p.add_argument("--out", dest="out_dir", metavar="DIR", help="run directory")
    p.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in the run directory (from scratch if it has no checkpoint)",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def add_config_arguments(
    p: argparse.ArgumentParser, *, preset: str | None = None, skip: tuple[str, ...] = ()
) -> None:
    """The arguments that describe a :class:`TrainConfig`, shared by every command that trains
    (``train``, ``compare``); :func:`config_from_args` reads them back.

    Args:
        p: the command's parser.
        preset: the command's default ``--preset`` (None: the config's defaults).
        skip: config flags the command sets itself (``compare`` trains several ``--acts``).
    """
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides (any TrainConfig field; values are YAML)")
    p.add_argument("--preset", choices=list_presets(), default=preset,
                   help="start from a paper recipe" + (f" (default {preset})" if preset else ""))
    p.add_argument("--config", type=Path, metavar="FILE", help="YAML file of config fields")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override (repeatable)",
    )
    for flag, dest, typ, help_ in _FLAGS:
        if dest not in skip:
            p.add_argument(flag, dest=f"flag_{dest}", type=typ, metavar=dest.upper(), help=help_)
    p.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="deterministic kernels (bit-exact resume)",
    )
    p.add_argument(
        "--logger",
        dest="loggers",
        metavar="NAMES",
        help=f"tracking backends, comma-separated: {', '.join(LOGGERS)} or none (default); "
             "they write below each run directory (W&B offline unless WANDB_MODE is set; MLflow "
             "at mlflow_tracking_uri=URI if given)",
    )
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="the same as --logger tensorboard (added to --logger's list)")
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no bars"
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Resolve the :class:`TrainConfig` a command line describes (see the module docstring for
    the precedence). The one way from flags to a config: ``train`` and ``compare`` both use it;
    a command with ``--out`` for the run (``train``) gets a default run directory.
    """
    data: dict[str, Any] = {}
    if args.preset is not None:
        data["preset"] = args.preset
    if args.config is not None:
        import yaml

        if not args.config.is_file():
            raise ValueError(f"--config: no such file {args.config}")
        try:
            loaded = yaml.safe_load(args.config.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"--config {args.config}: not valid YAML ({err})") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config}: expected a mapping of config fields")
        if "preset" in loaded and args.preset is not None and loaded["preset"] != args.preset:
            raise ValueError(
                f"--preset {args.preset} conflicts with 'preset: {loaded['preset']}' in "
                f"{args.config}"
            )
        data.update(loaded)
    for _, dest, _, _ in _FLAGS:
        value = getattr(args, f"flag_{dest}", None)
        if value is not None:
            data[dest] = value
    for dest in ("out_dir", "resume", "deterministic", "progress"):
        value = getattr(args, dest, None)
        if value is not None:
            data[dest] = value
    loggers = getattr(args, "loggers", None)
    if loggers is not None:
        data["loggers"] = loggers  # "tensorboard,wandb" or "none": TrainConfig parses the list
    if getattr(args, "tensorboard", None):
        data["tensorboard"] = True  # the old flag: TrainConfig adds tensorboard to the loggers
    # Overrides join before the config is built: only the final combination is validated.
    config = TrainConfig.from_dict(data, [*args.sets, *args.overrides])
    if hasattr(args, "out_dir") and config.out_dir is None:  # train's own run directory
        config = config.replace(out_dir=_default_out_dir(config, args.preset))
    return config


def parse_args_with_overrides(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args``, except that ``key=value`` overrides may also come after flags
    (``--epochs 3 lr=0.1 --seed 1 batch_size=64``), kept in the order typed.

    argparse takes a positional list only in one run, so later overrides would otherwise be
    "unrecognized arguments".
    """
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def _default_out_dir(config: TrainConfig, preset: str | None) -> str:
    name = preset or config.model
    return str(Path("runs") / f"{name}-{config.act}-{config.dataset}-seed{config.seed}")


def _setup_logging() -> None:
    log = logging.getLogger("attnact.train")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _format_summary(summary: dict[str, Any], out_dir: Any) -> str:
    final, best = summary.get("final") or {}, summary.get("best") or {}
    lines = [
        f"{summary['status']}: {summary['epochs_completed']}/{summary['epochs']} epochs of "
        f"{summary['model']} + {summary['act']} on {summary['dataset']}, "
        f"{summary['params']:,} parameters, {summary['wall_time_s']:.1f} s"
        + (
            f" ({summary['time_per_epoch_s']:.1f} s/epoch)"
            if summary.get("time_per_epoch_s")
            else ""
        )
    ]
    if final:
        top5 = f", top-5 {final['test_top5']:.2f}%" if final.get("test_top5") is not None else ""
        lines.append(
            f"final: test top-1 {final['test_top1']:.2f}%{top5}, test loss "
            f"{final['test_loss']:.4f}, train loss {final['train_loss']:.4f}"
        )
    if best:
        lines.append(f"best:  test top-1 {best['test_top1']:.2f}% (epoch {best['epoch']})")
    lines.append(f"run directory: {out_dir}")
    return "\n".join(lines)


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``attnact train``: resolve the config, :func:`fit`, print the summary."""
    prog = "attnact train"
    try:
        config = config_from_args(args)
    except ValueError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    is_main = os.environ.get("RANK", "0") == "0"
    if args.print_config:
        if is_main:
            print(config.to_yaml(), end="")
        return EXIT_OK

    from attnact.train.engine import NonFiniteLossError, fit

    _setup_logging()
    try:
        result = fit(config)
    except NonFiniteLossError as err:
        if is_main:
            print(f"{prog}: diverged: {err}", file=sys.stderr)
            from attnact.train.rundir import RunDirectory

            summary = RunDirectory(config.out_dir or ".").file(RunDirectory.SUMMARY)
            print(f"summary: {summary}", file=sys.stderr)
        return EXIT_DIVERGED
    except (FileExistsError, ValueError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if is_main:
            print(f"{prog}: interrupted; continue with --resume --out {config.out_dir}")
        return EXIT_INTERRUPTED
    if is_main:
        print(_format_summary(result.summary, result.out_dir))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attnact.train.cli`` (the same as ``attnact train``)."""
    parser = argparse.ArgumentParser(prog="attnact train", description=__doc__.split("\n")[0])
    _add_arguments(parser)
    return run_train(parse_args_with_overrides(parser, argv))


if __name__ == "__main__":
    sys.exit(main())

"""The ``attnact`` command line (also ``python -m attnact``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _cmd_list(args: argparse.Namespace) -> int:
    from attnact.units.catalog import activation_rows, activation_table_markdown

    if args.what == "activations":
        if args.markdown:
            print(activation_table_markdown())
            return 0
        for row in activation_rows(include_elsa=args.elsa):
            kind = "learnable" if row.learnable else "fixed"
            print(f"{row.name:<22} {kind:<9} {row.params:>7} params  {row.formula}")
        return 0
    raise AssertionError(args.what)  # argparse restricts the choices


def _cmd_demo(args: argparse.Namespace) -> int:
    """Until the host networks land (#3): show the units and one forward/backward each."""
    import torch

    from attnact import create_act_layer, list_activations

    torch.manual_seed(0)
    x = torch.randn(8, 16, 12, 12, requires_grad=True)
    print(f"{'unit':<22} {'params':>7}  output mean   grad mean")
    for name in list_activations(include_elsa=False):
        unit = create_act_layer(name, channels=16)
        y = unit(x)
        (grad,) = torch.autograd.grad(y.square().mean(), x)
        n = sum(p.numel() for p in unit.parameters())
        print(f"{name:<22} {n:>7}  {y.mean().item():+.4f}     {grad.mean().item():+.2e}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnact", description="Attentional activation functions: ATAC, AReLU, ELSA."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p_list = sub.add_parser("list", help="list what exists")
    p_list.add_argument("what", choices=["activations"], help="what to list")
    p_list.add_argument("--markdown", action="store_true", help="a markdown table")
    p_list.add_argument("--elsa", action="store_true", help="include the elsa_* variants")
    p_list.set_defaults(func=_cmd_list)

    p_demo = sub.add_parser("demo", help="the embedded demo")
    p_demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

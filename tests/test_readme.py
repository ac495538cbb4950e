"""The README is the package page: its activation table is generated from the registry, its
Python example runs, and every command it shows is one the CLI accepts."""

import re
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

from attnact.units.catalog import END_MARK, START_MARK, activation_table_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_activation_table_is_current():
    text = README.read_text()
    body = text.split(START_MARK, 1)[1].split(END_MARK, 1)[0].strip()
    assert body == activation_table_markdown(), "run `make readme` to refresh the table"


def test_readme_quickstart_commands():
    """The checkout quickstart is the two make targets (make demo, make test)."""
    (quickstart,) = [b for b in _blocks("sh") if "make demo" in b]
    assert [line.split("#")[0].strip() for line in quickstart.splitlines()] == [
        "make demo", "make test"]


def test_the_install_quickstart_runs():
    (example,) = [b for b in _blocks("python") if "create_model" in b and "vit" not in b]
    scope: dict = {}
    exec(compile(example, str(README), "exec"), scope)
    import attnact

    assert any(isinstance(m, attnact.ATAC) for m in scope["model"].modules())
    assert any(isinstance(m, attnact.AReLU) for m in scope["arelu_net"].modules())
    assert not any(isinstance(m, nn.ReLU) for m in scope["arelu_net"].modules())


def test_the_python_example_runs():
    """The 'Using the units' block, with a small CNN and ViT-like model for its placeholders."""
    (example,) = [b for b in _blocks("python") if "vit" in b]
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    vit = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
    scope = {"model": cnn, "vit": vit, "images": torch.randn(2, 5, 16)}
    exec(compile(example, str(README), "exec"), scope)
    assert scope["model"] is not cnn and "ATAC" in str(scope["model"].conversion_report)
    out = scope["vit"](torch.randn(2, 7, 16))  # another sequence length
    assert out.shape == (2, 7, 16)


def _commands() -> list[list[str]]:
    lines = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("attnact ", "torchrun ")):
                lines.append(shlex.split(line))
    return lines


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a)[:60])
def test_every_readme_command_parses(argv):
    """Each command the README shows is accepted by the parser (nothing runs)."""
    from attnact.cli import build_parser
    from attnact.train.cli import parse_args_with_overrides

    if argv[0] == "torchrun":
        argv = argv[argv.index("attnact") :]
    args = argv[1:]
    if args and args[0] == "list" and "|" in args[1]:
        for what in args[1].split("|"):
            parse_args_with_overrides(build_parser(), ["list", what])
        return
    parse_args_with_overrides(build_parser(), args)

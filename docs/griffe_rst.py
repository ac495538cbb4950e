"""Griffe extension: attnact's docstrings use Sphinx cross-reference roles
(:func:`~attnact.units.atac.set_memory_efficient`), ``Label::`` before literal blocks and a few
reStructuredText simple tables, which Markdown shows verbatim or reflows. Rewrite them before
mkdocstrings renders the API reference: each role becomes an optional autoref (a link where the
target is documented in the site, plain code where it is not, never a warning), ``Label::``
becomes ``Label:``, and a simple table becomes a fenced text block that keeps its columns.

Loaded by mkdocs.yml (``extensions: [docs/griffe_rst.py]``); it changes nothing in the package.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

# :role:`target` or :role:`title <target>`; roles as written in attnact (func, class, meth, mod,
# data, attr, obj, exc)
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc):`([^`]+)`")
# "Label::" at the end of a line, before an indented literal block (reStructuredText)
_LITERAL = re.compile(r"(\S)::[ \t]*$", re.MULTILINE)
# a border line of a simple table: "=====  ======  ==="
_BORDER = re.compile(r"^[ \t]*=+(?:[ \t]+=+)+[ \t]*$")


def _resolve(obj: griffe.Object, target: str) -> str:
    """The full dotted path of ``target`` as written inside ``obj``'s docstring."""
    if target.startswith("attnact"):
        return target
    head = target.split(".", 1)[0]
    scope: griffe.Object | None = obj if obj.is_module or obj.is_class else obj.parent
    while scope is not None:
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError):
            path = None
        if path:
            return path + target[len(head):]
        if head in scope.members:
            return f"{scope.path}.{target}"
        scope = scope.parent
    return target


def _replace(obj: griffe.Object, match: re.Match[str]) -> str:
    text = match.group(1).strip()
    title, sep, target = text.partition(" <")
    if sep:
        target = target.rstrip(">")
    else:
        target, title = text, None
    short = target.startswith("~")
    target = target.lstrip("~").rstrip("()")
    if title is None:
        title = target.rsplit(".", 1)[-1] if short else target
    path = _resolve(obj, target)
    label = html.escape(title)
    return f'<autoref identifier="{html.escape(path)}" optional><code>{label}</code></autoref>'


def _fence_tables(text: str) -> str:
    """Each simple table (three border lines: top, under the header, bottom) as ```text."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        borders = [j for j in range(i, len(lines)) if _BORDER.match(lines[j])][:3] if (
            _BORDER.match(lines[i])) else []
        if len(borders) < 3:
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        out += [f"{indent}```text", *lines[i : borders[2] + 1], f"{indent}```"]
        i = borders[2] + 1
    return "\n".join(out)


def _rewrite(obj: griffe.Object | griffe.Alias) -> None:
    if obj.is_alias:
        return
    if obj.docstring is not None:
        value = _ROLE.sub(lambda m: _replace(obj, m), obj.docstring.value)
        obj.docstring.value = _fence_tables(_LITERAL.sub(r"\1:", value))
    for member in obj.members.values():
        _rewrite(member)


class RstRoles(griffe.Extension):
    """Rewrite Sphinx roles and ``::`` in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _rewrite(pkg)

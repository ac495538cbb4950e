"""Griffe extension: attnact's docstrings use Sphinx cross-reference roles
(:func:`~attnact.units.atac.set_memory_efficient`) and ``Label::`` before literal blocks, which
Markdown shows verbatim. Rewrite them before mkdocstrings renders the API reference: each role
becomes an optional autoref (a link where the target is documented in the site, plain code
where it is not, never a warning), and ``Label::`` becomes ``Label:``.

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


def _rewrite(obj: griffe.Object | griffe.Alias) -> None:
    if obj.is_alias:
        return
    if obj.docstring is not None:
        value = _ROLE.sub(lambda m: _replace(obj, m), obj.docstring.value)
        obj.docstring.value = _LITERAL.sub(r"\1:", value)
    for member in obj.members.values():
        _rewrite(member)


class RstRoles(griffe.Extension):
    """Rewrite Sphinx roles and ``::`` in every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        _rewrite(pkg)

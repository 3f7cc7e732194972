"""Breaking long expressions into lines as `ruff format` does: a small pretty printer.

Code is built as documents (`Atom`: text never broken; `Prefixed`: `prefix` + a document, for
keyword arguments, `*`/`**` unpacking and dict items; `Call`: `head(items)`, also a list, tuple
or dict display; `Comprehension`: an element and its `for` clauses). `layout` renders one:
flat if it fits the line, else broken at its outermost bracket with the items indented, one per
line when it is a display of several (ruff's magic trailing comma), recursively. It is the
group/nest idea of Wadler's "A prettier printer" (and jax's `_src/pretty_printer.py`) cut down to
the one breaking rule ruff applies to calls and displays.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

LINE_LENGTH = 100


@dataclass
class Atom:
    """Text that is never broken."""

    text: str
    comment: str = ""  # trails the document's last line


@dataclass
class Prefixed:
    """`prefix` + a document: keyword arguments, `*` and `**` unpacking, dict items."""

    prefix: str
    value: Expr
    comment: str = ""


@dataclass
class Call:
    """`head(items)`; with open/close also a list, tuple or dict; `collection` for displays."""

    head: str
    items: list[Expr]
    open: str = "("
    close: str = ")"
    collection: bool = False
    comment: str = ""


@dataclass
class Comprehension:
    """A comprehension's element and its `for` clauses (inside a Call's brackets)."""

    element: Expr
    clauses: list[Expr]
    comment: str = ""


Expr = Atom | Prefixed | Call | Comprehension  # a document


def flat(e: Expr) -> str:
    """A document on one line."""
    if isinstance(e, Atom):
        return e.text
    if isinstance(e, Prefixed):
        return e.prefix + flat(e.value)
    if isinstance(e, Call):
        return f"{e.head}{e.open}{', '.join(map(flat, e.items))}{e.close}"
    if isinstance(e, Comprehension):
        return " ".join([flat(e.element), *map(flat, e.clauses)])
    raise TypeError(f"not a layout document: {e!r}")


def parts(e: Expr) -> list[Expr]:
    """The documents directly inside a document."""
    if isinstance(e, Atom):
        return []
    if isinstance(e, Prefixed):
        return [e.value]
    if isinstance(e, Call):
        return e.items
    if isinstance(e, Comprehension):
        return [e.element, *e.clauses]
    raise TypeError(f"not a layout document: {e!r}")


def has_comment(e: Expr) -> bool:
    return bool(e.comment) or inner_comment(e)


def inner_comment(e: Expr) -> bool:
    """Whether a comment inside the document forces it onto several lines."""
    return any(has_comment(part) for part in parts(e))


def layout(e: Expr, indent: int, lead: str = "", trail: str = "") -> list[str]:
    """Lines for `lead + e + trail`, as ruff format breaks them: flat if that fits (and no
    comment inside forces a break), else split at the last bracket, recursively."""
    pad = " " * indent
    comment = f"  # {e.comment}" if e.comment else ""
    text = lead + flat(e) + trail
    if not inner_comment(e) and indent + len(text + comment) <= LINE_LENGTH:
        return [pad + text + comment]
    prefix = ""
    while isinstance(e, Prefixed):
        prefix, e = prefix + e.prefix, e.value
    if not isinstance(e, Call):
        return [pad + text + comment]
    return [
        pad + lead + prefix + e.head + e.open,
        *_body(e, indent + 4),
        pad + e.close + trail + comment,
    ]


def _body(call: Call, indent: int) -> list[str]:
    """A split bracket's contents: on one line if they fit, a displayed collection of several
    items one per line (ruff's magic trailing comma), a comprehension clause by clause."""
    items = call.items
    if len(items) == 1 and isinstance(items[0], Comprehension):
        comp = items[0]
        if not has_comment(comp) and indent + len(flat(comp)) <= LINE_LENGTH:
            return [" " * indent + flat(comp)]
        return [line for part in (comp.element, *comp.clauses) for line in layout(part, indent)]
    joined = ", ".join(map(flat, items))
    explode = call.collection and len(items) > 1
    if not explode and not inner_comment(call) and indent + len(joined) <= LINE_LENGTH:
        return [" " * indent + joined]
    if len(items) == 1 and not explode:
        return layout(items[0], indent)
    return [line for item in items for line in layout(item, indent, trail=",")]


def docstring(text: str, indent: int) -> list[str]:
    """A docstring for any text: wrapped to the line length, quotes and backslashes escaped."""
    text = "".join(c for c in text if c.isprintable() or c == "\n").strip()
    text = text.replace("\\", "\\\\")
    tail = ""
    if text.endswith('"'):  # kept apart: escaped, it cannot join the closing quotes
        text, tail = text[:-1], '\\"'
    text = text.replace('"""', '\\"\\"\\"') + tail
    pad = " " * indent
    width = LINE_LENGTH - indent
    if "\n" not in text and len(text) + 6 <= width:
        return [f'{pad}"""{text}"""']
    lines: list[str] = []
    for line in text.splitlines():  # the author's line breaks stay; long lines are wrapped
        first = '"""' if not lines else ""
        wrapped = textwrap.wrap(first + line, width, break_long_words=False, break_on_hyphens=False)
        lines += wrapped or [first]
    return [pad + line if line else "" for line in lines] + [pad + '"""']

"""Freezing: which modules a spec's `freeze:` patterns (and `--freeze`, `build(freeze=)`) name.

A pattern is matched against every module's whole dotted path (`layer4.1.bn2`, the state_dict
prefix) with the module-path globs `init:` selectors use (`archc.ir.path_glob`: `*` within a
name, `**` across names, `?`, `[1-3]`); a module's exact path always matches (a name with
brackets, `x[1]`, too). A matched module is frozen with everything inside it.
Only the outermost frozen modules are kept (`layer1`, not also `layer1.0.conv1`), in module
order. A pattern that matches no module is an error: in the spec at its line, on the command
line a usage error naming it. No torch here: the summary counts frozen parameters statically;
the torch backend freezes the built model (`torch_backend.freeze`).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Sequence

from archc.errors import ArchcError, UsageError
from archc.ir import Node, path_glob

SUGGESTIONS = 3  # close module paths named when a pattern matches nothing
LISTED = 12  # top-level layers named when a pattern matches nothing


def modules(tree: Node) -> list[Node]:
    """The nodes that own a module, in registration order (inline groups have none)."""
    return [n for n in tree.walk() if n.path and not n.inline]


def resolve(
    tree: Node, patterns: Iterable[str], refuse: Callable[[int, str], ArchcError], already: Sequence[str] = ()
) -> tuple[str, ...]:
    """The outermost module paths the patterns (with the paths `already` frozen) cover, in
    module order; `refuse(i, message)` makes the error for pattern i that matches nothing."""
    nodes = modules(tree)
    matched = set(already)
    for i, pattern in enumerate(patterns):
        glob = path_glob(pattern)
        hits = {n.path for n in nodes if n.path == pattern or glob.fullmatch(n.path)}
        if not hits:
            raise refuse(i, no_match(pattern, nodes))
        matched |= hits
    return tuple(
        n.path for n in nodes if n.path in matched and not any(a in matched for a in _ancestors(n.path))
    )


def _ancestors(path: str) -> Iterable[str]:
    parts = path.split(".")
    return (".".join(parts[:i]) for i in range(1, len(parts)))


def no_match(pattern: str, nodes: list[Node]) -> str:
    """Why `pattern` froze nothing, with the close module paths, else the top-level layers."""
    close = difflib.get_close_matches(pattern, [n.path for n in nodes], n=SUGGESTIONS)
    if close:
        hint = f"did you mean {', '.join(repr(c) for c in close)}?"
    else:
        top = [n.path for n in nodes if "." not in n.path]
        more = f", ... ({len(top)} in all)" if len(top) > LISTED else ""
        hint = f"the top-level layers are {', '.join(top[:LISTED])}{more}"
    return (
        f"freeze pattern {pattern!r} matches no module; {hint} (patterns match whole module "
        "paths like layer1 or layer4.1.bn2, with the wildcards * within a name, ** across names, ? and [1-3])"
    )


def with_frozen(spec, patterns: Sequence[str]):
    """`spec` with the modules `patterns` (`--freeze`, `build(freeze=)`) name frozen as well
    as those its own `freeze:` names; a pattern that matches nothing is a UsageError."""
    if isinstance(patterns, (str, bytes)):
        raise UsageError("freeze is a list of module path patterns, not one string")
    if not patterns:
        return spec

    def refuse(i: int, message: str) -> ArchcError:
        return UsageError(message)

    return dataclasses.replace(spec, frozen=resolve(spec.tree, patterns, refuse, spec.frozen))


def frozen_params(spec) -> int:
    """Parameters in the frozen modules (counted statically, as the summary shows them)."""
    frozen = set(spec.frozen)
    return sum(n.param_count for n in modules(spec.tree) if n.path in frozen)

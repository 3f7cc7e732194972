"""Runs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from archc.backends.codegen.lower import Box, Leaf, Make, One
from archc.backends.codegen.names import MISSING, Aff, same

# ---- structure and values of terms (for runs and grouping) ----------------------------------


def skeleton(term: Any) -> tuple:
    """What must agree for two terms to be the same code with different values."""
    if isinstance(term, Leaf):
        return ("leaf", term.cls, len(term.args), tuple(term.kwargs))
    if isinstance(term, Make):
        return ("make", id(term.inst.klass))
    items = []
    for entry in term.entries:
        if isinstance(entry, One):
            items.append((entry.name if not term.positional else "", skeleton(entry.term)))
        else:  # runs inside a nested container are compared whole
            items.append(
                (
                    "rep",
                    tuple(
                        (skeleton(o.term), freeze(values(o.term))) for u in entry.units for o in u
                    ),
                )
            )
    return ("box", term.base, term.positional, tuple(items))


def freeze(value: Any) -> Any:
    """A hashable stand-in for a value (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(map(freeze, value)))
    return value


def values(term: Any) -> list:
    if isinstance(term, Leaf):
        return [*term.args, *term.kwargs.values()]
    if isinstance(term, Make):
        return list(term.values.values())
    return [v for entry in term.entries if isinstance(entry, One) for v in values(entry.term)]


def with_values(term: Any, new: Iterator) -> Any:
    """`term` with its values (in `values` order) replaced from `new`."""
    if isinstance(term, Leaf):
        return Leaf(
            term.node, term.cls, [next(new) for _ in term.args], {k: next(new) for k in term.kwargs}
        )
    if isinstance(term, Make):
        return Make(term.inst, {k: next(new) for k in term.values})
    entries = [
        One(e.name, with_values(e.term, new), e.node) if isinstance(e, One) else e
        for e in term.entries
    ]
    return Box(term.node, term.base, entries, term.positional)


def label(name: str) -> tuple[str, int | None, str]:
    """`denselayer12` → ("denselayer", 12, ""): a run's names are prefix{number}suffix."""
    match = re.match(r"^(.*?)(\d+)(\D*)$", name)
    if not match or str(int(match.group(2))) != match.group(2):
        return name, None, ""
    return match.group(1), int(match.group(2)), match.group(3)


def unit_values(unit: list[One]) -> list:
    return [v for one in unit for v in values(one.term)]


def unit_skeleton(unit: list[One], named: bool) -> tuple:
    names = tuple(label(o.name)[::2] for o in unit) if named else ()
    return (names, tuple(skeleton(o.term) for o in unit))


def step_of(a: Any, b: Any) -> Any:
    """b - a for integers, 0 for equal values, None when the two cannot be in one run."""
    if type(a) is int and type(b) is int:
        return b - a
    return 0 if same(a, b) else None


def segment(units: list[list[One]], named: bool, grow: bool) -> list[list[list[One]]]:
    """Split repeated units into runs of equal or arithmetically growing ones (in a stage,
    three at least to grow; a dense block's layers grow by design)."""
    runs, j = [], 0
    cache = [unit_values(u) for u in units]
    shapes = [unit_skeleton(u, named) for u in units]
    numbers = [label(u[0].name)[1] if named else 0 for u in units]
    while j < len(units):
        k = j + 1
        steps = None
        while k < len(units) and shapes[k] == shapes[j] and len(cache[k]) == len(cache[j]):
            if named and (numbers[j] is None or numbers[k] != numbers[j] + (k - j)):
                break
            if steps is None:
                steps = [step_of(a, b) for a, b in zip(cache[j], cache[k])]
                if None in steps:
                    break
            elif not all(
                same(v, a + (k - j) * s) if isinstance(s, int) and s else same(v, a)
                for v, a, s in zip(cache[k], cache[j], steps)
            ):
                break
            k += 1
        if k - j == 2 and any(steps or ()) and not grow:
            k = j + 1  # two differing blocks of a stage read better as two than as a run
        runs.append(units[j:k])
        j = k
    return runs


def affine_unit(run: list[list[One]]) -> list[One]:
    """One unit standing for a whole run: each value as Aff(first, step)."""
    first = unit_values(run[0])
    steps = (
        [step_of(a, b) for a, b in zip(first, unit_values(run[1]))]
        if len(run) > 1
        else [MISSING] * len(first)
    )
    new = iter([Aff(a, s) for a, s in zip(first, steps)])
    return [One(o.name, with_values(o.term, new), o.node) for o in run[0]]

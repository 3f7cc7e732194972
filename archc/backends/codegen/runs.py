"""Runs of repeated blocks: a stage's or dense block's units split into arithmetic progressions.

Units whose terms have the same structure (`skeleton`) and whose values are equal or grow by a
constant step from one unit to the next (`segment`) form one run; `progression_unit` folds a
run into one unit whose values are `Progression(first, step)`, so a run becomes a loop
(`for i in range(n)`) with `base + i * step` for what grows. Named units must be numbered
consecutively (`denselayer1`, `denselayer2`, ...: `split_number`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from archc.backends.codegen.names import MISSING, Progression, same
from archc.backends.codegen.terms import (
    Child,
    ClassCall,
    Container,
    LayerCall,
    RepeatedBlocks,
    unknown,
)


def skeleton(term: Any) -> tuple:
    """What must agree for two terms to be the same code with different values."""
    if isinstance(term, LayerCall):
        return ("leaf", term.cls, len(term.args), tuple(term.kwargs))
    if isinstance(term, ClassCall):
        return ("make", id(term.inst.klass))
    if not isinstance(term, Container):
        unknown(term)
    items = []
    for entry in term.entries:
        if isinstance(entry, Child):
            items.append((entry.name if not term.positional else "", skeleton(entry.term)))
        elif isinstance(entry, RepeatedBlocks):  # runs inside a nested container: compared whole
            items.append(
                (
                    "rep",
                    tuple(
                        (skeleton(o.term), freeze(values(o.term))) for u in entry.units for o in u
                    ),
                )
            )
        else:
            unknown(entry)
    return ("box", term.base, term.positional, tuple(items))


def freeze(value: Any) -> Any:
    """A hashable stand-in for a value (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(map(freeze, value)))
    return value


def values(term: Any) -> list:
    """A term's values in a fixed order (a nested container's repeated blocks left out)."""
    if isinstance(term, LayerCall):
        return [*term.args, *term.kwargs.values()]
    if isinstance(term, ClassCall):
        return list(term.values.values())
    if isinstance(term, Container):
        return [v for e in term.entries if isinstance(e, Child) for v in values(e.term)]
    unknown(term)


def with_values(term: Any, new: Iterator) -> Any:
    """`term` with its values (in `values` order) replaced from `new`."""
    if isinstance(term, LayerCall):
        args = [next(new) for _ in term.args]
        kwargs = {k: next(new) for k in term.kwargs}
        return LayerCall(term.cls, args, kwargs, term.params, own=term.own, parameter=term.parameter)
    if isinstance(term, ClassCall):
        return ClassCall(term.inst, {k: next(new) for k in term.values})
    if isinstance(term, Container):
        entries = [
            Child(e.name, with_values(e.term, new), e.out_shape) if isinstance(e, Child) else e
            for e in term.entries
        ]
        return Container(term.base, term.positional, entries)
    unknown(term)


def split_number(name: str) -> tuple[str, int | None, str]:
    """`denselayer12` → ("denselayer", 12, ""): a run's names are prefix{number}suffix."""
    match = re.match(r"^(.*?)(\d+)(\D*)$", name)
    if not match or str(int(match.group(2))) != match.group(2):
        return name, None, ""
    return match.group(1), int(match.group(2)), match.group(3)


def unit_values(unit: list[Child]) -> list:
    return [v for one in unit for v in values(one.term)]


def unit_skeleton(unit: list[Child], named: bool) -> tuple:
    names = tuple(split_number(o.name)[::2] for o in unit) if named else ()
    return (names, tuple(skeleton(o.term) for o in unit))


def step_of(a: Any, b: Any) -> Any:
    """b - a for integers, 0 for equal values, None when the two cannot be in one run."""
    if type(a) is int and type(b) is int:
        return b - a
    return 0 if same(a, b) else None


def segment(units: list[list[Child]], named: bool, grow: bool) -> list[list[list[Child]]]:
    """Split repeated units into runs of equal or arithmetically growing ones (in a stage,
    three at least to grow; a dense block's layers grow by design)."""
    runs, j = [], 0
    cache = [unit_values(u) for u in units]
    shapes = [unit_skeleton(u, named) for u in units]
    numbers = [split_number(u[0].name)[1] if named else 0 for u in units]
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


def progression_unit(run: list[list[Child]]) -> list[Child]:
    """One unit standing for a whole run: each value as Progression(first, step)."""
    first = unit_values(run[0])
    steps = (
        [step_of(a, b) for a, b in zip(first, unit_values(run[1]))]
        if len(run) > 1
        else [MISSING] * len(first)
    )
    new = iter([Progression(a, s) for a, s in zip(first, steps)])
    return [Child(o.name, with_values(o.term, new), o.out_shape) for o in run[0]]

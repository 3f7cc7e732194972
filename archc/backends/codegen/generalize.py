"""Anti-unification: the terms of several instances → one pattern with Holes where they differ.

This is first-order anti-unification (Plotkin 1970, "A note on inductive generalization";
Reynolds 1970, "Transformational systems and the algebraic structure of atomic formulas"): the
least general generalisation of the instances' terms keeps every constructor they share and
puts a variable (a `Hole`, holding the column of values per instance) where they differ. Two
extensions fit it to modules: entries some instances lack become optional (a `flag` hole), and
repeated blocks are generalised run by run (`runs.py`). Where structures disagree beyond that,
`Unmergeable` says the instances need separate classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archc.backends.codegen.lower import field_value
from archc.backends.codegen.names import ARG_NAMES, MISSING, Progression, is_attribute, plain, same
from archc.backends.codegen.runs import progression_unit, segment, split_number
from archc.backends.codegen.terms import (
    Child,
    ClassCall,
    Container,
    Hole,
    LayerCall,
    RepeatedBlocks,
    Run,
    Runs,
    unknown,
)

if TYPE_CHECKING:
    from archc.backends.codegen.arguments import Resolver


class Unmergeable(Exception):
    """Two instances cannot share one class."""


class AntiUnifier:
    """Anti-unification of the terms of several instances into one pattern."""

    def __init__(self, resolver: Resolver | None = None):
        self.resolver = resolver

    def hole(self, column: list, origin: str, role: str = "value") -> Hole:
        hole = Hole(column, origin, role)
        if any(isinstance(v, Progression) for v in column):
            hole.base = self.hole(
                [v.base if isinstance(v, Progression) else MISSING for v in column], origin
            )
            hole.step = self.hole(
                [v.step if isinstance(v, Progression) else MISSING for v in column],
                origin + "_step",
                "step",
            )
        elif self.resolver is not None:
            self.resolver.resolve(hole)
        return hole

    def term(self, terms: list, origin: str) -> Any:
        present = [t for t in terms if t is not None]
        first = present[0]
        if any(type(t) is not type(first) for t in present):
            raise Unmergeable
        if isinstance(first, LayerCall):
            return self.leaf(terms, present, origin)
        if isinstance(first, ClassCall):
            if any(t.inst.klass is not first.inst.klass for t in present):
                raise Unmergeable
            return ClassCall(first.inst, {
                p.name: self.hole(
                    [t.values[p.name] if t else MISSING for t in terms], f"{origin}_{p.name}"
                )
                for p in first.inst.klass.params
            })  # fmt: skip
        if not isinstance(first, Container):
            unknown(first)
        if any(t.base != first.base or t.positional != first.positional for t in present):
            raise Unmergeable
        lists = [t.entries if t else None for t in terms]
        return Container(
            first.base,
            first.positional,
            self.entries(lists, first.positional, origin, optional=False),
        )

    def leaf(self, terms: list, present: list, origin: str) -> LayerCall:
        first = present[0]
        if any(t.ref != first.ref or len(t.args) != len(first.args) for t in present):
            raise Unmergeable
        names = ARG_NAMES.get(first.cls, ())
        args = [
            self.hole(
                [t.args[i] if t else MISSING for t in terms],
                f"{origin}_{names[i] if i < len(names) else f'arg{i}'}",
            )
            for i in range(len(first.args))
        ]
        kwargs = {}
        fields = list(type(first.params).model_fields)
        keys = merge_orders([list(t.kwargs) for t in present])
        for key in sorted(keys, key=lambda k: fields.index(k) if k in fields else -1):
            if any(key not in t.kwargs for t in present):  # fill it from the primitive's parameter
                for t in present:
                    value = t.kwargs.get(key, MISSING)
                    filled = field_value(t.params, key)
                    if filled is MISSING or (
                        value is not MISSING and not same(plain(value), filled)
                    ):
                        raise Unmergeable
            column = [
                MISSING if t is None else t.kwargs.get(key, field_value(t.params, key))
                for t in terms
            ]
            kwargs[key] = self.hole(column, f"{origin}_{key}")
        return LayerCall(first.cls, args, kwargs, own=first.own, parameter=first.parameter)

    def entries(self, lists: list, positional: bool, origin: str, *, optional: bool) -> list:
        """Align entries by name (or position), Reps by position; an entry some lack is optional."""
        keyed = [None if items is None else self.keyed(items, positional) for items in lists]
        order = merge_orders([list(k) for k in keyed if k is not None])
        out = []
        for key in order:
            found = [None if k is None else k.get(key) for k in keyed]
            if key[0] == "rep":
                if any(k is not None and f is None for k, f in zip(keyed, found)):
                    raise Unmergeable
                out.append(self.rep(found, positional, origin))
                continue
            one = next(f for f in found if f is not None)
            name = f"layer{one.name}" if one.name.isdigit() else one.name
            prefix = f"{origin}_{name}" if origin else name
            flag = None
            if any(k is not None and f is None for k, f in zip(keyed, found)):
                if not optional or not is_attribute(one.name):
                    raise Unmergeable  # (a numbered layer cannot be left out: the rest renumber)
                column = [MISSING if k is None else f is not None for k, f in zip(keyed, found)]
                flag = self.hole(column, one.name, "flag")
            term = self.term([f.term if f else None for f in found], prefix)
            out.append(Child(one.name, term, one.out_shape, flag))
        return out

    @staticmethod
    def keyed(items: list, positional: bool) -> dict:
        out, ones, reps = {}, 0, 0
        for entry in items:
            if isinstance(entry, RepeatedBlocks):
                out[("rep", reps)] = entry
                reps += 1
            elif isinstance(entry, Child):
                out[("one", ones) if positional else ("name", entry.name)] = entry
                ones += 1
            else:
                unknown(entry)
        return out

    def rep(self, reps: list, positional: bool, origin: str) -> Runs:
        present = [r for r in reps if r is not None]
        if any(r.head != present[0].head for r in present):
            raise Unmergeable
        named = not positional
        head = None
        if present[0].head:
            head = self.unit([r.units[0] if r else None for r in reps], origin, named)
        runs_of = [
            None
            if r is None
            else segment(r.units[1:] if r.head else r.units, named, grow=not r.head)
            for r in reps
        ]
        length = max(len(runs) for runs in runs_of if runs is not None)
        if any(runs is not None and len(runs) not in (0, length) for runs in runs_of):
            raise Unmergeable
        runs = []
        for j in range(length):
            per = [None if rs is None or len(rs) < length else rs[j] for rs in runs_of]
            count = self.hole(
                [
                    MISSING if rs is None else len(run) if run else 0
                    for rs, run in zip(runs_of, per)
                ],
                f"{origin}_depth" if origin else "depth",
                "count",
            )
            unit = self.unit([progression_unit(run) if run else None for run in per], origin, named)
            first = next(run for run in per if run)
            prun = Run(unit, count, [[one.out_shape for one in u] for u in first])
            if named:
                labels = {split_number(run[0][0].name)[::2] for run in per if run}
                if len(labels) > 1 or len(per[0] and per[0][0] or []) > 1:
                    raise Unmergeable
                prun.prefix, prun.suffix = labels.pop() if labels else ("", "")
                prun.start = self.hole(
                    [split_number(run[0][0].name)[1] if run else MISSING for run in per], "start"
                )
            runs.append(prun)
        return Runs(head, runs)

    def unit(self, units: list, origin: str, named: bool) -> list[Child]:
        present = [u for u in units if u is not None]
        if any(len(u) != len(present[0]) for u in present):
            raise Unmergeable
        if named and any(u[i].name != present[0][i].name for u in present for i in range(len(u))):
            raise Unmergeable
        out = []
        for i, one in enumerate(present[0]):
            terms = [u[i].term if u is not None else None for u in units]
            out.append(
                Child(
                    one.name,
                    self.term(terms, f"{origin}_{one.name}" if origin else one.name),
                    one.out_shape,
                )
            )
        return out


def merge_orders(orders: list[list]) -> list:
    """The ordered union of key sequences; Unmergeable if two put keys in different orders."""
    merged: list = []
    for order in orders:
        for i, key in enumerate(order):
            if key not in merged:
                merged.insert(merged.index(order[i - 1]) + 1 if i else 0, key)
    for order in orders:
        positions = [merged.index(k) for k in order]
        if positions != sorted(positions):
            raise Unmergeable
    return merged

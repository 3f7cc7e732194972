"""The emitter: patterns → layout documents and lines of `__init__` and `forward`.

Holes become their resolved source (`value_text`: `base + i * step` inside a loop), runs become
comprehensions or `for` loops (short ones are written out), named containers `OrderedDict(...)`,
optional layers `if flag:` blocks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from archc.backends.codegen.arguments import NO_DEFAULT
from archc.backends.codegen.layout import Atom, Call, Comprehension, Expr, Prefixed, flat, layout
from archc.backends.codegen.names import MISSING, is_attribute, literal, same, shape_text
from archc.backends.codegen.terms import (
    INLINE,
    Child,
    ClassCall,
    Container,
    Hole,
    LayerCall,
    Run,
    Runs,
    unknown,
)

if TYPE_CHECKING:
    from archc.backends.codegen.classes import ClassDef


def value_text(hole: Hole, loop: str | None) -> str:
    """A hole's source, inside a loop over a run as `base + i * step`."""
    if hole.base is None:
        return hole.expr
    base, step = hole.base.expr, hole.step.expr
    if loop is None or step == "0":
        return base
    if loop.isdigit() and type(hole.base.const) is int and type(hole.step.const) is int:
        return literal(hole.base.const + int(loop) * hole.step.const)
    term = loop if step == "1" else f"{loop} * {step}"
    return term if base == "0" else f"{base} + {term}"


def constant(hole: Hole) -> Any:
    """The one value a hole has everywhere (in a run: the same in every unit), else MISSING."""
    if hole.base is None:
        return hole.const
    return hole.base.const if hole.step.expr == "0" else MISSING


def uses_loop(entries: list[Child]) -> bool:
    def holes(p: Any) -> Iterator[Hole]:
        if isinstance(p, LayerCall):
            yield from p.args
            yield from p.kwargs.values()
        elif isinstance(p, ClassCall):
            yield from p.args.values()
        elif isinstance(p, Container):
            for e in p.entries:
                if isinstance(e, Child):
                    yield from holes(e.term)
        else:
            unknown(p)

    return any(h.step is not None and h.step.expr != "0" for e in entries for h in holes(e.term))


is_keyword_name = is_attribute  # a child name that can be a keyword argument of OrderedDict


def access(name: str) -> str:
    """How forward reaches a child module."""
    return f"self.{name}" if is_attribute(name) else f"getattr(self, {json.dumps(name)})"


class Emitter:
    """Source code for patterns: expressions, __init__ statements, forward methods."""

    # expressions

    def expr(self, p: Any, loop: str | None = None) -> Expr:
        if isinstance(p, LayerCall):
            items: list[Expr] = [Atom(value_text(h, loop)) for h in p.args]
            if p.parameter:  # nn.Parameter(torch.full([size...], fill_value=...))
                items = [Call("", items, "[", "]", collection=True)]
            items += [Prefixed(f"{k}=", Atom(value_text(h, loop))) for k, h in p.kwargs.items()]
            return Call("nn.Parameter", [Call(p.ref, items)]) if p.parameter else Call(p.ref, items)
        if isinstance(p, ClassCall):
            items = []
            for param in p.klass.params:
                hole = p.args[param.name]
                text = value_text(hole, loop)
                if param.default is NO_DEFAULT:
                    items.append(Atom(text))
                elif not same(constant(hole), param.default):
                    items.append(Prefixed(f"{param.name}=", Atom(text)))
            call = Call(p.klass.name, items)
            return Prefixed("*", call) if p.klass.kind == INLINE else call
        if not isinstance(p, Container):
            unknown(p)
        if p.positional:
            return Call(p.base, self.positional_items(p.entries, loop))
        return Call(p.base, [self.named_dict(p.entries, loop)])

    def positional_items(self, entries: list, loop: str | None = None) -> list[Expr]:
        return [item for item, _ in self.numbered(entries, loop)]

    def numbered(self, entries: list, loop: str | None = None) -> list[tuple[Expr, tuple]]:
        """The items of a numbered sequence, each with the shape of its output."""
        items: list[tuple[Expr, tuple]] = []
        for entry in entries:
            if isinstance(entry, Child):
                items.append((self.expr(entry.term, loop), entry.out_shape))
                continue
            if not isinstance(entry, Runs):
                unknown(entry)
            head, runs = absorb_head(entry)
            items += [(self.expr(one.term, loop), one.out_shape) for one in head]
            for run in runs:
                items += self.run_items(run)
        return items

    def run_items(self, run: Run) -> list[tuple[Expr, tuple]]:
        """A run as items: written out if short, else a comprehension spliced in with `*`."""
        count = run.count.const
        last = run.shapes[-1][-1]
        if not written_out(run):
            var = "i" if uses_loop(run.unit) else "_"
            clause = Atom(f"for {var} in range({run.count.expr})")
            if len(run.unit) == 1:
                comp = Comprehension(self.expr(run.unit[0].term, var), [clause])
            else:  # several layers per block: a nested comprehension flattens them
                layers = Call("", [self.expr(one.term, var) for one in run.unit], collection=True)
                comp = Comprehension(Atom("layer"), [clause, Prefixed("for layer in ", layers)])
            return [(Prefixed("*", Call("", [comp], "[", "]")), last)]
        return [
            (self.expr(one.term, str(k) if count > 1 else None), run.shapes[k][j])
            for k in range(count)
            for j, one in enumerate(run.unit)
        ]

    def named_dict(self, entries: list, loop: str | None) -> Expr:
        """`OrderedDict(name=module, ...)` for a container with named children."""
        items: list[tuple[str, Expr] | tuple[str, Expr, Run]] = []
        for entry in entries:
            if isinstance(entry, Child):
                items.append((entry.name, self.expr(entry.term, loop)))
                continue
            if not isinstance(entry, Runs):
                unknown(entry)
            items += [(one.name, self.expr(one.term, loop)) for one in entry.head or []]
            for run in entry.runs:
                if run.count.const == 1:
                    items.append((self.run_name(run, None), self.expr(run.unit[0].term)))
                elif run.count.const != 0:
                    items.append((self.run_name(run, "i"), self.expr(run.unit[0].term, "i"), run))
        if len(items) == 1 and len(items[0]) == 3:  # only a run: OrderedDict({...})
            name, e, run = items[0]
            comp = Comprehension(
                Prefixed(f"{name}: ", e), [Atom(f"for i in range({run.count.expr})")]
            )
            return Call("OrderedDict", [Call("", [comp], "{", "}")])
        if all(len(item) == 3 or is_keyword_name(item[0]) for item in items):
            args: list[Expr] = []
            for item in items:
                if len(item) == 3:
                    comp = Comprehension(
                        Prefixed(f"{item[0]}: ", item[1]),
                        [Atom(f"for i in range({item[2].count.expr})")],
                    )
                    args.append(Prefixed("**", Call("", [comp], "{", "}")))
                else:
                    args.append(Prefixed(f"{item[0]}=", item[1]))
            return Call("OrderedDict", args)
        pairs: list[Expr] = []
        for item in items:
            pair = Call(
                "",
                [Atom(item[0] if len(item) == 3 else json.dumps(item[0])), item[1]],
                collection=True,
            )
            if len(item) == 3:
                comp = Comprehension(pair, [Atom(f"for i in range({item[2].count.expr})")])
                pairs.append(Prefixed("*", Call("", [comp], "[", "]")))
            else:
                pairs.append(pair)
        return Call("OrderedDict", [Call("", pairs, "[", "]", collection=True)])

    @staticmethod
    def number(run: Run, var: str) -> str:
        start = run.start.expr if run.start is not None else "0"
        return var if start == "0" else f"{var} + {start}"

    def run_name(self, run: Run, var: str | None) -> str:
        if var is None and run.start is not None and type(run.start.const) is int:
            return f"{run.prefix}{run.start.const}{run.suffix}"
        if var is None and (run.start is None or run.start.const is None):
            return run.prefix + run.suffix
        return f'f"{run.prefix}{{{self.number(run, var or "0")}}}{run.suffix}"'

    # statements

    def assign(self, one: Child, e: Expr, indent: int, *, none_first: bool) -> list[str]:
        """`self.name = ...`; for an optional layer under `if flag:` (after `self.name = None`
        where forward tests it)."""
        inner = indent + 4 if one.flag is not None else indent
        if is_attribute(one.name):
            lines = layout(e, inner, lead=f"self.{one.name} = ")
        else:
            lines = layout(Call("self.add_module", [Atom(json.dumps(one.name)), e]), inner)
        if one.flag is None:
            return lines
        pad = " " * indent
        first = [pad + f"self.{one.name} = None"] if none_first else []
        return [*first, pad + f"if {one.flag.expr}:", *lines]

    def attributes(
        self, entries: list, indent: int, *, none_first: bool, comments: bool = False
    ) -> list[str]:
        lines: list[str] = []
        for entry in entries:
            if isinstance(entry, Child):
                e = self.expr(entry.term)
                if comments and not entry.flag:
                    e.comment = shape_text(entry.out_shape)
                lines += self.assign(entry, e, indent, none_first=none_first)
                continue
            if not isinstance(entry, Runs):
                unknown(entry)
            for one in entry.head or []:
                lines += self.assign(one, self.expr(one.term), indent, none_first=none_first)
            for run in entry.runs:
                if run.count.const == 0:
                    continue
                if run.count.const == 1:
                    one = Child(self.run_name(run, None), run.unit[0].term, run.unit[0].out_shape)
                    lines += self.assign(one, self.expr(one.term), indent, none_first=none_first)
                    continue
                var = "i"
                lines.append(" " * indent + f"for {var} in range({run.count.expr}):")
                call = Call(
                    "self.add_module",
                    [Atom(self.run_name(run, var)), self.expr(run.unit[0].term, var)],
                )
                lines += layout(call, indent + 4)
        return lines

    def sequence_init(self, klass: ClassDef, indent: int = 8, comments: bool = False) -> list[str]:
        """__init__ body of an nn.Sequential (or Dense) subclass; body of an inline block's function."""
        entries = klass.groups[0][1]
        if not klass.positional:
            return [" " * indent + "super().__init__()"] + self.attributes(
                entries, indent, none_first=False, comments=comments
            )
        function = klass.kind == INLINE
        names = {p.name for p in klass.params}
        lines, var = self.list_statements(
            entries, "layers" if "layers" not in names else "modules", indent
        )
        if var is not None:
            return lines + [
                " " * indent + (f"return {var}" if function else f"super().__init__(*{var})")
            ]
        numbered = self.numbered(entries)
        items = [item for item, _ in numbered]
        for item, shape in numbered if comments else ():
            item.comment = shape_text(shape)
        if function:
            return layout(Call("", items, "[", "]", collection=True), indent, lead="return ")
        return layout(Call("super().__init__", items), indent)

    def list_statements(self, entries: list, var: str, indent: int) -> tuple[list[str], str | None]:
        """Statements filling a list `var` with a numbered sequence's layers when a run of
        several layers repeats a variable number of times; ([], None) when one expression will do."""
        if all(
            written_out(r) or len(r.unit) == 1
            for e in entries
            if isinstance(e, Runs)
            for r in e.runs
        ):
            return [], None
        lines: list[str] = []
        batch: list[Expr] = []

        def flush() -> None:
            if not batch:
                return
            if not lines:
                lines.extend(
                    layout(
                        Call("", list(batch), "[", "]", collection=True), indent, lead=f"{var} = "
                    )
                )
            elif len(batch) == 1:
                lines.extend(layout(Call(f"{var}.append", list(batch)), indent))
            else:
                lines.extend(
                    layout(
                        Call("", list(batch), "[", "]", collection=True), indent, lead=f"{var} += "
                    )
                )
            batch.clear()

        for entry in entries:
            if isinstance(entry, Child):
                batch.append(self.expr(entry.term))
                continue
            if not isinstance(entry, Runs):
                unknown(entry)
            head, runs = absorb_head(entry)
            batch.extend(self.expr(one.term) for one in head)
            for run in runs:
                if len(run.unit) == 1 or written_out(run):
                    batch.extend(item for item, _ in self.run_items(run))
                    continue
                flush()
                if not lines:
                    lines.append(" " * indent + f"{var} = []")
                loop = "i" if uses_loop(run.unit) else "_"
                lines.append(" " * indent + f"for {loop} in range({run.count.expr}):")
                unit = Call(
                    "", [self.expr(one.term, loop) for one in run.unit], "[", "]", collection=True
                )
                lines.extend(layout(unit, indent + 4, lead=f"{var} += "))
        flush()
        return lines, var

    def chain(self, entries: list[Child], source: str, var: str) -> list[str]:
        """Lines applying a chain of child modules to `source`, leaving the result in `var` (a
        learnable tensor multiplies it)."""
        lines: list[str] = []
        current = source
        for one in entries:
            module = access(one.name)
            parameter = isinstance(one.term, LayerCall) and one.term.parameter
            applied = f"{module} * {current}" if parameter else f"{module}({current})"
            if one.flag is not None:
                if current != var:
                    lines.append(f"{var} = {current}")
                lines += [f"if {module} is not None:", f"    {var} = {applied}"]
            else:
                lines.append(f"{var} = {applied}")
            current = var
        if current != var:
            lines.append(f"{var} = {current}")
        return lines


def written_out(run: Run) -> bool:
    """Short runs of a known length are written block by block; longer ones become loops."""
    count = run.count.const
    return type(count) is int and (count <= 1 or (len(run.unit) > 1 and count <= 3))


def absorb_head(rep: Runs) -> tuple[list[Child], list[Run]]:
    """A stage whose first block is like the others is one run (numbered containers only)."""
    head, runs = rep.head or [], rep.runs
    if not head or not runs or type(runs[0].count.const) is not int or uses_loop(runs[0].unit):
        return head, runs
    text = Emitter().expr
    if [flat(text(o.term)) for o in head] != [flat(text(o.term)) for o in runs[0].unit]:
        return head, runs
    count = runs[0].count.const + 1
    hole = Hole([count], "depth", "count", literal(count), count)
    shapes = [[one.out_shape for one in head], *runs[0].shapes]
    return [], [Run(runs[0].unit, hole, shapes), *runs[1:]]

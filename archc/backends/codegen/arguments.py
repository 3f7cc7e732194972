"""Argument naming: each Hole of a class pattern becomes a literal or a constructor argument.

A hole whose values all instances share is written in as a literal. Otherwise its column of
values is matched against *candidates*, named quantities known per instance, best names first:
the block's input width, the template's parameters (and `p - 1`, `p[k]`), its `let` values, the
output width. The first candidate whose values equal the hole's names it (`width`, `stride`);
a model-level parameter passes down under its own name; what matches nothing is named after
where it sits (`conv2_stride`). `Source`/`Order` say in which order a signature lists them.
"""

from __future__ import annotations

import ast
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from archc.backends.codegen.names import (
    MISSING,
    LayerRef,
    Namespace,
    Var,
    annotation,
    literal,
    plain,
    python_name,
    same,
)
from archc.spec import expr
from archc.spec.schema import Template

if TYPE_CHECKING:
    from archc.backends.codegen.terms import Hole, Instance

NO_DEFAULT: Any = MISSING


class Source(IntEnum):
    """Where a constructor argument's name comes from, in the order a signature lists them."""

    INPUT = 0  # in_channels / in_features
    BLOCK_PARAM = 1  # a parameter of the block template (template order)
    BLOCK_LET = 2  # a `let` value of the template (template order)
    OUTPUT = 3  # out_channels / out_features
    MODEL_PARAM = 4  # a model-level parameter passed down (the model's own order)
    UNNAMED = 5  # a value that matches nothing: named after where it sits
    FLAG = 6  # switches an optional layer on (`downsample=False`)


@dataclass(frozen=True, order=True)
class Order:
    """An argument's place in its signature: by source, then by index within the source.
    (Arguments with a default then move behind those without: see `Resolver.ordered`.)"""

    source: Source
    index: int = 0


@dataclass(eq=False)
class Param:
    """A constructor argument of a generated class: its values per instance and default."""

    name: str
    column: list
    order: Order
    default: Any = NO_DEFAULT

    decided: list = field(default_factory=list)  # per instance: the model parameter or ""

    def __post_init__(self) -> None:
        self.column = list(self.column)
        self.decided = [None] * len(self.column)

    @property
    def annotation(self) -> str:
        return annotation(self.column)

    def accepts(self, column: list) -> bool:
        """Whether a hole ties to model parameters exactly where this argument does."""
        return all(
            v is MISSING or d is None or d == (v.name if isinstance(v, Var) else "")
            for v, d in zip(column, self.decided)
        )

    def tie(self, column: list) -> None:
        for i, v in enumerate(column):
            if v is not MISSING and self.decided[i] is None:
                self.decided[i] = v.name if isinstance(v, Var) else ""
                if isinstance(v, Var):
                    self.column[i] = Var(v.name, self.column[i])


@dataclass
class Candidate:
    """A named quantity a hole's values may match: the argument and the expression using it."""

    name: str
    expr: str
    column: list
    param_column: list
    order: Order
    default: Any = NO_DEFAULT
    roles: tuple = ("value", "step")
    source: str = ""  # a let's expression (without `${}`)


class Resolver:
    """Turns each hole into a literal (all instances agree) or an argument of the class."""

    def __init__(
        self, instances: list[Instance], template: Template | None, model_params: dict | None = None
    ):
        self.params: dict[str, Param] = {}
        self.model_params = model_params
        self.candidates: list[Candidate] = []
        self.fallbacks: dict[tuple, str] = {}
        if model_params is None:
            self.candidates = list(candidates(instances, template))
        self.names = Namespace({c.name for c in self.candidates})  # the class's arguments
        # lets computed in __init__: name -> (order, code, values)
        self.locals: dict[str, tuple[Order, str, list]] = {}

    def resolve(self, hole: Hole) -> None:
        present = [v for v in hole.column if v is not MISSING]
        if not present:
            hole.expr, hole.const = ("0", 0) if hole.role == "step" else ("None", None)
            return
        first = present[0]
        if not isinstance(first, Var) and all(same(v, first) for v in present):
            # one value everywhere; in a layer several but not all instances have (a projection,
            # an `if`), an argument that varies and matches reads truer than the one value seen
            partial = 1 < len(present) < len(hole.column) and first not in (0, 1)
            if not partial or not self.match(hole, varying=True):
                hole.expr, hole.const = literal(first), first
            return
        if self.match(hole) or self.match_layer(hole):
            return
        if all(isinstance(v, Var) and v.name == first.name for v in present):
            hole.expr = self.model_param(first.name, hole.column).name
            return
        if hole.role == "flag":  # a switch the class has already (a layer's flag, a setting)
            switches = [(p.name, p.column) for p in self.params.values()]
            switches += [(name, column) for name, (_, _, column) in self.locals.items()]
            for name, column in switches:
                if all(v is MISSING or same(v, c) for v, c in zip(hole.column, column)):
                    if all(type(c) is bool for c in column):
                        hole.expr = name
                        return
        common = Counter(repr(v) for v in present).most_common(1)[0][0]
        filler = next(v for v in present if repr(v) == common)
        column = [filler if v is MISSING else v for v in hole.column]
        key = tuple((type(v).__name__, repr(v)) for v in column)
        if key not in self.fallbacks:
            default = False if hole.role == "flag" else NO_DEFAULT
            order = Order(
                Source.FLAG if hole.role == "flag" else Source.UNNAMED, len(self.fallbacks)
            )
            name = self.names.create_name(hole.origin)
            self.fallbacks[key] = self.param(name, column, order, default).name
        hole.expr = self.fallbacks[key]

    def match(self, hole: Hole, varying: bool = False) -> bool:
        """Name the hole after the first candidate whose values it has (where a model-level
        parameter stands for the value, the argument passes that parameter down)."""
        tied = any(isinstance(v, Var) for v in hole.column)
        for cand in self.candidates:
            if hole.role not in cand.roles or (
                varying and all(same(c, cand.column[0]) for c in cand.column)
            ):
                continue
            if not all(v is MISSING or same(plain(v), c) for v, c in zip(hole.column, cand.column)):
                continue
            if tied and (cand.expr != cand.name or cand.name in self.locals):
                continue  # a model parameter cannot stand for one element of a list argument
            param = self.params.get(cand.name)
            if param is not None and not param.accepts(hole.column):
                continue
            hole.expr = cand.expr
            if tied or not self.compute(cand):
                self.param(cand.name, cand.param_column, cand.order, cand.default).tie(hole.column)
            return True
        return False

    def compute(self, cand: Candidate) -> bool:
        """Compute a let in __init__ from the class's arguments (`padding = (kernel - 1) // 2`,
        as torchvision's Conv2dNormActivation does) where its expression reads only block
        parameters, the input width and such lets, and calls no function."""
        if cand.name in self.locals:
            return True
        if not cand.source or cand.name in self.params:
            return False
        tree = expr.parse(cand.source)
        words = expr.names(cand.source)
        plain = {c.name: c for c in self.candidates if c.expr == c.name and "value" in c.roles}
        if any(isinstance(n, (ast.Call, ast.IfExp)) for n in ast.walk(tree)) or not all(
            w in plain
            and w != cand.name
            and (
                plain[w].order.source in (Source.INPUT, Source.BLOCK_PARAM)
                or (plain[w].order < cand.order and self.computable(plain[w]))
            )
            for w in words
        ):
            return False  # (a let read from a let passed in would pass both: it stays passed)
        for word in words:
            if not self.compute(plain[word]):
                c = plain[word]
                self.param(c.name, c.param_column, c.order, c.default)
        self.locals[cand.name] = (cand.order, f"{cand.name} = {ast.unparse(tree.body)}", cand.column)
        return True

    def computable(self, cand: Candidate) -> bool:
        """Whether `compute` would compute a let (without computing it)."""
        if cand.name in self.locals:
            return True
        saved = dict(self.locals), dict(self.params)
        try:
            return self.compute(cand)
        finally:
            self.locals, self.params = saved

    def local_lines(self) -> list[str]:
        """The statements computing the lets the class uses, in the template's order."""
        return [code for _, code, _ in sorted(self.locals.values(), key=lambda v: v[0])]

    def condition(self, hole: Hole, source: str) -> bool:
        """Name the flag of a layer built under `if: ${source}` by the condition itself, what
        the class's instances all agree on folded in (`not fused and expand` is `expand` in a
        class of unfused blocks): a block parameter or let (`se`, `not expand`) or a
        comparison of the block's values (`expanded != in_channels`). Where only a combination
        of switches (`fused and expand`) would do, the instances are not one class."""
        if not expr.is_expression(source):
            return False
        text = source[2:-1]
        words = expr.names(text)
        plain = {c.name: c for c in self.candidates if c.expr == c.name and "value" in c.roles}
        if not words <= set(plain):
            return False
        fixed = {
            w: plain[w].column[0]
            for w in words
            if type(plain[w].column[0]) is bool and all(same(v, plain[w].column[0]) for v in plain[w].column)
        }
        body = fold(expr.parse(text).body, fixed)
        if not isinstance(body, ast.UnaryOp):
            switch = body
        else:
            switch = body.operand if isinstance(body.op, ast.Not) else None
        if not isinstance(switch, ast.Name) and any(
            isinstance(node, (ast.BoolOp, ast.UnaryOp, ast.Call, ast.IfExp, ast.Constant))
            and not (isinstance(node, ast.Constant) and type(node.value) is int)
            for node in ast.walk(body)
        ):
            return False
        code = ast.unparse(body)
        used = sorted({n.id for n in ast.walk(body) if isinstance(n, ast.Name)}, key=lambda w: plain[w].order)
        for i, value in enumerate(hole.column):
            if value is MISSING:
                continue
            try:
                if expr.evaluate(code, {w: plain[w].column[i] for w in used}) is not value:
                    return False
            except expr.ExprError:
                return False
        for word in used:
            cand = plain[word]
            if not self.compute(cand):
                self.param(cand.name, cand.param_column, cand.order, cand.default)
        hole.expr = code
        return True

    def match_layer(self, hole: Hole) -> bool:
        """Name a hole of layer classes after the block parameter choosing them (`act`: relu
        → nn.ReLU, hardswish → nn.Hardswish): the argument then takes the classes."""
        if not any(isinstance(v, LayerRef) for v in hole.column):
            return False
        for cand in self.candidates:
            if cand.expr != cand.name or not all(isinstance(c, str) for c in cand.column):
                continue
            chosen: dict = {}  # parameter value -> layer class, one to one
            if not all(
                v is MISSING or chosen.setdefault(c, v) == v for v, c in zip(hole.column, cand.column)
            ) or len(set(chosen.values())) != len(chosen):
                continue
            fill = next(iter(chosen.values()))
            column = [chosen.get(c, fill) for c in cand.column]
            existing = self.params.get(cand.name)
            if existing is not None and not all(map(same, existing.column, column)):
                continue
            default = cand.default
            default = chosen.get(default, NO_DEFAULT) if isinstance(default, str) else NO_DEFAULT
            hole.expr = cand.name
            self.param(cand.name, column, cand.order, default)
            return True
        return False

    def model_param(self, name: str, column: list) -> Param:
        """The argument passing a model-level parameter down (in the model: the parameter)."""
        if self.model_params is not None:
            index = list(self.model_params).index(name)
            order = Order(Source.MODEL_PARAM, index)
            self.names.reserve(name)
            return self.param(name, column, order, self.model_params[name])
        # an instance without the layer passes the parameter on all the same
        filler = next(v for v in column if v is not MISSING)
        column = [filler if v is MISSING else v for v in column]
        existing = self.params.get(name)
        if existing is None or not all(map(same, existing.column, column)):
            name = self.names.create_name(name)
        return self.param(name, column, Order(Source.MODEL_PARAM), NO_DEFAULT)

    def param(self, name: str, column: list, order: Order, default: Any) -> Param:
        if name not in self.params:
            self.params[name] = Param(name, column, order, default)
        return self.params[name]

    def ordered(self) -> list[Param]:
        params = sorted(self.params.values(), key=lambda p: p.order)
        return [p for p in params if p.default is NO_DEFAULT] + [
            p for p in params if p.default is not NO_DEFAULT
        ]


def fold(node: ast.expr, fixed: dict[str, bool]) -> ast.expr:
    """A condition with the switches `fixed` in a class replaced by their values, simplified."""
    if isinstance(node, ast.Name) and node.id in fixed:
        return ast.Constant(fixed[node.id])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = fold(node.operand, fixed)
        return ast.Constant(not inner.value) if isinstance(inner, ast.Constant) else ast.UnaryOp(ast.Not(), inner)
    if isinstance(node, ast.BoolOp):
        absorbing = isinstance(node.op, ast.Or)  # True absorbs an `or`, False an `and`
        values = []
        for value in (fold(v, fixed) for v in node.values):
            if isinstance(value, ast.Constant) and type(value.value) is bool:
                if value.value is absorbing:
                    return ast.Constant(absorbing)
                continue
            values.append(value)
        if not values:
            return ast.Constant(not absorbing)
        return values[0] if len(values) == 1 else ast.BoolOp(node.op, values)
    return node


def candidates(instances: list[Instance], template: Template | None) -> Iterator[Candidate]:
    """What a class's varying values are matched against, best names first."""
    flat = len(instances[0].in_shape) == 1
    ins = [inst.in_shape[0] for inst in instances]
    yield Candidate(
        "in_features" if flat else "in_channels",
        "in_features" if flat else "in_channels",
        ins,
        ins,
        Order(Source.INPUT),
    )
    args = [inst.block_args or {} for inst in instances]
    declared = template.params if template is not None else {}
    names = list(dict.fromkeys(k for a in args for k in a))
    seen = {"in_features" if flat else "in_channels"}
    for index, name in enumerate(names):
        py = python_name(name)
        if not all(name in a for a in args) or py in seen:
            continue
        seen.add(py)
        order = Order(Source.BLOCK_PARAM, index)
        column = [a[name] for a in args]
        default = declared.get(name)
        default = NO_DEFAULT if default is None or default is MISSING else default
        if all(isinstance(v, list) for v in column) and len({len(v) for v in column}) == 1:
            for k in range(len(column[0])):
                yield Candidate(py, f"{py}[{k}]", [v[k] for v in column], column, order)
            continue
        yield Candidate(py, py, column, column, order, default, ("value", "step", "flag", "count"))
        if all(type(v) is bool for v in column):  # an optional layer built where it is false
            yield Candidate(py, f"not {py}", [not v for v in column], column, order, default, ("if",))
        if all(type(v) is int for v in column):
            yield Candidate(
                py, f"{py} - 1", [v - 1 for v in column], column, order, default, ("count",)
            )
    lets = template.let if template is not None else {}
    for index, name in enumerate(lets):
        column = []
        for inst, a in zip(instances, args):
            env = {**a, "in_channels": inst.in_shape[0], **inst.position}
            for key, source in lets.items():  # a let that cannot be evaluated here is skipped
                try:
                    env[key] = (
                        expr.evaluate(source[2:-1], env) if expr.is_expression(source) else source
                    )
                except expr.ExprError:
                    pass
            if name not in env:
                break
            column.append(env[name])
        py = python_name(name)
        if len(column) == len(instances) and py not in seen:
            seen.add(py)
            order = Order(Source.BLOCK_LET, index)
            source = lets[name]
            source = source[2:-1] if expr.is_expression(source) and py == name else ""
            yield Candidate(py, py, column, column, order, roles=("value", "step", "if"), source=source)
            if all(type(v) is bool for v in column):
                yield Candidate(py, f"not {py}", [not v for v in column], column, order, roles=("if",))
    outs = [inst.out_shape[0] for inst in instances]
    out_name = "out_features" if len(instances[0].out_shape) == 1 else "out_channels"
    if out_name not in seen:
        yield Candidate(out_name, out_name, outs, outs, Order(Source.OUTPUT))

"""Argument naming: each Hole of a class pattern becomes a literal or a constructor argument.

A hole whose values all instances share is written in as a literal. Otherwise its column of
values is matched against *candidates*, named quantities known per instance, best names first:
the block's input width, the template's parameters (and `p - 1`, `p[k]`), its `let` values, the
output width. The first candidate whose values equal the hole's names it (`width`, `stride`);
a model-level parameter passes down under its own name; what matches nothing is named after
where it sits (`conv2_stride`). `Source`/`Order` say in which order a signature lists them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from archc.backends.codegen.names import (
    MISSING,
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

    def resolve(self, hole: Hole) -> None:
        present = [v for v in hole.column if v is not MISSING]
        if not present:
            hole.expr, hole.const = ("0", 0) if hole.role == "step" else ("None", None)
            return
        first = present[0]
        if not isinstance(first, Var) and all(same(v, first) for v in present):
            # one value everywhere; in a layer several but not all instances have (a projection,
            # an `if`), an argument that varies and matches reads truer than the one value seen
            partial = 1 < len(present) < len(hole.column)
            if not partial or not self.match(hole, varying=True):
                hole.expr, hole.const = literal(first), first
            return
        if self.match(hole):
            return
        if all(isinstance(v, Var) and v.name == first.name for v in present):
            hole.expr = self.model_param(first.name, hole.column).name
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
            if tied and cand.expr != cand.name:
                continue  # a model parameter cannot stand for one element of a list argument
            param = self.params.get(cand.name)
            if param is not None and not param.accepts(hole.column):
                continue
            hole.expr = cand.expr
            self.param(cand.name, cand.param_column, cand.order, cand.default).tie(hole.column)
            return True
        return False

    def model_param(self, name: str, column: list) -> Param:
        """The argument passing a model-level parameter down (in the model: the parameter)."""
        if self.model_params is not None:
            index = list(self.model_params).index(name)
            order = Order(Source.MODEL_PARAM, index)
            self.names.reserve(name)
            return self.param(name, column, order, self.model_params[name])
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
            yield Candidate(py, py, column, column, Order(Source.BLOCK_LET, index))
    outs = [inst.out_shape[0] for inst in instances]
    out_name = "out_features" if len(instances[0].out_shape) == 1 else "out_channels"
    if out_name not in seen:
        yield Candidate(out_name, out_name, outs, outs, Order(Source.OUTPUT))

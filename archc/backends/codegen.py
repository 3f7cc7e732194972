"""Readable, standalone PyTorch source from a compiled spec (`archc codegen`).

The inferred tree is lowered to construction terms that hold concrete values: `nn.<Layer>`
calls (from each primitive's own `torch_layer`), containers, and instances of classes-to-be
(block-template instances, residual and parallel nodes). The instances of one block type are
anti-unified into one class: what all instances share is written into the class, what differs
becomes a constructor argument, named after the template parameter (or `in_channels`, ...)
whose values it matches. Stages and dense blocks become loops over runs of equal (or
arithmetically growing) blocks, so a file grows with block types and stages, not depth.
Model-level parameters that feed layers directly (found by recompiling the spec with other
values) become keyword arguments of the model. jinja2 templates lay the file out and a small
line breaker formats it as `ruff format` would. Nothing here imports torch.
"""

from __future__ import annotations

import builtins
import json
import keyword
import re
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from archc.compiler import Spec, compile_document, library, load
from archc.errors import ArchcError
from archc.ir import Node, splice
from archc.outputs import MARKER, OutputError, contained, write_atomic, written_by_archc
from archc.primitives import pair_or_int
from archc.spec import expr
from archc.spec.loader import Document, load_file
from archc.spec.schema import NAME_RE, Template

LINE_LENGTH = 100
TEMPLATES = Path(__file__).parent / "templates"

# Names the generated code uses itself; spec names that collide get another spelling.
TAKEN = frozenset({"self", "m", "i", "_", "torch", "nn", "OrderedDict", "Dense"})
LOCALS = frozenset({"x", "out", "identity"})  # forward's own variables
ARG_NAMES = {  # positional arguments of the nn layers archc emits, for naming constructor args
    "Conv2d": ("in_channels", "out_channels"),
    "Linear": ("in_features", "out_features"),
    "BatchNorm2d": ("num_features",),
    "BatchNorm1d": ("num_features",),
    "LocalResponseNorm": ("size",),
    "AdaptiveAvgPool2d": ("output_size",),
    "AdaptiveMaxPool2d": ("output_size",),
}
FAMILY_NAMES = {  # how architecture names are capitalised, for the model's class name
    "alexnet": "AlexNet", "densenet": "DenseNet", "googlenet": "GoogLeNet", "lenet": "LeNet",
    "mobilenet": "MobileNet", "nin": "NiN", "resnet": "ResNet", "resnext": "ResNeXt",
    "vgg": "VGG", "inception": "Inception", "efficientnet": "EfficientNet",
}  # fmt: skip


# ---- values ----------------------------------------------------------------------------------


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a value an instance does not have (optional layer, shorter run)


@dataclass(frozen=True)
class Var:
    """A value that is a model-level parameter of the spec: the generated code names it."""

    name: str
    value: Any


@dataclass(frozen=True)
class Aff:
    """A value along a run of repeated blocks: base + i * step (step MISSING in a run of one)."""

    base: Any
    step: Any


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type (True is not 1 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, (Var, Aff)):
        return all(same(x, y) for x, y in zip(a.__dict__.values(), b.__dict__.values()))
    return a == b


def plain(value: Any) -> Any:
    return value.value if isinstance(value, Var) else value


def literal(value: Any) -> str:
    """Python source for a value, in ruff format's style (double quotes)."""
    if isinstance(value, Var):
        return value.name
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(literal, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(literal, value)) + "]"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    raise TypeError(f"no literal for {value!r}")  # pragma: no cover


def annotation(values: list) -> str:
    """A type annotation covering the values an argument takes."""

    def one(v: Any) -> str:
        v = v.value if isinstance(v, Var) else v
        if isinstance(v, (tuple, list)):
            inner = sorted({one(e) for e in v}) or ["int"]
            return (
                f"tuple[{', '.join(one(e) for e in v)}]"
                if isinstance(v, tuple)
                else f"list[{' | '.join(inner)}]"
            )
        return "None" if v is None else type(v).__name__

    names = list(dict.fromkeys(one(v) for v in values if v is not MISSING))
    return " | ".join(names) or "int"


def python_name(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """`name` if it can be a local name in generated code, else a close variant that can."""
    base = name if NAME_RE.match(name) else "arg_" + re.sub(r"\W", "_", name)
    candidate = base
    while (
        keyword.iskeyword(candidate)
        or candidate in TAKEN
        or hasattr(builtins, candidate)
        or candidate in taken
    ):
        candidate += "_"
    return candidate


def camel(name: str) -> str:
    """`dense_layer` → `DenseLayer`, `resnet50` → `ResNet50`, `wide_resnet50_2` → `WideResNet50_2`."""
    out = ""
    for part in name.split("_"):
        if not part:
            continue
        head = re.match(r"[a-z]*", part).group()
        word = (
            FAMILY_NAMES.get(head, part[:1].upper() + head[1:]) + part[len(head) :]
            if head
            else part
        )
        out += ("_" if out and part[0].isdigit() else "") + word
    return out or "Model"


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# ---- layout: breaking long expressions as ruff format does -----------------------------------


class Expr:
    """An expression the line breaker can lay out; `comment` trails its last line."""

    comment: str = ""

    def flat(self) -> str:
        raise NotImplementedError

    def parts(self) -> list[Expr]:
        return []

    def has_comment(self) -> bool:
        return bool(self.comment) or self.inner_comment()

    def inner_comment(self) -> bool:
        return any(part.has_comment() for part in self.parts())


@dataclass
class Atom(Expr):
    """Text that is never broken."""

    text: str
    comment: str = ""

    def flat(self) -> str:
        return self.text


@dataclass
class Lead(Expr):
    """`prefix` + an expression: keyword arguments, `*` and `**` unpacking, dict items."""

    prefix: str
    value: Expr
    comment: str = ""

    def flat(self) -> str:
        return self.prefix + self.value.flat()

    def parts(self) -> list[Expr]:
        return [self.value]


@dataclass
class Call(Expr):
    """`head(items)`; with open/close also a list, tuple or dict; `collection` for displays."""

    head: str
    items: list[Expr]
    open: str = "("
    close: str = ")"
    collection: bool = False
    comment: str = ""

    def flat(self) -> str:
        return f"{self.head}{self.open}{', '.join(i.flat() for i in self.items)}{self.close}"

    def parts(self) -> list[Expr]:
        return self.items


@dataclass
class Comp(Expr):
    """A comprehension's element and its `for` clauses (inside a Call's brackets)."""

    element: Expr
    clauses: list[Expr]
    comment: str = ""

    def flat(self) -> str:
        return " ".join([self.element.flat(), *(c.flat() for c in self.clauses)])

    def parts(self) -> list[Expr]:
        return [self.element, *self.clauses]


def layout(e: Expr, indent: int, lead: str = "", trail: str = "") -> list[str]:
    """Lines for `lead + e + trail`, as ruff format breaks them: flat if that fits (and no
    comment inside forces a break), else split at the last bracket, recursively."""
    pad = " " * indent
    comment = f"  # {e.comment}" if e.comment else ""
    text = lead + e.flat() + trail
    if not e.inner_comment() and indent + len(text + comment) <= LINE_LENGTH:
        return [pad + text + comment]
    prefix = ""
    while isinstance(e, Lead):
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
    if len(items) == 1 and isinstance(items[0], Comp):
        comp = items[0]
        if not comp.has_comment() and indent + len(comp.flat()) <= LINE_LENGTH:
            return [" " * indent + comp.flat()]
        return [line for part in (comp.element, *comp.clauses) for line in layout(part, indent)]
    joined = ", ".join(i.flat() for i in items)
    explode = call.collection and len(items) > 1
    if not explode and not call.inner_comment() and indent + len(joined) <= LINE_LENGTH:
        return [" " * indent + joined]
    if len(items) == 1 and not explode:
        return layout(items[0], indent)
    return [line for item in items for line in layout(item, indent, trail=",")]


# ---- terms: how each module is constructed, with concrete values ------------------------------


@dataclass(eq=False)
class Leaf:
    """`nn.<cls>(*args, **kwargs)` for one primitive."""

    node: Node
    cls: str
    args: list
    kwargs: dict


@dataclass(eq=False)
class Make:
    """An instance of a generated class; `args` overrides the instance's own (runs)."""

    inst: Instance
    args: dict | None = None

    @property
    def values(self) -> dict:
        return self.args if self.args is not None else self.inst.args


@dataclass(eq=False)
class Box:
    """A container: nn.Sequential, or Dense for the dense combinator."""

    node: Node
    base: str
    entries: list
    positional: bool


@dataclass(eq=False)
class One:
    """One registered child module."""

    name: str
    term: Any
    node: Node


@dataclass(eq=False)
class Rep:
    """A stage's or dense block's units (each the modules one block instance registers)."""

    units: list[list[One]]
    head: bool  # a stage: the first block differs (stride, width, projection)


@dataclass(eq=False)
class Instance:
    """A node that becomes an instance of a generated class."""

    node: Node
    key: tuple
    kind: str  # seq, dense, residual, parallel or model
    groups: list[tuple[str, list]] = field(default_factory=list)
    positional: bool = False
    height: int = 0
    order: int = 0
    klass: ClassDef | None = None
    args: dict = field(default_factory=dict)


BASES = {"seq": "nn.Sequential", "stage": "nn.Sequential", "dense": "Dense", "model": "nn.Module"}


def field_value(node: Node, name: str) -> Any:
    """The primitive parameter behind a torch keyword argument `torch_layer` left out."""
    value = getattr(node.params, name, MISSING)
    return pair_or_int(value) if isinstance(value, tuple) else value


def is_positional(node: Node) -> bool:
    names = [c.name for c in node.registered()]
    return names == [str(i) for i in range(len(names))]


class Lowering:
    """IR nodes → terms; class-worthy nodes → Instances, collected in tree order."""

    def __init__(self, tags: dict[str, dict]):
        self.tags = tags
        self.instances: list[Instance] = []

    def term(self, node: Node) -> Any:
        if node.is_primitive:
            return self.leaf(node)
        if node.kind in ("residual", "parallel", "gate") or node.template is not None:
            return Make(
                self.instance(
                    node,
                    ("block", node.template.name) if node.template is not None else ("kind", node.kind),
                )
            )
        positional = is_positional(node)
        return Box(node, BASES[node.kind], self.entries(node, positional), positional)

    def leaf(self, node: Node) -> Leaf:
        layer = node.primitive.torch_layer(node.params, node.in_shape)
        tags = self.tags.get(node.path, {})
        args = [Var(tags[i], v) if i in tags else v for i, v in enumerate(layer.args)]
        kwargs = {k: Var(tags[k], v) if k in tags else v for k, v in layer.kwargs.items()}
        for k in tags:  # a model parameter at its default value: torch_layer left it out
            if isinstance(k, str) and k not in kwargs:
                kwargs[k] = Var(tags[k], field_value(node, k))
        return Leaf(node, layer.cls, args, kwargs)

    def instance(self, node: Node, key: tuple, kind: str | None = None) -> Instance:
        inst = Instance(node, key, kind or node.kind, order=len(self.instances))
        self.instances.append(inst)
        if inst.kind in ("residual", "gate"):
            for child in node.children:
                if inst.groups and inst.groups[-1][0] == child.role:
                    inst.groups[-1][1].extend(self.flat(child))
                else:
                    inst.groups.append((child.role, self.flat(child)))
        elif inst.kind == "parallel":
            inst.groups = [(child.name, self.flat(child)) for child in node.children]
        else:  # an inline block spliced into a numbered list is numbered too
            inst.positional = inst.kind == "inline" or is_positional(node)
            inst.groups = [("", self.entries(node, inst.positional))]
        inst.height = 1 + max((m.inst.height for m in makes(inst.groups)), default=0)
        return inst

    def entries(self, node: Node, positional: bool) -> list:
        """A container's children, stages and dense blocks as Reps, inline groups spliced in:
        an inline block in a numbered list as a call of a function returning its layers."""
        if node.kind in ("dense", "stage"):
            return [Rep([self.flat(c) for c in node.children], head=node.kind == "stage")]
        out: list = []
        for child in node.children:
            if not child.inline:
                out.append(One(child.name, self.term(child), child))
            elif positional and child.template is not None:
                out.append(
                    One(
                        child.name,
                        Make(self.instance(child, ("block", child.template.name), "inline")),
                        child,
                    )
                )
            else:
                out.extend(self.entries(child, positional))
        return out

    def flat(self, node: Node) -> list[One]:
        leaves = splice([node])
        return [One(leaf.name, self.term(leaf), leaf) for leaf in leaves]


def makes(groups: list[tuple[str, list]]) -> Iterator[Make]:
    """The class instances directly inside some entries (not inside nested instances)."""

    def walk(term: Any) -> Iterator[Make]:
        if isinstance(term, Make):
            yield term
        elif isinstance(term, Box):
            yield from entries(term.entries)

    def entries(items: list) -> Iterator[Make]:
        for entry in items:
            if isinstance(entry, One):
                yield from walk(entry.term)
            else:
                for unit in entry.units:
                    yield from entries(unit)

    for _, items in groups:
        yield from entries(items)


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


# ---- patterns: the code of a class, with holes where instances differ ----------------------


@dataclass(eq=False)
class Hole:
    """A value that may differ between instances; `expr` is its Python source once resolved."""

    column: list
    origin: str
    role: str = "value"  # value, count, step or flag
    expr: str = ""
    const: Any = MISSING  # the value when all instances agree
    base: Hole | None = None  # for runs: the first unit's value and the step
    step: Hole | None = None


@dataclass(eq=False)
class PLeaf:
    cls: str
    args: list[Hole]
    kwargs: dict[str, Hole]


@dataclass(eq=False)
class PMake:
    klass: ClassDef
    args: list[Hole]


@dataclass(eq=False)
class PBox:
    base: str
    positional: bool
    entries: list


@dataclass(eq=False)
class POne:
    name: str
    term: Any
    node: Node
    flag: Hole | None = None  # optional: built only when the flag is true


@dataclass(eq=False)
class PRun:
    unit: list[POne]
    count: Hole
    nodes: list[list[Node]] = field(default_factory=list)  # the first instance's, per unit
    prefix: str = ""
    suffix: str = ""
    start: Hole | None = None


@dataclass(eq=False)
class PRep:
    head: list[POne] | None
    runs: list[PRun]


class Unmergeable(Exception):
    """Two instances cannot share one class."""


class Unifier:
    """Anti-unification of the terms of several instances into one pattern."""

    def __init__(self, resolver: Resolver | None = None):
        self.resolver = resolver

    def hole(self, column: list, origin: str, role: str = "value") -> Hole:
        hole = Hole(column, origin, role)
        if any(isinstance(v, Aff) for v in column):
            hole.base = self.hole(
                [v.base if isinstance(v, Aff) else MISSING for v in column], origin
            )
            hole.step = self.hole(
                [v.step if isinstance(v, Aff) else MISSING for v in column],
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
        if isinstance(first, Leaf):
            return self.leaf(terms, present, origin)
        if isinstance(first, Make):
            if any(t.inst.klass is not first.inst.klass for t in present):
                raise Unmergeable
            return PMake(first.inst.klass, [
                self.hole([t.values[p.name] if t else MISSING for t in terms], f"{origin}_{p.name}")
                for p in first.inst.klass.params
            ])  # fmt: skip
        if any(t.base != first.base or t.positional != first.positional for t in present):
            raise Unmergeable
        lists = [t.entries if t else None for t in terms]
        return PBox(
            first.base,
            first.positional,
            self.entries(lists, first.positional, origin, optional=False),
        )

    def leaf(self, terms: list, present: list, origin: str) -> PLeaf:
        first = present[0]
        if any(t.cls != first.cls or len(t.args) != len(first.args) for t in present):
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
        fields = list(type(first.node.params).model_fields)
        keys = merge_orders([list(t.kwargs) for t in present])
        for key in sorted(keys, key=lambda k: fields.index(k) if k in fields else -1):
            if any(key not in t.kwargs for t in present):  # fill it from the primitive's parameter
                for t in present:
                    value = t.kwargs.get(key, MISSING)
                    filled = field_value(t.node, key)
                    if filled is MISSING or (
                        value is not MISSING and not same(plain(value), filled)
                    ):
                        raise Unmergeable
            column = [
                MISSING if t is None else t.kwargs.get(key, field_value(t.node, key)) for t in terms
            ]
            kwargs[key] = self.hole(column, f"{origin}_{key}")
        return PLeaf(first.cls, args, kwargs)

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
                if not optional or not NAME_RE.match(one.name):
                    raise Unmergeable  # (a numbered layer cannot be left out: the rest renumber)
                column = [MISSING if k is None else f is not None for k, f in zip(keyed, found)]
                flag = self.hole(column, one.name, "flag")
            term = self.term([f.term if f else None for f in found], prefix)
            out.append(POne(one.name, term, one.node, flag))
        return out

    @staticmethod
    def keyed(items: list, positional: bool) -> dict:
        out, ones, reps = {}, 0, 0
        for entry in items:
            if isinstance(entry, Rep):
                out[("rep", reps)] = entry
                reps += 1
            else:
                out[("one", ones) if positional else ("name", entry.name)] = entry
                ones += 1
        return out

    def rep(self, reps: list, positional: bool, origin: str) -> PRep:
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
            unit = self.unit([affine_unit(run) if run else None for run in per], origin, named)
            first = next(run for run in per if run)
            prun = PRun(unit, count, [[one.node for one in u] for u in first])
            if named:
                labels = {label(run[0][0].name)[::2] for run in per if run}
                if len(labels) > 1 or len(per[0] and per[0][0] or []) > 1:
                    raise Unmergeable
                prun.prefix, prun.suffix = labels.pop() if labels else ("", "")
                prun.start = self.hole(
                    [label(run[0][0].name)[1] if run else MISSING for run in per], "start"
                )
            runs.append(prun)
        return PRep(head, runs)

    def unit(self, units: list, origin: str, named: bool) -> list[POne]:
        present = [u for u in units if u is not None]
        if any(len(u) != len(present[0]) for u in present):
            raise Unmergeable
        if named and any(u[i].name != present[0][i].name for u in present for i in range(len(u))):
            raise Unmergeable
        out = []
        for i, one in enumerate(present[0]):
            terms = [u[i].term if u is not None else None for u in units]
            out.append(
                POne(
                    one.name,
                    self.term(terms, f"{origin}_{one.name}" if origin else one.name),
                    one.node,
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


# ---- resolving holes into constructor arguments ----------------------------------------------

NO_DEFAULT: Any = MISSING


@dataclass(eq=False)
class Param:
    """A constructor argument of a generated class: its values per instance and default."""

    name: str
    column: list
    rank: tuple
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
    rank: tuple
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
            rank = (6 if hole.role == "flag" else 5, len(self.fallbacks))
            name = python_name(hole.origin, set(self.params) | {c.name for c in self.candidates})
            self.fallbacks[key] = self.param(name, column, rank, default).name
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
            self.param(cand.name, cand.param_column, cand.rank, cand.default).tie(hole.column)
            return True
        return False

    def model_param(self, name: str, column: list) -> Param:
        """The argument passing a model-level parameter down (in the model: the parameter)."""
        if self.model_params is not None:
            order = list(self.model_params).index(name)
            return self.param(name, column, (4, order), self.model_params[name])
        existing = self.params.get(name)
        if existing is None or not all(map(same, existing.column, column)):
            taken = {c.name for c in self.candidates} | set(self.params)
            name = python_name(name, taken) if name in taken else name
        return self.param(name, column, (4, 0), NO_DEFAULT)

    def param(self, name: str, column: list, rank: tuple, default: Any) -> Param:
        if name not in self.params:
            self.params[name] = Param(name, column, rank, default)
        return self.params[name]

    def ordered(self) -> list[Param]:
        params = sorted(self.params.values(), key=lambda p: p.rank)
        return [p for p in params if p.default is NO_DEFAULT] + [
            p for p in params if p.default is not NO_DEFAULT
        ]


def candidates(instances: list[Instance], template: Template | None) -> Iterator[Candidate]:
    """What a class's varying values are matched against, best names first."""
    nodes = [inst.node for inst in instances]
    flat = len(nodes[0].in_shape) == 1
    ins = [n.in_shape[0] for n in nodes]
    yield Candidate(
        "in_features" if flat else "in_channels",
        "in_features" if flat else "in_channels",
        ins,
        ins,
        (0,),
    )
    args = [n.template.args if n.template is not None else {} for n in nodes]
    declared = template.params if template is not None else {}
    names = list(dict.fromkeys(k for a in args for k in a))
    seen = {"in_features" if flat else "in_channels"}
    for rank, name in enumerate(names):
        py = python_name(name)
        if not all(name in a for a in args) or py in seen:
            continue
        seen.add(py)
        column = [a[name] for a in args]
        default = declared.get(name)
        default = NO_DEFAULT if default is None or default is MISSING else default
        if all(isinstance(v, list) for v in column) and len({len(v) for v in column}) == 1:
            for k in range(len(column[0])):
                yield Candidate(py, f"{py}[{k}]", [v[k] for v in column], column, (1, rank))
            continue
        yield Candidate(
            py, py, column, column, (1, rank), default, ("value", "step", "flag", "count")
        )
        if all(type(v) is int for v in column):
            yield Candidate(
                py, f"{py} - 1", [v - 1 for v in column], column, (1, rank), default, ("count",)
            )
    lets = template.let if template is not None else {}
    for rank, name in enumerate(lets):
        column = []
        for inst, a in zip(instances, args):
            env = {**a, "in_channels": inst.node.in_shape[0]}
            try:
                for key, source in lets.items():
                    env[key] = (
                        expr.evaluate(source[2:-1], env) if expr.is_expression(source) else source
                    )
            except expr.ExprError:
                break
            column.append(env[name])
        py = python_name(name)
        if len(column) == len(instances) and py not in seen:
            seen.add(py)
            yield Candidate(py, py, column, column, (2, rank))
    outs = [n.out_shape[0] for n in nodes]
    out_name = "out_features" if len(nodes[0].out_shape) == 1 else "out_channels"
    if out_name not in seen:
        yield Candidate(out_name, out_name, outs, outs, (3,))


# ---- classes ----------------------------------------------------------------------------------


@dataclass(eq=False)
class ClassDef:
    """One generated class: its name, pattern (code with holes) and constructor arguments."""

    name: str
    kind: str
    groups: list[tuple[str, list]]
    params: list[Param]
    instances: list[Instance]
    positional: bool
    doc: str = ""


def build_classes(instances: list[Instance], templates: dict[str, Template]) -> list[ClassDef]:
    """Group instances into classes, innermost first (a class's arguments feed the outer ones)."""
    classes: list[ClassDef] = []
    pending = sorted(instances, key=lambda i: (i.height, i.order))
    heights = sorted({i.height for i in pending})
    for height in heights:
        level = [i for i in pending if i.height == height]
        by_key: dict[tuple, list[Instance]] = {}
        for inst in level:
            by_key.setdefault(inst.key, []).append(inst)
        for key, group in by_key.items():
            template = templates.get(key[1]) if key[0] == "block" else None
            for members in partition(group):
                classes.append(define(members, template))
    return classes


def instance_skeleton(inst: Instance) -> tuple:
    parts = []
    for role, items in inst.groups:
        parts.append((role, tuple(
            ("rep", e.head) if isinstance(e, Rep) else (e.name if not inst.positional else "", skeleton(e.term))
            for e in items
        )))  # fmt: skip
    return (inst.kind, inst.positional, tuple(parts))


def partition(group: list[Instance]) -> list[list[Instance]]:
    """Instances of one block type, split where their structures cannot share a class.

    Instances with the same skeleton usually merge at once; only odd ones are placed one by one.
    """
    by_shape: dict[tuple, list[Instance]] = {}
    for inst in group:
        by_shape.setdefault(instance_skeleton(inst), []).append(inst)
    classes: list[list[Instance]] = []
    for members in by_shape.values():
        batches = [members] if mergeable(members) else [[inst] for inst in members]
        for batch in batches:
            home = next((cls for cls in classes if mergeable(cls + batch)), None)
            if home is None:
                classes.append(list(batch))
            else:
                home.extend(batch)
    return [sorted(cls, key=lambda i: i.order) for cls in classes]


def mergeable(instances: list[Instance]) -> bool:
    try:
        unify_groups(Unifier(), instances)
    except Unmergeable:
        return False
    return True


def unify_groups(unifier: Unifier, instances: list[Instance]) -> list[tuple[str, list]]:
    first = instances[0]
    if any(i.kind != first.kind or i.positional != first.positional for i in instances):
        raise Unmergeable
    roles = merge_orders([[role for role, _ in i.groups] for i in instances])
    optional = first.key[0] == "block"  # a block's `if` and automatic projection add layers
    out = []
    for role in roles:  # a residual without a shortcut has no shortcut group: all optional there
        lists = [dict(i.groups).get(role, []) for i in instances]
        out.append((role, unifier.entries(lists, first.positional, "", optional=optional)))
    if first.kind == "parallel":
        for _, entries in out:
            if all(e.flag is not None for e in entries):
                raise Unmergeable  # a branch must exist in every instance
    return out


def define(
    instances: list[Instance], template: Template | None, model_params: dict | None = None
) -> ClassDef:
    resolver = Resolver(instances, template, model_params)
    groups = unify_groups(Unifier(resolver), instances)
    params = resolver.ordered()
    for index, inst in enumerate(instances):
        inst.args = {p.name: p.column[index] for p in params}
    first = instances[0]
    klass = ClassDef("", first.kind, groups, params, instances, first.positional)
    if template is not None:
        klass.doc = template.doc
    for inst in instances:
        inst.klass = klass
    return klass


# ---- emitting code ----------------------------------------------------------------------------


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


def uses_loop(entries: list[POne]) -> bool:
    def holes(p: Any) -> Iterator[Hole]:
        if isinstance(p, PLeaf):
            yield from p.args
            yield from p.kwargs.values()
        elif isinstance(p, PMake):
            yield from p.args
        elif isinstance(p, PBox):
            for e in p.entries:
                if isinstance(e, POne):
                    yield from holes(e.term)

    return any(h.step is not None and h.step.expr != "0" for e in entries for h in holes(e.term))


def is_keyword_name(name: str) -> bool:
    """A child name that can be written as a keyword argument."""
    return bool(NAME_RE.match(name)) and not keyword.iskeyword(name)


def is_attribute(name: str) -> bool:
    """A child reached as `self.name` (others are numbered, as in nn.Sequential)."""
    return bool(NAME_RE.match(name))


def access(name: str) -> str:
    """How forward reaches a child module."""
    return f"self.{name}" if is_attribute(name) else f"getattr(self, {json.dumps(name)})"


class Emitter:
    """Source code for patterns: expressions, __init__ statements, forward methods."""

    def __init__(self) -> None:
        self.ordered_dict = False
        self.dense = False

    # expressions

    def expr(self, p: Any, loop: str | None = None) -> Expr:
        if isinstance(p, PLeaf):
            items: list[Expr] = [Atom(value_text(h, loop)) for h in p.args]
            items += [Lead(f"{k}=", Atom(value_text(h, loop))) for k, h in p.kwargs.items()]
            return Call(f"nn.{p.cls}", items)
        if isinstance(p, PMake):
            items = []
            for param, hole in zip(p.klass.params, p.args):
                text = value_text(hole, loop)
                if param.default is NO_DEFAULT:
                    items.append(Atom(text))
                elif not same(constant(hole), param.default):
                    items.append(Lead(f"{param.name}=", Atom(text)))
            call = Call(p.klass.name, items)
            return Lead("*", call) if p.klass.kind == "inline" else call
        self.dense |= p.base == "Dense"
        if p.positional:
            return Call(p.base, self.positional_items(p.entries, loop))
        return Call(p.base, [self.named_dict(p.entries, loop)])

    def positional_items(self, entries: list, loop: str | None = None) -> list[Expr]:
        return [item for item, _ in self.numbered(entries, loop)]

    def numbered(self, entries: list, loop: str | None = None) -> list[tuple[Expr, Node]]:
        """The items of a numbered sequence, each with the node whose output it ends in."""
        items: list[tuple[Expr, Node]] = []
        for entry in entries:
            if isinstance(entry, POne):
                items.append((self.expr(entry.term, loop), entry.node))
                continue
            head, runs = absorb_head(entry)
            items += [(self.expr(one.term, loop), one.node) for one in head]
            for run in runs:
                items += self.run_items(run)
        return items

    def run_items(self, run: PRun) -> list[tuple[Expr, Node]]:
        """A run as items: written out if short, else a comprehension spliced in with `*`."""
        count = run.count.const
        last = run.nodes[-1][-1]
        if not written_out(run):
            var = "i" if uses_loop(run.unit) else "_"
            clause = Atom(f"for {var} in range({run.count.expr})")
            if len(run.unit) == 1:
                comp = Comp(self.expr(run.unit[0].term, var), [clause])
            else:  # several layers per block: a nested comprehension flattens them
                layers = Call("", [self.expr(one.term, var) for one in run.unit], collection=True)
                comp = Comp(Atom("layer"), [clause, Lead("for layer in ", layers)])
            return [(Lead("*", Call("", [comp], "[", "]")), last)]
        return [
            (self.expr(one.term, str(k) if count > 1 else None), run.nodes[k][j])
            for k in range(count)
            for j, one in enumerate(run.unit)
        ]

    def named_dict(self, entries: list, loop: str | None) -> Expr:
        """`OrderedDict(name=module, ...)` for a container with named children."""
        self.ordered_dict = True
        items: list[tuple[str, Expr] | tuple[str, Expr, PRun]] = []
        for entry in entries:
            if isinstance(entry, POne):
                items.append((entry.name, self.expr(entry.term, loop)))
                continue
            items += [(one.name, self.expr(one.term, loop)) for one in entry.head or []]
            for run in entry.runs:
                if run.count.const == 1:
                    items.append((self.run_name(run, None), self.expr(run.unit[0].term)))
                elif run.count.const != 0:
                    items.append((self.run_name(run, "i"), self.expr(run.unit[0].term, "i"), run))
        if len(items) == 1 and len(items[0]) == 3:  # only a run: OrderedDict({...})
            name, e, run = items[0]
            comp = Comp(Lead(f"{name}: ", e), [Atom(f"for i in range({run.count.expr})")])
            return Call("OrderedDict", [Call("", [comp], "{", "}")])
        if all(len(item) == 3 or is_keyword_name(item[0]) for item in items):
            args: list[Expr] = []
            for item in items:
                if len(item) == 3:
                    comp = Comp(
                        Lead(f"{item[0]}: ", item[1]),
                        [Atom(f"for i in range({item[2].count.expr})")],
                    )
                    args.append(Lead("**", Call("", [comp], "{", "}")))
                else:
                    args.append(Lead(f"{item[0]}=", item[1]))
            return Call("OrderedDict", args)
        pairs: list[Expr] = []
        for item in items:
            pair = Call(
                "",
                [Atom(item[0] if len(item) == 3 else json.dumps(item[0])), item[1]],
                collection=True,
            )
            if len(item) == 3:
                comp = Comp(pair, [Atom(f"for i in range({item[2].count.expr})")])
                pairs.append(Lead("*", Call("", [comp], "[", "]")))
            else:
                pairs.append(pair)
        return Call("OrderedDict", [Call("", pairs, "[", "]", collection=True)])

    @staticmethod
    def number(run: PRun, var: str) -> str:
        start = run.start.expr if run.start is not None else "0"
        return var if start == "0" else f"{var} + {start}"

    def run_name(self, run: PRun, var: str | None) -> str:
        if var is None and run.start is not None and type(run.start.const) is int:
            return f"{run.prefix}{run.start.const}{run.suffix}"
        if var is None and (run.start is None or run.start.const is None):
            return run.prefix + run.suffix
        return f'f"{run.prefix}{{{self.number(run, var or "0")}}}{run.suffix}"'

    # statements

    def assign(self, one: POne, e: Expr, indent: int, *, none_first: bool) -> list[str]:
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
            if isinstance(entry, POne):
                e = self.expr(entry.term)
                if comments and not entry.flag:
                    e.comment = shape_text(entry.node.out_shape)
                lines += self.assign(entry, e, indent, none_first=none_first)
                continue
            for one in entry.head or []:
                lines += self.assign(one, self.expr(one.term), indent, none_first=none_first)
            for run in entry.runs:
                if run.count.const == 0:
                    continue
                if run.count.const == 1:
                    one = POne(self.run_name(run, None), run.unit[0].term, run.unit[0].node)
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
        function = klass.kind == "inline"
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
        for item, node in numbered if comments else ():
            item.comment = shape_text(node.out_shape)
        if function:
            return layout(Call("", items, "[", "]", collection=True), indent, lead="return ")
        return layout(Call("super().__init__", items), indent)

    def list_statements(self, entries: list, var: str, indent: int) -> tuple[list[str], str | None]:
        """Statements filling a list `var` with a numbered sequence's layers when a run of
        several layers repeats a variable number of times; ([], None) when one expression will do."""
        if all(
            written_out(r) or len(r.unit) == 1
            for e in entries
            if isinstance(e, PRep)
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
            if isinstance(entry, POne):
                batch.append(self.expr(entry.term))
                continue
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

    def chain(self, entries: list[POne], source: str, var: str) -> list[str]:
        """Lines applying a chain of child modules to `source`, leaving the result in `var`."""
        lines: list[str] = []
        current = source
        for one in entries:
            module = access(one.name)
            if one.flag is not None:
                if current != var:
                    lines.append(f"{var} = {current}")
                lines += [f"if {module} is not None:", f"    {var} = {module}({current})"]
            else:
                lines.append(f"{var} = {module}({current})")
            current = var
        if current != var:
            lines.append(f"{var} = {current}")
        return lines


def written_out(run: PRun) -> bool:
    """Short runs of a known length are written block by block; longer ones become loops."""
    count = run.count.const
    return type(count) is int and (count <= 1 or (len(run.unit) > 1 and count <= 3))


def absorb_head(rep: PRep) -> tuple[list[POne], list[PRun]]:
    """A stage whose first block is like the others is one run (numbered containers only)."""
    head, runs = rep.head or [], rep.runs
    if not head or not runs or type(runs[0].count.const) is not int or uses_loop(runs[0].unit):
        return head, runs
    text = Emitter().expr
    if [text(o.term).flat() for o in head] != [text(o.term).flat() for o in runs[0].unit]:
        return head, runs
    count = runs[0].count.const + 1
    hole = Hole([count], "depth", "count", literal(count), count)
    nodes = [[one.node for one in head], *runs[0].nodes]
    return [], [PRun(runs[0].unit, hole, nodes), *runs[1:]]


# ---- the file ---------------------------------------------------------------------------------


@dataclass
class ClassView:
    """What a class template needs, all code already laid out."""

    name: str
    base: str
    template: str
    doc: list[str]
    signature: list[str]
    init: list[str]
    forward: dict = field(default_factory=dict)


def docstring(text: str, indent: int) -> list[str]:
    """A docstring for any text: wrapped to the line length, quotes and backslashes escaped."""
    text = "".join(c for c in text if c.isprintable() or c == "\n").strip()
    text = text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    if text.endswith('"'):
        text = text[:-1] + '\\"'
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


def signature_items(params: list[Param]) -> list[Expr]:
    items: list[Expr] = []
    for p in params:
        text = f"{p.name}: {p.annotation}"
        if p.default is not NO_DEFAULT:
            text += f" = {literal(p.default)}"
        items.append(Atom(text))
    return items


def signature(name: str, params: list[Param], ret: str, indent: int) -> list[str]:
    items: list[Expr] = [Atom("self")] if name == "__init__" else []
    return layout(Call(f"def {name}", items + signature_items(params)), indent, trail=f" -> {ret}:")


def class_doc(klass: ClassDef) -> str:
    if klass.doc:
        return klass.doc
    first = klass.instances[0]
    if first.key[0] == "block":
        return f"The `{first.key[1]}` block of the spec."
    if klass.kind == "residual":
        return "A residual connection: the body's output plus the input (or its projection)."
    if klass.kind == "gate":
        return "The input scaled by its body's output (broadcast over it)."
    return "Branches applied to the same input, their outputs concatenated on channels."


def class_view(klass: ClassDef, emitter: Emitter) -> ClassView:
    view = ClassView(
        klass.name, "nn.Module", f"{klass.kind}.py.j2", docstring(class_doc(klass), 4),
        signature("__init__", klass.params, "None", 4), [],
    )  # fmt: skip
    if klass.kind == "inline":
        view.template = "function.py.j2"
        view.signature = layout(
            Call(f"def {klass.name}", signature_items(klass.params)),
            0,
            trail=" -> list[nn.Module]:",
        )
        view.init = emitter.sequence_init(klass, 4)
        view.doc = docstring(class_doc(klass), 4)
        return view
    if klass.kind in ("seq", "stage", "dense"):
        view.base = BASES[klass.kind]
        view.template = "sequential.py.j2"
        view.init = emitter.sequence_init(klass)
        emitter.dense |= klass.kind == "dense"
        return view
    view.init = ["        super().__init__()"]
    for _, entries in klass.groups:
        view.init += emitter.attributes(entries, 8, none_first=True)
    groups = dict(klass.groups)  # every child of a residual or parallel is named: no runs
    if klass.kind == "residual":
        view.forward = {
            "body": indent_lines(emitter.chain(groups.get("body", []), "x", "out"), 8),
            "shortcut": indent_lines(emitter.chain(groups.get("shortcut", []), "x", "identity"), 8)
            if "shortcut" in groups
            else [],
            "post": indent_lines(emitter.chain(groups.get("post", []), "out", "out"), 8),
        }
        return view
    if klass.kind == "gate":
        view.forward = {"body": indent_lines(emitter.chain(groups.get("body", []), "x", "out"), 8)}
        return view
    taken: set[str] = set()
    names, branches = [], []
    for role, entries in klass.groups:
        var = python_name(role if NAME_RE.match(role) else f"branch{role}", taken | LOCALS)
        taken.add(var)
        names.append(var)
        branches.append(indent_lines(emitter.chain(entries, "x", var), 8))
    cat = Call(
        "torch.cat", [Call("", [Atom(v) for v in names], "[", "]", collection=True), Atom("1")]
    )
    view.forward = {"branches": branches, "cat": layout(cat, 8, lead="return ")}
    return view


def indent_lines(lines: list[str], indent: int) -> list[str]:
    return [" " * indent + line for line in lines]


def init_lines(spec: Spec, indent: int) -> list[str]:
    """The spec's init rules as torchvision writes them: one pass over self.modules()."""
    kinds: dict[str, list[Node]] = {}
    for node in spec.tree.walk():
        if node.is_primitive and node.kind in spec.init:
            kinds.setdefault(node.kind, []).append(node)
    lines: list[str] = []
    pad = " " * indent
    for kind, rules in spec.init.items():
        nodes = kinds.get(kind)
        active = {t: r for t, r in rules.items() if r.kind != "default"}
        if not nodes or not active:
            continue
        classes = list(
            dict.fromkeys(n.primitive.torch_layer(n.params, n.in_shape).cls for n in nodes)
        )
        test = (
            f"nn.{classes[0]}"
            if len(classes) == 1
            else "(" + ", ".join(f"nn.{c}" for c in classes) + ")"
        )
        body = []
        for tensor, rule in active.items():
            has = [
                n.param_count > 0
                and (tensor != "bias" or getattr(n.params, "bias", True) is not False)
                for n in nodes
            ]
            if not any(has):
                continue
            args = "".join(f", {k}={literal(v)}" for k, v in rule.args.items())
            call = f"nn.init.{rule.kind}_(m.{tensor}{args})"
            body += [f"if m.{tensor} is not None:", f"    {call}"] if not all(has) else [call]
        if body:
            lines.append(pad + f"    {'elif' if lines else 'if'} isinstance(m, {test}):")
            lines += [pad + "        " + line for line in body]
    return [pad + "for m in self.modules():", *lines] if lines else []


@dataclass
class Probe:
    """Which model-level parameters feed layer arguments directly, and where."""

    tags: dict[str, dict]
    exposed: list[str]
    fixed: list[str]
    comments: list[str]


def probe(spec: Spec) -> Probe:
    """Recompile the spec with other values of each model parameter and see what changes.

    A parameter that only ever appears as itself in layer arguments (num_classes, dropout) can
    be a keyword argument of the generated model; one that sizes layers through arithmetic
    (growth_rate, groups) is fixed in the file.
    """
    result = Probe({}, [], [n for n in spec.params], [])
    try:
        doc = load_file(spec.file)
        base = slots(compile_document(doc).tree)
    except (ArchcError, OSError, ValueError):
        return result
    result.comments = leading_comments(spec.file)
    if not same_slots(base, slots(spec.tree)):
        return result  # the file changed since it was loaded
    for name, value in spec.params.items():
        if python_name(name) != name:
            continue
        changed: set | None = None
        for new in probe_values(value):
            data = dict(doc.data)
            data["params"] = {**doc.data.get("params", {}), name: new}
            try:
                other = slots(compile_document(Document(data, doc.source)).tree)
            except ArchcError:
                changed = None
                break
            direct = direct_slots(base, other, value, new)
            if direct is None or (changed is not None and direct != changed):
                changed = None
                break
            changed = direct
        if changed:
            result.exposed.append(name)
            result.fixed.remove(name)
            for path, slot in changed:
                result.tags.setdefault(path, {})[slot] = name
    return result


def probe_values(value: Any) -> list:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [2 * value + 1, value - 1 if value >= 2 else value + 2]
    if isinstance(value, float):
        return [v for v in (value * 0.5 + 0.125, value * 0.75) if v != value]
    return []


def slots(tree: Node) -> dict:
    """Every layer of a tree: path → (class, positional count, arguments by index or keyword)."""
    out = {}
    for node in tree.walk():
        if node.is_primitive and node.path:
            layer = node.primitive.torch_layer(node.params, node.in_shape)
            arguments = {**dict(enumerate(layer.args)), **layer.kwargs}
            out[node.path] = (layer.cls, len(layer.args), arguments, node)
    return out


def same_slots(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x[:2] == y[:2] and x[2].keys() == y[2].keys() and all(same(x[2][k], y[2][k]) for k in x[2])
        for x, y in ((a[p], b[p]) for p in a)
    )


def direct_slots(base: dict, other: dict, old: Any, new: Any) -> set | None:
    """The arguments that changed from `old` to `new` exactly; None if anything else changed."""
    if base.keys() != other.keys():
        return None
    changed = set()
    for path, (cls, count, arguments, node) in base.items():
        other_cls, other_count, other_arguments, other_node = other[path]
        if (cls, count) != (other_cls, other_count):
            return None
        for key in arguments.keys() | other_arguments.keys():
            a = arguments.get(key, MISSING)
            b = other_arguments.get(key, MISSING)
            a = field_value(node, key) if a is MISSING else a
            b = field_value(other_node, key) if b is MISSING else b
            if same(a, b):
                continue
            if not (same(a, old) and same(b, new)):
                return None
            changed.add((path, key))
    return changed


def leading_comments(file: str) -> list[str]:
    """The comment block a spec file starts with: its human description."""
    lines = []
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines


def user_templates(spec: Spec) -> dict[str, Template]:
    """Block templates by name: the built-in library's and the spec file's own."""
    templates = {name: block.template for name, block in library().items()}
    try:
        raw = load_file(spec.file).data.get("blocks", {})
    except (ArchcError, OSError, AttributeError):
        return templates
    for name, value in (raw or {}).items():
        try:
            templates.setdefault(name, Template.model_validate(value))
        except ValueError:
            continue
    return templates


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def display_path(file: str) -> str:
    path = Path(file)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return path.name


def generate(spec: Spec, source: str | None = None) -> str:
    """The standalone PyTorch source for a compiled spec (deterministic, ruff-formatted)."""
    found = probe(spec)
    lowering = Lowering(found.tags)
    root = lowering.instance(spec.tree, ("model",), "model")
    blocks = [i for i in lowering.instances if i is not root]
    classes = build_classes(blocks, user_templates(spec))
    model = define([root], None, {n: spec.params[n] for n in found.exposed})
    model.name = python_name(camel(spec.name))
    stem = Path(spec.file).stem  # the function is named after the file, as torchvision's are
    factory = stem if NAME_RE.match(stem) and python_name(stem) == stem else python_name(spec.name)
    factory = python_name(factory, {model.name})
    name_classes(classes, {model.name, factory})

    emitter = Emitter()
    views = [class_view(k, emitter) for k in classes]
    model_view = model_class(spec, model, emitter, found)
    uses_torch = emitter.dense or any(v.forward for v in views) or "lines" in model_view.forward
    return (
        environment()
        .get_template("module.py.j2")
        .render(
            header=header(spec, source, found),
            ordered_dict=emitter.ordered_dict,
            dense=emitter.dense,
            uses_torch=uses_torch,
            classes=views,
            model=model_view,
            factory=factory_lines(factory, model, found, spec),
        )
    )


def name_classes(classes: list[ClassDef], taken: set[str]) -> None:
    """Classes after their block type (`dense_layer` → DenseLayer, then DenseLayer2, ...) or
    combinator (Residual, Parallel); inline blocks' functions after the block type itself."""
    taken = taken | TAKEN
    counts: Counter = Counter()
    for klass in sorted(classes, key=lambda k: k.instances[0].order):
        word = klass.instances[0].key[1]
        base = word if klass.kind == "inline" else camel(word)
        counts[base] += 1
        name = python_name(base if counts[base] == 1 else f"{base}{counts[base]}", taken)
        klass.name = name
        taken.add(name)


def header(spec: Spec, source: str | None, found: Probe) -> list[str]:
    where = source or display_path(spec.file)
    parts = [f"{MARKER} from {where}: edit the spec, not this file."]
    description = spec.description or "\n".join(found.comments)
    if description:
        parts.append(description)
    macs = (
        f"{spec.macs:,} MACs ({spec.macs / 1e9:.2f} G)"
        if spec.macs >= 1e8
        else f"{spec.macs:,} MACs"
    )
    parts.append(
        f"Model {spec.name}: input {shape_text(spec.input_shape)}, output {shape_text(spec.output_shape)}; "
        f"{spec.param_count:,} parameters, {macs}."
    )
    return docstring("\n\n".join(parts), 0)


def model_class(spec: Spec, model: ClassDef, emitter: Emitter, found: Probe) -> ClassView:
    entries = model.groups[0][1]
    explicit = (
        all(isinstance(e, POne) and is_attribute(e.name) for e in entries) and not model.positional
    )
    doc = f"The {spec.name} network: {shape_text(spec.input_shape)} in, {shape_text(spec.output_shape)} out."
    view = ClassView(
        model.name, "nn.Module" if explicit else "nn.Sequential", "model.py.j2",
        docstring(doc, 4), signature("__init__", model.params, "None", 4), [],
    )  # fmt: skip
    if explicit:
        view.init = ["        super().__init__()"] + emitter.attributes(
            entries, 8, none_first=False
        )
        view.forward = {
            "lines": [
                line
                for e in entries
                for line in layout(
                    Call(f"self.{e.name}", [Atom("x")], comment=shape_text(e.node.out_shape)),
                    8,
                    lead="x = ",
                )
            ]
        }
    else:
        view.init = emitter.sequence_init(model, comments=True)
    view.forward["init"] = init_lines(spec, 8)
    return view


def factory_lines(name: str, model: ClassDef, found: Probe, spec: Spec) -> list[str]:
    lines = signature(name, model.params, model.name, 0)
    doc = f"{spec.name} with freshly initialised weights."
    if found.fixed:
        settings = ", ".join(f"{n}={literal(spec.params[n])}" for n in found.fixed)
        doc += f"\n\nFixed in this file: {settings} (change the spec and regenerate)."
    lines += docstring(doc, 4)
    call = Call(model.name, [Lead(f"{p.name}=", Atom(p.name)) for p in model.params])
    return lines + layout(call, 4, lead="return ")


# ---- files ------------------------------------------------------------------------------------


def spec_files(arg: str) -> list[tuple[Path, Path]]:
    """(spec file, output path relative to the output folder) for a file or a folder."""
    path = Path(arg)
    if path.is_dir():
        found = sorted(
            f for f in path.rglob("*")
            if f.suffix in (".yaml", ".yml") and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(path).parts)
        )  # fmt: skip
        if not found:
            raise OutputError(f"{arg}: no spec files (*.yaml) in this folder")
        return [(file, file.relative_to(path).with_suffix(".py")) for file in found]
    if path.is_file():
        return [(path, Path(path.stem + ".py"))]
    raise OutputError(f"{arg}: no such file or folder")


def write_all(args: list[str], out: Path, *, force: bool = False) -> int:
    """`archc codegen SPEC... -o DIR`: one .py per spec, folders mirrored; the exit status."""
    status = 0
    written: dict[Path, Path] = {}
    for arg in args:
        try:
            jobs = spec_files(arg)
        except OutputError as exc:
            print(exc.format(), file=sys.stderr)
            status = 1
            continue
        for spec_path, relative in jobs:
            try:
                write_one(spec_path, contained(out, relative), written, force)
            except ArchcError as exc:
                print(exc.format(), file=sys.stderr)
                status = 1
    return status


def write_one(spec_path: Path, target: Path, written: dict[Path, Path], force: bool) -> None:
    if target in written:
        raise OutputError(f"{spec_path} and {written[target]} would both write {target}")
    written[target] = spec_path
    text = generate(load(spec_path), display_path(str(spec_path)))
    if target.is_file() and written_by_archc(target) and target.read_text(encoding="utf-8") == text:
        return  # unchanged: leave the file (and its modification time) alone
    write_atomic(target, text, force=force)
    print(f"wrote {target}")

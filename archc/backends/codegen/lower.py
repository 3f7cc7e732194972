"""IR -> terms."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from archc.backends.codegen.names import MISSING, Var
from archc.ir import Node
from archc.primitives import pair_or_int

if TYPE_CHECKING:
    from archc.backends.codegen.classes import ClassDef

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


BASES = {"seq": "nn.Sequential", "dense": "Dense", "model": "nn.Module"}


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
        if node.kind in ("residual", "parallel") or node.block_args is not None:
            return Make(
                self.instance(
                    node,
                    ("block", node.block) if node.block_args is not None else ("kind", node.kind),
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
        if inst.kind == "residual":
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
        if node.kind == "dense" or node.spec_kind == "stage":
            return [Rep([self.flat(c) for c in node.children], head=node.kind != "dense")]
        out: list = []
        for child in node.children:
            if not child.inline:
                out.append(One(child.name, self.term(child), child))
            elif positional and child.block_args is not None and child.spec_kind != "stage":
                out.append(
                    One(
                        child.name,
                        Make(self.instance(child, ("block", child.block), "inline")),
                        child,
                    )
                )
            else:
                out.extend(self.entries(child, positional))
        return out

    def flat(self, node: Node) -> list[One]:
        leaves = node.registered() if node.inline else [node]
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


def slots(tree: Node) -> dict:
    """Every layer of a tree: path → (class, positional count, arguments by index or keyword)."""
    out = {}
    for node in tree.walk():
        if node.is_primitive and node.path:
            layer = node.primitive.torch_layer(node.params, node.in_shape)
            arguments = {**dict(enumerate(layer.args)), **layer.kwargs}
            out[node.path] = (layer.cls, len(layer.args), arguments, node)
    return out

"""Lowering: the inferred IR tree → terms (`terms.py`) with concrete values.

This is the one module of the codegen backend that reads the IR (`archc.ir.Node`): its kind,
template, children, inline, role, params, primitive and shapes (`ir.splice` flattens inline
groups). What a combinator's node becomes is its `CodegenForm` (`node.combinator.codegen`):
a class of its own or a container, its children grouped as it says. Everything after it works on terms, so a change to the IR touches this file alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from archc.backends.codegen.names import MISSING, Var
from archc.backends.codegen.terms import (
    INLINE,
    SEP,
    Child,
    ClassCall,
    Container,
    Instance,
    LayerCall,
    RepeatedBlocks,
    unknown,
)
from archc.ir import Node, splice, steps
from archc.primitives import pair_or_int


def field_value(params: Any, name: str) -> Any:
    """The primitive parameter behind a torch keyword argument `torch_layer` left out."""
    value = getattr(params, name, MISSING)
    return pair_or_int(value) if isinstance(value, tuple) else value


def is_positional(node: Node) -> bool:
    names = [c.name for c in splice(node.children)]
    return names == [str(i) for i in range(len(names))]


class Lowering:
    """IR nodes → terms; class-worthy nodes → Instances, collected in tree order."""

    def __init__(self, tags: dict[str, dict]):
        self.tags = tags
        self.instances: list[Instance] = []
        self.own: list[str] = []  # archc's own module classes the layers use, as met

    def term(self, node: Node) -> Any:
        if node.is_primitive:
            return self.leaf(node)
        form = node.combinator.form(node)
        if node.template is not None:
            return ClassCall(self.instance(node, ("block", node.template.name)))
        if form.own_class:
            return ClassCall(self.instance(node, ("kind", node.kind)))
        positional = is_positional(node)
        return Container(form.base, positional, self.entries(node, positional))

    def leaf(self, node: Node) -> LayerCall:
        layer = node.primitive.torch_layer(node.params, node.in_shape)
        tags = self.tags.get(node.path, {})
        args = [Var(tags[i], v) if i in tags else v for i, v in enumerate(layer.args)]
        kwargs = {k: Var(tags[k], v) if k in tags else v for k, v in layer.kwargs.items()}
        for k in tags:  # a model parameter at its default value: torch_layer left it out
            if isinstance(k, str) and k not in kwargs:
                kwargs[k] = Var(tags[k], field_value(node.params, k))
        if layer.own and layer.cls not in self.own:
            self.own.append(layer.cls)
        return LayerCall(layer.cls, args, kwargs, node.params, own=layer.own, parameter=layer.parameter)

    def instance(self, node: Node, key: tuple, kind: str | None = None) -> Instance:
        inst = Instance(
            key,
            kind or node.kind,
            node.in_shape,
            node.out_shape,
            node.template.args if node.template is not None else None,
            order=len(self.instances),
            form=node.combinator.form(node),
            settings=dict(node.settings),
            position=node.template.position if node.template is not None else {},
        )
        self.instances.append(inst)
        if inst.form.groups is not None:
            inst.groups = [
                (name, [one for child in members for one in self.flat(child)])
                for group, nodes in inst.form.groups(node)
                for name, members in structured(group, nodes)
            ]
        else:  # an inline block spliced into a numbered list is numbered too
            inst.positional = inst.kind == INLINE or is_positional(node)
            inst.groups = [("", self.entries(node, inst.positional))]
        inst.height = 1 + max((m.inst.height for m in makes(inst.groups)), default=0)
        return inst

    def entries(self, node: Node, positional: bool) -> list:
        """A container's children, stages and dense blocks as RepeatedBlocks, inline groups spliced in:
        an inline block in a numbered list as a call of a function returning its layers."""
        form = node.combinator.form(node)
        if form.repeated:
            return [RepeatedBlocks([self.flat(c) for c in node.children], head=form.first_differs)]
        out: list = []
        for child in node.children:
            if not child.inline:
                out.append(Child(child.name, self.term(child), child.out_shape))
            elif positional and child.template is not None:
                out.append(
                    Child(
                        child.name,
                        ClassCall(self.instance(child, ("block", child.template.name), INLINE)),
                        child.out_shape,
                    )
                )
            else:
                out.extend(self.entries(child, positional))
        return out

    def flat(self, node: Node) -> list[Child]:
        leaves = splice([node])
        return [Child(leaf.name, self.term(leaf), leaf.out_shape) for leaf in leaves]


def structured(name: str, nodes: list[Node]) -> list[tuple[str, list[Node]]]:
    """A group of children as a generated forward runs it: `(name, nodes)` when they run one
    after another; with an inline parallel among them, one group per run of layers
    (`name SEP i`, i its first step) and, for an inline parallel at step i, its own groups each
    under `name SEP i:kind:parallel SEP` (recursively), which `render.ForwardWriter` reads back."""
    parts = steps(nodes)
    if not any(node.inline for node in parts):
        return [(name, nodes)]
    out: list[tuple[str, list[Node]]] = []
    start, run = 0, []
    for i, node in enumerate(parts):
        if not node.inline:
            start, run = (i, [node]) if not run else (start, [*run, node])
            continue
        if run:
            out.append((f"{name}{SEP}{start}", run))
            run = []
        prefix = f"{name}{SEP}{i}:{node.kind}:{node.name}"
        for group, members in node.combinator.form(node).groups(node):
            out += structured(f"{prefix}{SEP}{group}", members)
    if run:
        out.append((f"{name}{SEP}{start}", run))
    return out


def makes(groups: list[tuple[str, list]]) -> Iterator[ClassCall]:
    """The class instances directly inside some entries (not inside nested instances)."""

    def walk(term: Any) -> Iterator[ClassCall]:
        if isinstance(term, ClassCall):
            yield term
        elif isinstance(term, Container):
            yield from entries(term.entries)
        elif not isinstance(term, LayerCall):
            unknown(term)

    def entries(items: list) -> Iterator[ClassCall]:
        for entry in items:
            if isinstance(entry, Child):
                yield from walk(entry.term)
            elif isinstance(entry, RepeatedBlocks):
                for unit in entry.units:
                    yield from entries(unit)
            else:
                unknown(entry)

    for _, items in groups:
        yield from entries(items)


def slots(tree: Node) -> dict:
    """Every layer of a tree: path → (class, positional count, arguments by index or keyword)."""
    out = {}
    for node in tree.walk():
        if node.is_primitive and node.path:
            layer = node.primitive.torch_layer(node.params, node.in_shape)
            arguments = {**dict(enumerate(layer.args)), **layer.kwargs}
            out[node.path] = (layer.cls, len(layer.args), arguments, node.params)
    return out


@dataclass(frozen=True)
class WeightedLayer:
    """A layer an init rule may apply to: its torch class and which tensors it has."""

    cls: str
    has_weight: bool
    has_bias: bool
    own: bool = False
    path: str = ""

    @property
    def ref(self) -> str:
        return self.cls if self.own else f"nn.{self.cls}"


def weighted_layers(tree: Node, kinds: set[str]) -> dict[str, list[WeightedLayer]]:
    """The layers of the given primitive kinds, by kind, in tree order."""
    out: dict[str, list[WeightedLayer]] = {}
    for node in tree.walk():
        if node.is_primitive and node.kind in kinds:
            layer = node.primitive.torch_layer(node.params, node.in_shape)
            has = node.param_count > 0
            bias = has and getattr(node.params, "bias", True) is not False
            out.setdefault(node.kind, []).append(WeightedLayer(layer.cls, has, bias, layer.own, node.path))
    return out

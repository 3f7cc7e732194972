"""The compiled module tree every backend consumes: names fixed, shapes inferred."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from archc.errors import Location
from archc.primitives import PRIMITIVES, Shape


@dataclass(frozen=True)
class TemplateUse:
    """A block template instantiated: its name and every parameter's value (defaults filled)."""

    name: str
    args: dict[str, Any]
    # a stage block's place in the network (block_id, total_blocks), which its lets may read
    position: dict[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Head:
    """An extra output: the layer reads the output of its earlier sibling `source` (not the
    layer before it), runs in train mode only, and its result is the model's output `output`."""

    source: str
    output: str


@dataclass(slots=True)
class Node:
    """One module of the built network (or an inline group of modules).

    `kind` is a primitive kind (archc.primitives.PRIMITIVES) or a combinator kind
    (archc.combinators.COMBINATORS). A node a block template expanded to says so in `template`;
    a stage or dense block names the block it repeats in `repeats`.
    """

    name: str
    kind: str
    params: Any = None  # the validated pydantic Params of a primitive
    children: list[Node] = field(default_factory=list)
    role: str = ""  # inside a residual: "body", "shortcut" or "post"
    inline: bool = False  # registered in the parent's namespace, no module of its own
    template: TemplateUse | None = None  # the block template this node instantiates
    repeats: str | None = None  # the block type a stage or dense block repeats
    head: Head | None = None  # an auxiliary head of the model (top-level layers only)
    tap: bool = False  # the model returns this layer's output (`outputs:` names its path)
    location: Location | None = None
    field_path: str = ""
    # where the spec entry that made this node is written (a path into its source, a block
    # template's own for a builtin block): children of different instances of one template
    # that share a slot come from the same entry of its body (codegen aligns them by it)
    slot: tuple = field(default=(), compare=False, repr=False)
    condition: str = field(default="", compare=False, repr=False)  # its entry's `if:`, as written
    path: str = ""  # dotted module path, the state_dict prefix ("" for the model)
    in_shape: Shape = ()
    out_shape: Shape = ()
    param_count: int = 0
    macs: int = 0
    # a combinator's settings that are not layers, by name: a conditional residual's
    # use_res_connect (whether its shortcut is added); generated code keeps them as attributes
    settings: dict[str, Any] = field(default_factory=dict)
    # settings a primitive took from the spec's `defaults:` -> where they are written, for errors
    defaulted: dict[str, tuple[Location | None, str]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def spec_kind(self) -> str:
        """What the spec wrote: the block template's name, else the kind."""
        return self.template.name if self.template is not None else self.kind

    @property
    def is_primitive(self) -> bool:
        return self.kind in PRIMITIVES

    @property
    def primitive(self):
        return PRIMITIVES[self.kind]

    @property
    def combinator(self):
        from archc.combinators import COMBINATORS

        return COMBINATORS[self.kind]

    def walk(self) -> Iterator[Node]:
        """This node and every node under it, in pre-order (a parent before its children).

        One generator with a stack: nested generators cost a frame per level for every node
        they pass on (a 10,000-block tree's walk took 3x as long)."""
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            if node.children:
                stack.extend(reversed(node.children))

    def registered(self) -> list[Node]:
        """Children that become attributes of this node's module, inline groups flattened."""
        return splice(self.children)

    def role_children(self, role: str) -> list[Node]:
        return [c for c in self.children if c.role == role]

    def find(self, path: str) -> Node:
        for node in self.walk():
            if node.path == path and not node.inline:
                return node
        raise KeyError(path)

    def clone(self) -> Node:
        """A copy of the subtree: new Node objects, shared immutable values (params, shapes).

        Every field but `children` is copied by name (a slotted object has no `__dict__` to
        copy; tests/test_ir.py checks that no field is left out)."""
        copy = _new(Node)
        copy.name = self.name
        copy.kind = self.kind
        copy.params = self.params
        copy.children = [child.clone() for child in self.children] if self.children else []
        copy.role = self.role
        copy.inline = self.inline
        copy.template = self.template
        copy.repeats = self.repeats
        copy.head = self.head
        copy.tap = self.tap
        copy.location = self.location
        copy.field_path = self.field_path
        copy.slot = self.slot
        copy.condition = self.condition
        copy.path = self.path
        copy.in_shape = self.in_shape
        copy.out_shape = self.out_shape
        copy.param_count = self.param_count
        copy.macs = self.macs
        copy.settings = self.settings
        copy.defaulted = self.defaulted
        return copy


_new = object.__new__


def splice(nodes: list[Node]) -> list[Node]:
    """Nodes with inline groups opened up: their members run, and register, in the parent.

    The one definition of inlining every backend uses (registration, execution order, drawing).
    """
    out: list[Node] = []
    for node in nodes:
        out.extend(splice(node.children) if node.inline else [node])
    return out


def steps(nodes: list[Node]) -> list[Node]:
    """Nodes in the order they run: inline sequences opened up, an inline node that runs as a
    whole (an inline parallel: `Combinator.inline_step`) kept as one step."""
    out: list[Node] = []
    for node in nodes:
        if node.inline and not node.combinator.inline_step:
            out.extend(steps(node.children))
        else:
            out.append(node)
    return out


def branching(nodes: list[Node]) -> bool:
    """Whether an inline parallel runs among `nodes` (they do not simply run one by one)."""
    return any(node.inline for node in steps(nodes))


def runs(nodes: list[Node]) -> list[list[Node]]:
    """The runs of `nodes` that execute one after another, each feeding only the next: the
    steps between inline parallels (whose branches are their own runs, `Combinator.chains`); a
    tapped node ends its run (what follows must not change the output the model returns)."""
    out: list[list[Node]] = [[]]
    for node in steps(nodes):
        if node.inline:
            out.append([])
            continue
        out[-1].append(node)
        if node.tap:
            out.append([])
    return out


_WILDCARDS = re.compile(r"(\*\*|\*|\?|\[[^\]]+\])")


def path_glob(pattern: str) -> re.Pattern:
    """A module-path glob (`init:` selectors, `freeze:`) as a regular expression for fullmatch:
    `*` is any part of one name, `**` any run of names and dots, `?` one character of a name,
    `[1-3]` one of a set (`[!...]` none of it); the rest is literal."""
    out = []
    for part in _WILDCARDS.split(pattern):
        if part in ("**", "*", "?"):
            out.append({"**": ".*", "*": "[^.]*", "?": "[^.]"}[part])
        elif part.startswith("[") and part.endswith("]") and len(part) > 2:
            body = part[1:-1]
            negate = body.startswith("!")
            out.append("[" + ("^" if negate else "") + re.escape(body[1:] if negate else body).replace("\\-", "-") + "]")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out))

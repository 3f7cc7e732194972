"""The compiled module tree every backend consumes: names fixed, shapes inferred."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from archc.errors import Location
from archc.primitives import PRIMITIVES, Shape

COMBINATORS = ("seq", "residual", "parallel", "dense")


@dataclass
class Node:
    """One module of the built network (or an inline group of modules).

    `kind` is a primitive kind or one of COMBINATORS. `spec_kind` is what the spec wrote
    (`stage`, `bottleneck`, `conv`, ...), kept for summaries and diagrams.
    """

    name: str
    kind: str
    spec_kind: str
    params: Any = None  # the validated pydantic Params of a primitive
    children: list[Node] = field(default_factory=list)
    role: str = ""  # inside a residual: "body", "shortcut" or "post"
    inline: bool = False  # registered in the parent's namespace, no module of its own
    block: str | None = None  # block template this node instantiates
    block_args: dict[str, Any] | None = None
    location: Location | None = None
    field_path: str = ""
    path: str = ""  # dotted module path, the state_dict prefix ("" for the model)
    in_shape: Shape = ()
    out_shape: Shape = ()
    param_count: int = 0
    macs: int = 0

    @property
    def is_primitive(self) -> bool:
        return self.kind in PRIMITIVES

    @property
    def primitive(self):
        return PRIMITIVES[self.kind]

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def registered(self) -> list[Node]:
        """Children that become attributes of this node's module, inline groups flattened."""
        out: list[Node] = []
        for child in self.children:
            out.extend(child.registered() if child.inline else [child])
        return out

    def role_children(self, role: str) -> list[Node]:
        return [c for c in self.children if c.role == role]

    def find(self, path: str) -> Node:
        for node in self.walk():
            if node.path == path and not node.inline:
                return node
        raise KeyError(path)

"""The combinators a spec can use (seq, residual, parallel, stage, dense, gate), each defined once.

A combinator is one class, the way a primitive is: how its spec form expands (options schema,
children, the static shape / parameter / MAC rule), the extra activation memory it makes, which
of its children run one after another (what `--fuse` may fold), how its tensors flow in a
diagram, and the torch module that runs it. Backends reach each part through `COMBINATORS`,
keyed by kind; none has a list of combinator names.

Nothing here imports torch or graphviz: `build` imports its torch module lazily (the classes
live in archc.backends.torch_modules), and `draw` receives the drawing to add to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from archc import infer
from archc.ir import Node, splice
from archc.primitives import Shape

if TYPE_CHECKING:  # pragma: no cover
    from archc.expand import Expander, Scope


class Combinator:
    """Base for combinators. Subclasses are registered by `kind` with @combinator."""

    kind: ClassVar[str]
    syntax: ClassVar[str]  # the spec form and what it builds, as the README's language table
    meaning: ClassVar[str]  # shows them (tests/test_combinators.py checks the table)
    # The pydantic model of its settings (residual, stage, dense); None: its value is its layers.
    options: ClassVar[type | None] = None
    fill: ClassVar[str] = "#cdbfe3"  # diagram colour of a collapsed box
    inlinable: ClassVar[bool] = False  # may be `inline: true` (a sequence of the parent's layers)
    first_sees_input: ClassVar[bool] = False  # its first child receives its input unchanged
    # Name of the class-emitting form in archc.backends.codegen (the hook codegen will read
    # once its combinator forms move here): sequential, residual, parallel, dense, gate.
    codegen_form: ClassVar[str] = "sequential"

    # ---- the spec: expansion and the static rule ------------------------------------------

    def expand(
        self, x: Expander, raw: Any, path: tuple, name: str, scope: Scope, shape: Shape
    ) -> Node:
        """The node the spec value `raw` stands for, fed `shape`; shapes and totals set."""
        raise NotImplementedError

    @staticmethod
    def finish(node: Node, in_shape: Shape, out_shape: Shape) -> Node:
        node.in_shape, node.out_shape = in_shape, out_shape
        return infer.total(node)

    # ---- backends -------------------------------------------------------------------------

    def activations(self, node: Node) -> int:
        """Activation elements per sample the combinator itself makes (a sum, a concatenation)."""
        return 0

    def chains(self, node: Node) -> list[list[Node]]:
        """Runs of nodes that execute one after another, each feeding only the next."""
        return []

    def build(self, node: Node, modules: dict) -> Any:
        """The torch module running `node`, given its registered children's modules by name."""
        raise NotImplementedError

    def draw(self, d: Any, node: Node, src: Any, level: int, into: Any) -> Any:
        """Add `node`'s inside to the drawing `d` fed by the Port `src`; return its output Port."""
        raise NotImplementedError


COMBINATORS: dict[str, Combinator] = {}


def combinator(cls: type[Combinator]) -> type[Combinator]:
    COMBINATORS[cls.kind] = cls()
    return cls


def shares_input(scope: Scope, node: Node, other: str) -> None:
    """Refuse an in-place layer first on an input that `other` reads too: it would change it."""
    first = node
    while not first.is_primitive and first.children and first.combinator.first_sees_input:
        first = first.children[0]
    if first.is_primitive and getattr(first.params, "inplace", False):
        error = scope.error(
            f"{first.name}: an in-place {first.kind} here would overwrite the input that is "
            f"also fed to {other}; set inplace: false",
            (),
        )
        if scope.anchor is None and first.location is not None:
            error.location, error.field = first.location, first.field_path
        raise error


def leaf_names(node: Node) -> list[str]:
    """Names of the modules `node` registers in its parent (an inline group: its members)."""
    return [n.name for n in splice([node])]


# The definitions register themselves on import, in this order (the README table's).
# isort: off
from archc.combinators import seq, residual, parallel, repeat, gate  # noqa: E402,F401
# isort: on

__all__ = ["COMBINATORS", "Combinator", "combinator", "shares_input", "leaf_names"]

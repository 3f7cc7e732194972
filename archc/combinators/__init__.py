"""The combinators a spec can use (seq, residual, parallel, stage, dense, gate), each defined once.

A combinator is one class, the way a primitive is: how its spec form expands (options schema,
children, the static shape / parameter / MAC rule), the extra activation memory it makes, which
of its children run one after another (what `--fuse` may fold), how its tensors flow in a
diagram, the torch module that runs it, and how generated code writes it (`codegen`, a
`CodegenForm`). Backends reach each part through `COMBINATORS`, keyed by kind; none has a list
of combinator names.

Nothing here imports torch, graphviz or jinja2: `build` imports its torch module lazily (the
classes live in archc.backends.torch_modules), `draw` receives the drawing to add to, and a
`CodegenForm.forward` receives the writer of a generated forward method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from archc import infer
from archc.errors import Note
from archc.ir import Node, splice, steps
from archc.primitives import Shape

if TYPE_CHECKING:  # pragma: no cover
    from archc.expand import Expander, Scope


class ForwardWriter(Protocol):
    """What a `CodegenForm.forward` writes a generated `forward(self, x)` with (the codegen
    backend implements it). Children are already grouped (`CodegenForm.groups`) and built."""

    groups: list[str]  # the class's group names, in order (a merged class: every instance's)
    source: str  # the variable holding forward's input (`x`; an inline parallel: its input)

    def chain(self, group: str, source: str, var: str) -> None:
        """Apply `group`'s modules in turn to the variable `source`, the result in `var` (`var =
        source` when the group is empty or absent)."""

    def local(self, name: str) -> str:
        """A local variable named `name`, or a close variant no other local has."""

    def line(self, statement: str) -> None:
        """One statement of forward's body, as written."""

    def setting(self, name: str, default: Any) -> Any:
        """How forward reads the node setting `name` (`Node.settings`): its value when every
        instance of the class has the same one (`default` when they have none), else the
        attribute (`self.name`) the constructor sets from an argument."""

    def returns(self, function: str, args: list[str | list[str]]) -> None:
        """`return function(*args)`, laid out to fit; an argument that is a list is written as a
        list display of its items."""


@dataclass(frozen=True)
class CodegenForm:
    """How generated code writes a combinator; the codegen backend reads nothing else of it.

    A combinator with a `forward` becomes a generated class of its own (a subclass of `base`,
    its children attributes); one without is written as a `base(...)` container of its
    children, whose `forward` the base class has (a block template using it becomes a `base`
    subclass with no forward of its own).
    """

    base: str = "nn.Sequential"  # the base class, or the container class
    # The children of a generated class by group (name, nodes), in the order forward uses them;
    # None: one sequence, in order, inline groups spliced in.
    groups: Callable[[Node], list[tuple[str, list[Node]]]] | None = None
    every_group: bool = False  # every instance of one class has every group (no optional one)
    repeated: bool = False  # its children are the blocks of a repetition (written as runs)
    first_differs: bool = False  # ... the first carrying the stride and width change
    doc: str = ""  # the docstring of its class (one a block template did not make)
    helper: str = ""  # source of the class `base` names, written once into a file using it
    # Writes forward's body (after `def forward(self, x)`); None: the base class's forward.
    forward: Callable[[ForwardWriter], None] | None = None

    @property
    def own_class(self) -> bool:
        """Each node becomes an instance of a generated class (it needs a forward of its own)."""
        return self.forward is not None


class Combinator:
    """Base for combinators. Subclasses are registered by `kind` with @combinator."""

    kind: ClassVar[str]
    syntax: ClassVar[str]  # the spec form and what it builds, as the README's language table
    meaning: ClassVar[str]  # shows them (tests/test_combinators.py checks the table)
    # The pydantic model of its settings (residual, stage, dense); None: its value is its layers.
    options: ClassVar[type | None] = None
    fill: ClassVar[str] = "#cdbfe3"  # diagram colour of a collapsed box
    inlinable: ClassVar[bool] = False  # may be `inline: true` (its layers registered on the parent)
    # inline, it still runs as a whole (a parallel: its branches' layers are the parent's, the
    # concatenation is its own); else its layers run in the parent's sequence
    inline_step: ClassVar[bool] = False
    first_sees_input: ClassVar[bool] = False  # its first child receives its input unchanged
    codegen: ClassVar[CodegenForm] = CodegenForm()  # how generated code writes it

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

    def form(self, node: Node) -> CodegenForm:
        """How generated code writes this node (its combinator's `codegen`, unless the node
        needs more, as a sequence with an inline parallel needs a forward of its own)."""
        return self.codegen

    def step(self, node: Node) -> Any:
        """How an inline node of an `inline_step` combinator runs in its parent's module."""
        raise NotImplementedError

    def activations(self, node: Node) -> int:
        """Activation elements per sample the combinator itself makes (a sum, a concatenation)."""
        return 0

    def chains(self, node: Node) -> list[list[Node]]:
        """Runs of nodes that execute one after another, each feeding only the next."""
        return []

    def depth(self, node: Node, of: Callable[[Node], int]) -> int:
        """Weight layers on the longest path through `node`, `of` giving a child's: the
        children run one after another unless the combinator says otherwise."""
        return sum(of(child) for child in node.children)

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
        if "inplace" in first.defaulted:  # the spec's defaults made it in-place: blame them
            layer = Note(f"layer {first.name!r} takes inplace: true from the defaults (at {error.field})", error.location)
            error.message = error.message.replace("set inplace: false", "set inplace: false on the layer or in the defaults")
            error.location, error.field = first.defaulted["inplace"]
            error.notes.insert(0, layer)
        raise error


def leaf_names(node: Node) -> list[str]:
    """Names of the modules `node` registers in its parent (an inline group: its members)."""
    return [n.name for n in splice([node])]


@dataclass(frozen=True)
class Concat:
    """An inline parallel in its parent module's program: each branch's program run on the
    input (`split`: on its chunk of the channels), concatenated on channels, then `post`."""

    branches: tuple[tuple, ...]
    split: bool = False
    post: tuple = ()


def program(nodes: list[Node]) -> tuple:
    """How `nodes` run in the module they register in: the names of their modules in order,
    an inline parallel as one `Concat` (torch_modules.run executes a program)."""
    return tuple(n.combinator.step(n) if n.inline else n.name for n in steps(nodes))


# The definitions register themselves on import, in this order (the README table's).
# isort: off
from archc.combinators import seq, residual, parallel, repeat, gate, each  # noqa: E402,F401
# isort: on

__all__ = [
    "COMBINATORS",
    "CodegenForm",
    "Combinator",
    "ForwardWriter",
    "combinator",
    "shares_input",
    "leaf_names",
    "Concat",
    "program",
]

"""Terms: how each module is constructed. One closed family serves two stages.

Lowering (`lower.py`) builds *terms* whose values are concrete (`3`, `Var("num_classes", 10)`,
`Progression(64, 32)` along a run); anti-unification (`generalize.py`) builds *patterns*, the
same classes with a `Hole` wherever the instances of a class differ. A pass over the family is
one isinstance ladder that ends in `raise TypeError` (see `unknown`).

- `LayerCall`: `nn.<cls>(*args, **kwargs)` for one primitive.
- `LayerCall` of an `own` class: archc's own module class (its source goes into the file).
- `ClassCall`: a call of a generated class (a block instance, a node of a combinator with a
  forward of its own).
- `Container`: the container class of a combinator without one (`nn.Sequential`, ...) over
  its entries.
- `Child`: one registered child module in a container's or a class's entries.
- `RepeatedBlocks` (terms only): a stage's or dense block's units, one per block instance.
- `Run`, `Runs` (patterns only): what `RepeatedBlocks` generalise to: runs of equal or
  arithmetically growing units, after an optional first block that differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from archc.backends.codegen.names import MISSING
from archc.combinators import CodegenForm

if TYPE_CHECKING:
    from archc.backends.codegen.classes import ClassDef


# Instance kinds of codegen's own, beside the combinator kinds: an inline block in a numbered
# list (written as a function returning its layers, spliced in with `*`), and the model.
INLINE = "inline"
MODEL = "model"

# Joins the parts of a structured group's name (`lower.structured`: a group with an inline
# parallel in it); no module name has it (names are printable).
SEP = "\x1f"


@dataclass(eq=False)
class Hole:
    """A value that may differ between instances; `expr` is its Python source once resolved."""

    column: list  # the value in each instance (MISSING where an instance lacks the layer)
    origin: str  # where it sits (`conv1_out_channels`): the argument's name if nothing better
    role: str = "value"  # value, count, step or flag
    expr: str = ""
    const: Any = MISSING  # the value when all instances agree
    base: Hole | None = None  # along a run: the first unit's value and the step
    step: Hole | None = None


@dataclass(eq=False)
class LayerCall:
    """`nn.<cls>(*args, **kwargs)`, or `<cls>(...)` for archc's `own` module class; `params`
    (terms only): the primitive's parameters, for the keyword arguments `torch_layer` left out
    at their defaults."""

    cls: str
    args: list
    kwargs: dict
    params: Any = None
    own: bool = False
    parameter: bool = False  # a learnable tensor, `nn.Parameter(torch.<cls>([*args], **kwargs))`

    @property
    def ref(self) -> str:
        """How generated code names the class (a parameter's: the torch function making it)."""
        if self.parameter:
            return f"torch.{self.cls}"
        return self.cls if self.own else f"nn.{self.cls}"


@dataclass(eq=False)
class ClassCall:
    """A call of a generated class. In a term `args` overrides the instance's own values
    (along a run); in a pattern it maps each constructor argument to its Hole."""

    inst: Instance
    args: dict | None = None

    @property
    def values(self) -> dict:
        return self.args if self.args is not None else self.inst.args

    @property
    def klass(self) -> ClassDef:
        return self.inst.klass


@dataclass(eq=False)
class Container:
    """A combinator's container class (`CodegenForm.base`) over entries; numbered when
    `positional`."""

    base: str
    positional: bool
    entries: list


@dataclass(eq=False)
class Child:
    """One registered child module and the shape it outputs; `flag` (patterns only): built
    only when that argument is true."""

    name: str
    term: Any
    out_shape: tuple
    flag: Hole | None = None


@dataclass(eq=False)
class RepeatedBlocks:
    """A stage's or dense block's units (each the modules one block instance registers)."""

    units: list[list[Child]]
    head: bool  # a stage: the first block differs (stride, width, projection)


@dataclass(eq=False)
class Run:
    """`count` units alike but for values growing by a step (Holes with base and step)."""

    unit: list[Child]
    count: Hole
    shapes: list[list[tuple]] = field(default_factory=list)  # the first instance's, per unit
    prefix: str = ""  # the units' names: prefix{start + i}suffix (named containers)
    suffix: str = ""
    start: Hole | None = None


@dataclass(eq=False)
class Runs:
    """A stage's or dense block's pattern: a first block that differs (stages), then runs."""

    head: list[Child] | None
    runs: list[Run]


@dataclass(eq=False)
class Instance:
    """A node that becomes an instance of a generated class, with what classes need of it."""

    key: tuple  # ("block", name), ("kind", kind) or ("model",): instances of one key may merge
    kind: str  # the node's combinator kind, or INLINE or MODEL
    in_shape: tuple
    out_shape: tuple
    block_args: dict | None = None
    position: dict = field(default_factory=dict)  # a stage block's block_id and total_blocks
    groups: list[tuple[str, list]] = field(default_factory=list)
    positional: bool = False
    height: int = 0
    order: int = 0
    form: CodegenForm = CodegenForm()  # how its combinator is written
    settings: dict = field(default_factory=dict)  # the node's settings (Node.settings)
    klass: ClassDef | None = None
    args: dict = field(default_factory=dict)


def unknown(term: Any) -> NoReturn:
    """The end of every isinstance ladder over terms: nothing else belongs to the family."""
    raise TypeError(f"not a codegen term: {term!r}")

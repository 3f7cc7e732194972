"""Readable, standalone PyTorch source from a compiled spec (`archc codegen`).

The inferred tree is lowered to construction terms that hold concrete values: `nn.<Layer>`
calls (from each primitive's own `torch_layer`; archc's own module classes are written into
the file), containers, and instances of classes-to-be (block-template instances, nodes of a
combinator with a forward of its own). What each combinator becomes (container or class, its
base class, how its children are grouped, its forward, its docstring, a helper class such as
`Dense`) is its `CodegenForm` (`archc.combinators`): nothing here names a combinator. The
instances of one block type are
anti-unified into one class: what all instances share is written into the class, what differs
becomes a constructor argument, named after the template parameter (or `in_channels`, ...)
whose values it matches (a layer class too: `act=nn.Hardswish`). Numbered layers are aligned by
the template entry that wrote them, so a layer its `if:` leaves out of some instances is built
under that condition (`if se:`); lets the class can compute from its arguments are computed. Stages and dense blocks become loops over runs of equal (or
arithmetically growing) blocks, so a file grows with block types and stages, not depth.
Model-level parameters that feed layers directly (found by recompiling the spec with other
values) become keyword arguments of the model. jinja2 templates lay the file out and a small
line breaker formats it as `ruff format` would. Nothing here imports torch.

The stages, one module each: `lower` (IR → `terms`, the only reader of IR nodes), `probe`
(model parameters that feed layers unchanged), `runs` (repeated blocks → arithmetic
progressions), `generalize` (anti-unification into patterns), `arguments` (holes → named,
ordered constructor arguments), `classes` (grouping instances into classes), `emit` (patterns →
layout documents and statements), `layout` (the line breaker), `names` (values, literals, the
identifier `Namespace`), `render` (views, the `ForwardWriter` combinators write forward with, imports, jinja2 templates), `files` (spec paths in,
files out, a `WriteResult` back: the CLI prints).
"""

from archc.backends.codegen.files import write_all
from archc.backends.codegen.render import generate

__all__ = ["generate", "write_all"]

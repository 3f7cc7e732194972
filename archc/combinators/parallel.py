"""`parallel`: branches on the same input, concatenated on channels (Inception)."""

from __future__ import annotations

import math
import re

from archc import infer
from archc.combinators import CodegenForm, Combinator, combinator, leaf_names, shares_input
from archc.ir import Node, splice
from archc.primitives import ShapeError
from archc.spec.schema import NAME_RE


def forward(w) -> None:
    """Each branch on x into a local named after it; return their concatenation."""
    outs = []
    for branch in w.groups:
        stem = re.sub(r"\W", "_", branch)  # block1-0 -> block1_0
        outs.append(w.local(stem if NAME_RE.match(stem) else f"branch{stem}"))
        w.chain(branch, "x", outs[-1])
    w.returns("torch.cat", [outs, "1"])


@combinator
class Parallel(Combinator):
    kind = "parallel"
    syntax = "`parallel: {branch: node, ...}`"
    meaning = "branches on the same input, concatenated on channels (Inception)"
    fill = "#eab0c4"
    codegen = CodegenForm(
        base="nn.Module",
        groups=lambda node: [(branch.name, [branch]) for branch in node.children],
        every_group=True,  # a branch missing from one instance changes the concatenation
        doc="Branches applied to the same input, their outputs concatenated on channels.",
        forward=forward,
    )

    def expand(self, x, raw, path, name, scope, shape) -> Node:
        branches = x.children(raw, path, scope, shape, chain=False)
        if not branches:
            raise scope.error("parallel needs at least one branch", path)
        for branch in branches:
            shares_input(scope, branch, "the other branches")
        try:
            out = infer.concat([b.out_shape for b in branches], f"{name}: parallel")
        except ShapeError as exc:
            first = branches[0].out_shape  # point at the first branch that does not fit
            bad = next(b for b in branches if b.out_shape[1:] != first[1:])
            error = scope.error(f"{exc} (branch {bad.name!r})", path)
            error.location, error.field = bad.location, bad.field_path
            raise error from None
        return self.finish(Node(name, self.kind, children=branches), shape, out)

    def activations(self, node):
        return math.prod(node.out_shape)  # the concatenation

    def chains(self, node):
        return [splice([branch]) for branch in node.children]

    def depth(self, node, of):
        return max((of(branch) for branch in node.children), default=0)

    def build(self, node, modules):
        from archc.backends.torch_modules import Parallel

        return Parallel(modules, [leaf_names(c) for c in node.children])

    def draw(self, d, node, src, level, into):
        outs = [d.draw(branch, src, level, into) for branch in node.children]
        cat = d.place(into, node.path + "/concat", "concat")
        for out in outs:
            d.edge(out, cat)
        return d.port(cat, node.out_shape)

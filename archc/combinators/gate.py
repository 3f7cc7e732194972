"""`gate`: x * body(x), the body's output broadcast over the input (squeeze-and-excitation)."""

from __future__ import annotations

import math

from archc.combinators import CodegenForm, Combinator, combinator, program, shares_input
from archc.ir import Node, runs
from archc.primitives import Shape, ShapeError, fmt_shape


def broadcast(input_shape: Shape, scale: Shape) -> Shape:
    """Shape of input * scale: each scale dimension equals the input's or is 1."""
    if len(scale) != len(input_shape) or any(s not in (i, 1) for s, i in zip(scale, input_shape)):
        raise ShapeError(
            f"gate body gives {fmt_shape(scale)}, which does not broadcast over its input "
            f"{fmt_shape(input_shape)}: each dimension must equal the input's or be 1"
        )
    return input_shape


def forward(w) -> None:
    """out = body(x); return x * out (broadcast)."""
    w.chain("body", "x", "out")
    w.line("return x * out")


@combinator
class Gate(Combinator):
    kind = "gate"
    syntax = "`gate: {name: node, ...}` or a list"
    meaning = (
        "`x * body(x)`, the body's output broadcast over the input (squeeze-and-excitation: "
        "a C×1×1 scale); body layers are the gate's own children"
    )
    fill = "#f9cb9c"
    first_sees_input = True
    codegen = CodegenForm(
        base="nn.Module",
        groups=lambda node: [("body", node.children)],
        doc="The input scaled by its body's output (broadcast over it).",
        forward=forward,
    )

    def expand(self, x, raw, path, name, scope, shape) -> Node:
        body = x.children(raw, path, scope, shape, chain=True, role="body")
        if not body:
            raise scope.error("every layer of this gate's body is switched off by 'if'", path)
        shares_input(scope, body[0], "the gate's product")
        try:
            out = broadcast(shape, body[-1].out_shape)
        except ShapeError as exc:
            raise scope.error(f"{name}: {exc}", path) from None
        return self.finish(Node(name, self.kind, children=body), shape, out)

    def activations(self, node):
        return math.prod(node.out_shape)  # the product

    def chains(self, node):
        return runs(node.children)

    def build(self, node, modules):
        from archc.backends.torch_modules import Gate

        return Gate(modules, program(node.children))

    def draw(self, d, node, src, level, into):
        body = d.chain(node.children, src, level, into)
        mul = d.place(into, node.path + "/mul", "mul")
        d.edge(body, mul)
        d.edge(src, mul, skip=True)
        return d.port(mul, node.out_shape)

"""`seq`: layers one after another (a list, or a mapping of named layers)."""

from __future__ import annotations

from archc.combinators import CodegenForm, Combinator, combinator, program
from archc.ir import Node, branching, runs, steps


def forward(w) -> None:
    """The layers in turn, an inline parallel's branches each on the output before it."""
    w.chain("layers", "x", "x")
    w.line("return x")


# A sequence with an inline parallel among its layers (SqueezeNet's Fire): a class of its own,
# its branches' layers its attributes, forward written out.
BRANCHING = CodegenForm(
    base="nn.Module",
    groups=lambda node: [("layers", node.children)],
    doc="Layers in order, branching where branches are concatenated.",
    forward=forward,
)


@combinator
class Seq(Combinator):
    kind = "seq"
    syntax = "`seq: {name: node, ...}` or a list"
    meaning = "layers in order"
    fill = "#cdbfe3"
    inlinable = True
    first_sees_input = True

    def expand(self, x, raw, path, name, scope, shape) -> Node:
        children = x.children(raw, path, scope, shape, chain=True)
        if not children:
            raise scope.error("every layer of this sequence is switched off by 'if'", path)
        main = [c for c in children if c.head is None]  # heads (the model's) are extra outputs
        return self.finish(Node(name, self.kind, children=children), shape, main[-1].out_shape)

    def depth(self, node, of):
        return sum(of(c) for c in node.children if c.head is None)  # to the main output

    def chains(self, node):
        if node.inline:
            return []  # an inline one runs in its parent's
        return runs([c for c in node.children if c.head is None]) + [[c] for c in node.children if c.head]

    def build(self, node, modules):
        from torch import nn

        from archc.backends.torch_modules import Sequence

        steps = program(node.children)
        if all(isinstance(step, str) for step in steps):
            return nn.Sequential(modules)
        return Sequence(modules, steps)  # an inline parallel among its layers

    def form(self, node):
        return BRANCHING if branching(node.children) else self.codegen

    def draw(self, d, node, src, level, into):
        heads = [c for c in node.children if c.head is not None]
        inner = {id(c): [n for n in c.walk() if n.tap] for c in steps(node.children)}  # taps
        if not heads and not any(inner.values()):
            return d.chain(node.children, src, level, into)
        taps, segment = {}, []  # the model's heads, each fed by the layer it reads; taps
        for child in steps(node.children):
            if child.head is None:
                segment.append(child)
            if inner[id(child)] or any(h.head.source == child.name for h in heads):
                src, segment = d.chain(segment, src, level, into), []
                taps[child.name] = src
            if child.tap:
                d.extra_output(src, child.path)
            elif inner[id(child)] and d.collapsed(child, level):  # its box stands for the taps in it
                for tap in inner[id(child)]:
                    d.extra_output(d.port(src.node, tap.out_shape), tap.path)
        src = d.chain(segment, src, level, into) if segment else src
        for head in heads:
            d.extra_output(d.draw(head, taps[head.head.source], level, into), f"{head.head.output} (train)")
        return src

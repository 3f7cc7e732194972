"""`parallel`: branches on the same input, concatenated on channels (Inception)."""

from __future__ import annotations

import math
import re

from archc import infer
from archc.combinators import CodegenForm, Combinator, Concat, combinator, program, shares_input
from archc.ir import Node, runs
from archc.primitives import ShapeError
from archc.spec.schema import NAME_RE, check_name
from archc.spec.schema import Parallel as Options

CHUNK = "chunk:"  # the group-name prefix of a branch fed one chunk of the channels (split)


def groups(node: Node) -> list[tuple[str, list[Node]]]:
    """The branches in order (named `chunk:NAME` when split), then the post layers."""
    out = [
        (CHUNK + b.name if b.role == "chunk" else b.name, [b])
        for b in node.children
        if b.role != "post"
    ]
    post = node.role_children("post")
    return out + ([("post", post)] if post else [])


def forward(w) -> None:
    """Each branch on the input (or its chunk of it) into a local named after it; their
    concatenation, through the post layers when there are any. (Inline, the input is the
    output of the layers before it, and the result is assigned instead of returned.)"""
    branches = [g for g in w.groups if g != "post"]
    names = [g.removeprefix(CHUNK) for g in branches]
    sources = [w.source] * len(branches)
    if branches and branches[0].startswith(CHUNK):
        sources = [w.local(f"x{i + 1}") for i in range(len(branches))]
        w.line(f"{', '.join(sources)} = {w.source}.chunk({len(branches)}, dim=1)")
    outs = []
    for group, name, source in zip(branches, names, sources):
        stem = re.sub(r"\W", "_", name)  # block1-0 -> block1_0
        outs.append(w.local(stem if NAME_RE.match(stem) else f"branch{stem}"))
        w.chain(group, source, outs[-1])
    if "post" not in w.groups:
        w.returns("torch.cat", [outs, "1"])
        return
    w.line(f"out = torch.cat([{', '.join(outs)}], 1)")
    w.chain("post", "out", "out")
    w.line("return out")


@combinator
class Parallel(Combinator):
    kind = "parallel"
    syntax = "`parallel: {branch: node, ...}` or `parallel: {branches, split, post}`"
    meaning = (
        "branches on the same input, concatenated on channels (Inception); `split: true` feeds "
        "each branch its own equal chunk of the channels instead, an empty branch (`[]`) being "
        "the identity; `post`: parameter-free layers after the concatenation (ShuffleNet's "
        "`{channel_shuffle: 2}`); `inline: true` registers the branches' layers on the "
        "enclosing module (SqueezeNet's Fire, Inception v3's split branches)"
    )
    fill = "#eab0c4"
    inlinable = True  # its branches' layers registered on the block around it (SqueezeNet's Fire)
    inline_step = True
    options = Options
    codegen = CodegenForm(
        base="nn.Module",
        groups=groups,
        every_group=True,  # a branch missing from one instance changes the concatenation
        doc="Branches applied to the same input, their outputs concatenated on channels.",
        forward=forward,
    )

    def expand(self, x, raw, path, name, scope, shape) -> Node:
        if isinstance(raw, dict) and "branches" in raw:
            return self.expand_options(x, raw, path, name, scope, shape)
        branches = x.children(raw, path, scope, shape, chain=False)
        if not branches:
            raise scope.error("parallel needs at least one branch", path)
        for branch in branches:
            shares_input(scope, branch, "the other branches")
        out = self.concat(branches, path, name, scope)
        return self.finish(Node(name, self.kind, children=branches), shape, out)

    def expand_options(self, x, raw, path, name, scope, shape) -> Node:
        """`{branches, split, post}`: branches on the input or each on its chunk of channels."""
        value = dict(raw)
        for key in ("split", "post"):
            if key in value:
                value[key] = x.resolve(value[key], path + (key,), scope)
        spec = x.validate(self.options, value, path, scope, "parallel")
        if not spec.branches:
            raise scope.error("parallel needs at least one branch", path + ("branches",))
        fed = shape
        if spec.split:
            count = len(spec.branches)
            if shape[0] % count:
                raise scope.error(
                    f"{name}: split: {shape[0]} input channels do not divide into {count} branches",
                    path + ("split",),
                )
            fed = (shape[0] // count, *shape[1:])
        branches = []
        for key, branch_raw in spec.branches.items():
            bpath = path + ("branches", key)
            problem = check_name(key)
            if problem:
                raise scope.error(problem, bpath, key=True)
            if branch_raw == []:  # the identity: an empty sequence, as torchvision writes it
                branch = self.finish(Node(key, "seq", children=[]), fed, fed)
            else:
                branch = x.node(branch_raw, bpath, key, scope, fed)
                if branch is None:
                    continue
            branch.role = "chunk" if spec.split else ""
            branches.append(branch)
        if not spec.split:  # chunks are disjoint: only whole inputs are shared
            for branch in branches:
                shares_input(scope, branch, "the other branches")
        elif len(branches) != len(spec.branches):
            raise scope.error("a split parallel's branches cannot be switched off by 'if'", path)
        if not branches:
            raise scope.error("every branch is switched off by 'if'", path + ("branches",))
        cat = self.concat(branches, path, name, scope)
        post = []
        if spec.post is not None and spec.post != "none":
            layers = spec.post if isinstance(spec.post, list) else [spec.post]
            for i, layer_raw in enumerate(layers):
                lpath = path + ("post",) + ((i,) if isinstance(spec.post, list) else ())
                kind = next(iter(layer_raw)) if isinstance(layer_raw, dict) else str(layer_raw)
                lname = kind if len(layers) == 1 else f"post{i}"
                if lname in spec.branches:
                    raise scope.error(f"post layer {lname!r} has the name of a branch", lpath)
                layer = x.node(layer_raw, lpath, lname, scope, cat)
                if layer is None:
                    continue
                if layer.param_count:
                    raise scope.error(
                        "post layers must be parameter-free, such as channel_shuffle", lpath
                    )
                layer.role = "post"
                post.append(layer)
                cat = layer.out_shape
        node = Node(name, self.kind, children=branches + post)
        return self.finish(node, shape, cat)

    def concat(self, branches, path, name, scope):
        """The shape of the branches' outputs concatenated on channels (located when not)."""
        try:
            out = infer.concat([b.out_shape for b in branches], f"{name}: parallel")
        except ShapeError as exc:
            first = branches[0].out_shape  # point at the first branch that does not fit
            bad = next(b for b in branches if b.out_shape[1:] != first[1:])
            error = scope.error(f"{exc} (branch {bad.name!r})", path)
            error.location, error.field = bad.location, bad.field_path
            raise error from None
        return out

    def activations(self, node):
        return math.prod(node.out_shape)  # the concatenation

    def chains(self, node):
        branches = [c for c in node.children if c.role != "post"]
        return [run for b in branches for run in runs([b])] + runs(node.role_children("post"))

    def depth(self, node, of):
        branches = max((of(b) for b in node.children if b.role != "post"), default=0)
        return branches + sum(of(p) for p in node.role_children("post"))

    def build(self, node, modules):
        from archc.backends.torch_modules import Parallel

        return Parallel(modules, self.step(node))

    def step(self, node):
        branches = [c for c in node.children if c.role != "post"]
        split = bool(branches) and branches[0].role == "chunk"
        return Concat(tuple(program([b]) for b in branches), split, program(node.role_children("post")))

    def draw(self, d, node, src, level, into):
        branches = [c for c in node.children if c.role != "post"]
        where = f"{node.path}/{node.name}" if node.inline else node.path  # inline: under its parent's path
        if branches and branches[0].role == "chunk":
            chunk = d.place(into, where + "/chunk", "concat", f"chunk {len(branches)}")
            d.edge(src, chunk)
            src = d.port(chunk, branches[0].in_shape)
        outs = [d.draw(branch, src, level, into) for branch in branches]
        cat = d.place(into, where + "/concat", "concat")
        for out in outs:
            d.edge(out, cat)
        post = node.role_children("post")
        if post:
            return d.chain(post, d.port(cat, post[0].in_shape), level, into)
        return d.port(cat, node.out_shape)

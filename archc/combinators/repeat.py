"""`stage` and `dense`: a block template repeated `depth` times, in sequence or densely connected."""

from __future__ import annotations

import difflib
import math
from dataclasses import replace

from archc import infer
from archc.combinators import CodegenForm, Combinator, combinator, shares_input
from archc.combinators.seq import Seq
from archc.ir import Node
from archc.primitives import ShapeError
from archc.spec.schema import Repeat


def repeat(x, raw, path, scope, what):
    """The validated options of a stage or dense block, the block it repeats, its arguments."""
    if not isinstance(raw, dict):
        raise scope.error(f"{what} takes a mapping with block and depth", path)
    value = {k: v for k, v in raw.items()}
    for key in ("depth", "start", "names", "block"):
        if key in value:
            value[key] = x.resolve(value[key], path + (key,), scope)
    if isinstance(value.get("names"), str):  # variables of the scope filled in, {i} kept
        value["names"] = x.pattern(value["names"], path + ("names",), scope, None)
    spec = x.validate(Repeat, value, path, scope, what)
    if spec.block not in scope.blocks:
        close = difflib.get_close_matches(spec.block, list(scope.blocks), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise scope.error(f"unknown block type {spec.block!r}{hint}", path + ("block",))
    args = spec.block_args()  # resolved by block(), which also notes where each came from
    return spec, scope.blocks[spec.block], args


@combinator
class Stage(Seq):
    kind = "stage"
    options = Repeat
    codegen = CodegenForm(repeated=True, first_differs=True)
    syntax = "`stage: {block, depth, names, start, ...args}`"
    meaning = (
        "a block repeated `depth` times; `stride` applies to the first block only; children "
        'named by the `names` pattern (`"{i}"` from `start`)'
    )

    def expand(self, x, raw, path, name, scope, shape) -> Node:
        from archc.expand import MAX_NODES, refuse_branching

        spec, block, args = repeat(x, raw, path, scope, "stage")
        children = []
        rest = args if "stride" not in args else {**args, "stride": 1}  # blocks after the first
        # (args, in_shape, node, nodes counted, read its position, stage blocks inside it) of
        # the last block expanded in full
        last = None
        for i in range(spec.depth):
            block_args = args if i == 0 else rest
            child_name = spec.names.format(i=spec.start + i)
            if last is not None and last[0] is block_args and last[1] == shape:
                # the blocks left are copies of the last one: refuse now, not after copying
                if x.count + (spec.depth - i) * last[3] > MAX_NODES:
                    raise scope.error(f"network has more than {MAX_NODES:,} layers", path)
            position = x.position()
            if (
                x.reuse_repeats and last is not None and last[0] is block_args
                and last[1] == shape and x.count + last[3] <= MAX_NODES
                and (not last[4] or x.total_blocks is None)
            ):  # fmt: skip
                # Fast path: the same arguments on the same input shape expand to the same
                # subtree (expansion is a pure function of block, arguments, shape and scope),
                # so copy it instead of expanding it again; only the block's own name differs.
                # A block that read its position is copied only in the first pass, which only
                # counts the stage blocks (archc.expand.expand): the second expands each in full.
                child = last[2].clone()
                child.name = child_name
                x.count += last[3]  # (a copy of a block refuse_branching has passed)
                x.stage_blocks += last[5]  # its own stages' blocks: later block_ids count them
                x.provisional_copies += last[4]
            else:
                before, reads, stages = x.count, x.position_reads, x.stage_blocks
                # the arguments may read the block's position too (`sd: ${0.2 * block_id / total_blocks}`)
                here = replace(scope, env=x.with_position(scope.env, position))
                child = x.block(block, block_args, path, child_name, here, shape, position)
                child.location, child.field_path = scope.here(path)
                # a block that read its position differs from the next: expand each in full
                last = (block_args, shape, child, x.count - before, x.position_reads != reads, x.stage_blocks - stages)
                refuse_branching([child], "a stage")
            children.append(child)
            shape = child.out_shape
        node = Node(name, self.kind, children=children, repeats=spec.block)
        return self.finish(node, children[0].in_shape, shape)


# The class generated code runs a dense block with (nn.Sequential's forward, concatenating).
DENSE = '''class Dense(nn.Sequential):
    """Dense connectivity (DenseNet): each layer's output is concatenated onto its input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = torch.cat([x, layer(x)], 1)
        return x
'''


@combinator
class Dense(Combinator):
    kind = "dense"
    options = Repeat
    syntax = "`dense: {block, depth, names, start, ...args}`"
    meaning = "DenseNet: each layer's output concatenated to its input"
    fill = "#9fd8cf"
    codegen = CodegenForm(base="Dense", repeated=True, helper=DENSE)

    def expand(self, x, raw, path, name, scope, shape) -> Node:
        from archc.expand import MAX_NODES, refuse_branching

        spec, block, args = repeat(x, raw, path, scope, "dense")
        in_shape, children = shape, []
        for i in range(spec.depth):
            before = x.count
            child = x.block(block, args, path, spec.names.format(i=spec.start + i), scope, shape)
            child.location, child.field_path = scope.here(path)
            if i == 0 and x.count + (spec.depth - 1) * (x.count - before) > MAX_NODES:
                raise scope.error(f"network would have more than {MAX_NODES:,} layers", path)
            shares_input(scope, child, "the concatenation")
            try:
                infer.dense_layer_out(shape, child.out_shape)
                shape = infer.concat([shape, child.out_shape], f"{name}: dense")
            except ShapeError as exc:
                raise scope.error(str(exc), path) from None
            refuse_branching([child], "a dense block")
            children.append(child)
        node = Node(name, self.kind, children=children, repeats=spec.block)
        return self.finish(node, in_shape, shape)

    def activations(self, node):
        total, channels, spatial = 0, node.in_shape[0], math.prod(node.in_shape[1:])
        for child in node.children:  # each layer's concatenation
            channels += child.out_shape[0]
            total += channels * spatial
        return total

    def build(self, node, modules):
        from archc.backends.torch_modules import Dense

        return Dense(modules)

    def draw(self, d, node, src, level, into):
        """Each layer reads everything so far; its output is concatenated onto its input."""
        for i, layer in enumerate(node.children):
            out = d.draw(layer, src, level, into)
            cat = d.place(into, f"{node.path}/concat{i}", "concat")
            d.edge(src, cat, skip=True)
            d.edge(out, cat)
            after = node.children[i + 1].in_shape if i + 1 < len(node.children) else node.out_shape
            src = d.port(cat, after)
        return src

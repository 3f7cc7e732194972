"""Static shape, parameter and MAC rules for the combinators (pure Python, no torch).

Primitives carry their own rules (archc.primitives); this module combines them. MACs are
multiply-accumulates of convolutions and linear layers at batch 1; batch norm, activations,
pooling, residual additions and concatenations are not counted (as in torchvision's figures).
Parameters are trainable tensors' elements; batch-norm running statistics are buffers, not counted.
"""

from __future__ import annotations

from archc.ir import Node
from archc.primitives import Shape, ShapeError, fmt_shape


def total(node: Node) -> Node:
    """Set a combinator's parameter and MAC totals from its children."""
    node.param_count = sum(c.param_count for c in node.children)
    node.macs = sum(c.macs for c in node.children)
    return node


def concat(shapes: list[Shape], what: str) -> Shape:
    """Shape of tensors concatenated along channels (features, for flat tensors)."""
    first = shapes[0]
    for shape in shapes[1:]:
        if len(shape) != len(first) or shape[1:] != first[1:]:
            raise ShapeError(
                f"{what} cannot concatenate {fmt_shape(first)} with {fmt_shape(shape)}: "
                "all but the channel dimension must match"
            )
    return (sum(s[0] for s in shapes), *first[1:])


def residual_sum(body: Shape, shortcut: Shape) -> Shape:
    if body != shortcut:
        raise ShapeError(
            f"residual body gives {fmt_shape(body)} but the shortcut gives {fmt_shape(shortcut)}"
        )
    return body


def projection_stride(in_shape: Shape, out_shape: Shape) -> int:
    """Stride of a 1x1 convolution taking in_shape's spatial size to out_shape's."""
    if len(in_shape) != 3 or len(out_shape) != 3:
        raise ShapeError("an automatic projection shortcut needs feature maps on both sides")
    # ceil(size / stride) == target for the strides in [ceil(size / target), ceil(size /
    # (target - 1)) - 1] (no upper end when target is 1); use the smallest one both sides allow.
    low, high = 1, None
    for size, target in zip(in_shape[1:], out_shape[1:]):
        low = max(low, -(-size // target))
        if target > 1:
            top = -(-size // (target - 1)) - 1
            high = top if high is None else min(high, top)
    if (high is not None and low > high) or any(
        -(-size // low) != target for size, target in zip(in_shape[1:], out_shape[1:])
    ):
        raise ShapeError(
            f"no 1x1 projection maps {fmt_shape(in_shape)} to {fmt_shape(out_shape)}; "
            "write the shortcut explicitly"
        )
    return low


def dense_layer_out(layer_in: Shape, layer_out: Shape) -> None:
    if layer_out[1:] != layer_in[1:]:
        raise ShapeError(
            f"a dense layer must keep the spatial size: {fmt_shape(layer_in)} became "
            f"{fmt_shape(layer_out)}"
        )


WEIGHT_LAYERS = ("conv", "linear")  # primitive categories a network's depth counts


def depth(node: Node) -> int:
    """Weight layers (convolutions, linear) on the longest path from input to output, as a
    network's depth is counted: ResNet-50 has 50, VGG-16 16."""
    if node.is_primitive:
        return int(node.primitive.category in WEIGHT_LAYERS)
    return node.combinator.depth(node, depth)

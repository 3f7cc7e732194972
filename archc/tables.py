"""Per-layer tables and totals from the static inference (no torch)."""

from __future__ import annotations

from typing import Any

from archc import infer
from archc.compiler import Spec
from archc.freeze import frozen_params
from archc.ir import Node
from archc.primitives import fmt_shape


def kind_label(node: Node) -> str:
    """`stage: bottleneck ×6` for a repeated block, the spec's own word for anything else."""
    if node.repeats and node.template is None:
        return f"{node.kind}: {node.repeats} ×{len(node.children)}"
    if node.is_primitive and node.template is None:
        detail = node.primitive.detail(node.params)
        return f"{node.spec_kind} {detail}" if detail else node.spec_kind
    return node.spec_kind


def rows(spec: Spec, depth: int | None = None) -> list[dict[str, Any]]:
    """One row per module down to `depth` levels (None: every level); inline groups skipped."""
    out: list[dict[str, Any]] = []
    frozen = set(spec.frozen)

    def visit(node: Node, level: int, in_frozen: bool) -> None:
        for child in node.children:
            if child.inline:
                visit(child, level, in_frozen)
                continue
            out.append({
                "name": child.path,
                "type": kind_label(child) + (f" (head on {child.head.source})" if child.head else "")
                + (" (frozen)" if child.path in frozen else ""),
                "depth": level,
                "output_shape": list(child.out_shape),
                "params": child.param_count,
                "macs": child.macs,
                "frozen": in_frozen or child.path in frozen,
            })  # fmt: skip
            if depth is None or level < depth:
                visit(child, level + 1, in_frozen or child.path in frozen)

    visit(spec.tree, 1, False)
    return out


def as_dict(spec: Spec, depth: int | None = None) -> dict[str, Any]:
    return {
        "name": spec.name,
        "file": spec.file,
        "input_shape": list(spec.input_shape),
        "output_shape": list(spec.output_shape),
        "params": spec.param_count,
        "trainable_params": spec.param_count - frozen_params(spec),
        "frozen_params": frozen_params(spec),
        "frozen": list(spec.frozen),
        "macs": spec.macs,
        "outputs": list(spec.outputs),
        "taps": taps(spec),
        "heads": heads(spec),
        "depth": infer.depth(spec.tree),
        "let": dict(spec.lets),
        "layers": rows(spec, depth),
    }


def show(value: Any, limit: int = 200) -> str:
    """A let's value on one line (a long list cut short, with its length)."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 5].rsplit(",", 1)[0] + f", ...] ({len(value)} items)" if isinstance(value, list) else text[:limit] + "..."
    return text


def frozen_lines(spec: Spec) -> list[str]:
    """The trainable and frozen parameter counts, when the spec freezes anything."""
    if not spec.frozen:
        return []
    frozen = frozen_params(spec)
    return [
        f"trainable params: {spec.param_count - frozen:,}",
        f"frozen params: {frozen:,} (in {', '.join(spec.frozen)})",
    ]


def taps(spec: Spec) -> list[dict[str, Any]]:
    """The feature taps in output order: the layer whose output is returned (the dict's key)
    and its static shape."""
    return [
        {"name": key, "output_shape": list(node.out_shape)}
        for key, node in spec.output_nodes().items()
        if node.tap
    ]


def heads(spec: Spec) -> list[dict[str, Any]]:
    """The auxiliary heads in output order: the layer they read, their static output shape and
    totals (included in the model's params and MACs; in eval they do not run)."""
    return [
        {"name": n.path, "output": n.head.output, "from": n.head.source,
         "input_shape": list(n.in_shape), "output_shape": list(n.out_shape),
         "params": n.param_count, "macs": n.macs}
        for n in spec.head_order()
    ]  # fmt: skip


def compare(specs: list[Spec]) -> list[dict[str, Any]]:
    """One row per model for a side-by-side view (`summary --variants`, several specs)."""
    from archc.resources import estimate

    return [
        {
            "name": spec.name, "file": spec.file, "variant": spec.variant,
            "input_shape": list(spec.input_shape), "output_shape": list(spec.output_shape),
            "params": spec.param_count, "macs": spec.macs,
            "activation_bytes": estimate(spec, batch=1).activation_bytes,
            "depth": infer.depth(spec.tree),
        }
        for spec in specs
    ]  # fmt: skip


def comparison(models: list[dict[str, Any]]) -> str:
    """The side-by-side table a person reads: a model per row."""
    from archc.resources import human as size

    header = ("model", "params", "MACs", "input", "output", "activations", "depth")
    lines = [
        (m["name"], f"{m['params']:,}", human(m["macs"]), fmt_shape(m["input_shape"]),
         fmt_shape(m["output_shape"]), size(m["activation_bytes"]), str(m["depth"]))
        for m in models
    ]  # fmt: skip
    widths = [max(len(x) for x in col) for col in zip(header, *lines)]
    align = ("<", ">", ">", ">", ">", ">", ">")

    def fmt(cells) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *(fmt(line) for line in lines),
                      "activations: at batch 1, float32; MACs: conv + linear; depth: weight layers on the longest path"])  # fmt: skip


def human(n: int) -> str:
    for unit, size in (("G", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def table(spec: Spec, depth: int | None = 2) -> str:
    """A plain-text table a person reads in a terminal."""
    data = rows(spec, depth)
    header = ("layer", "type", "output", "params", "MACs")
    lines = [
        ("  " * (r["depth"] - 1) + r["name"].rsplit(".", 1)[-1] if r["depth"] > 1 else r["name"],
         r["type"], fmt_shape(r["output_shape"]), f"{r['params']:,}", human(r["macs"]))
        for r in data
    ]  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    align = ("<", "<", ">", ">", ">")

    def fmt(cells) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(cells, align, widths)).rstrip()

    rule = "-" * len(fmt(header))
    parts = [
        f"{spec.name}  ({spec.file})",
        f"input {fmt_shape(spec.input_shape)} → "
        + (f"a dict of {len(spec.outputs)} outputs (below)" if spec.taps else f"output {fmt_shape(spec.output_shape)}"),
        *(f"let {key} = {show(value)}" for key, value in spec.lets.items()),
        rule,
        fmt(header),
        rule,
        *(fmt(line) for line in lines),
        rule,
        f"total params: {spec.param_count:,}",
        *frozen_lines(spec),
        f"total MACs:   {spec.macs:,} ({spec.macs / 1e9:.3f} G, conv + linear, batch 1)",
    ]
    if spec.taps:
        parts.append("returns a dict: " + ", ".join(
            f"{key} {fmt_shape(node.out_shape)}" + (f" (head {node.path} on {node.head.source}, train mode)" if node.head else "")
            for key, node in spec.output_nodes().items()
        ))  # fmt: skip
    elif spec.heads:
        main = f"{spec.outputs[0]} {fmt_shape(spec.output_shape)}"
        parts.append(f"train-mode outputs: {main}, " + ", ".join(
            f"{h['output']} {fmt_shape(h['output_shape'])} (head {h['name']} on {h['from']})" for h in heads(spec)
        ))  # fmt: skip
    if spec.heads:
        head_params, head_macs = sum(n.param_count for n in spec.heads), sum(n.macs for n in spec.heads)
        parts.append(
            f"in eval (heads off): params used {spec.param_count - head_params:,}, "
            f"MACs {spec.macs - head_macs:,} ({(spec.macs - head_macs) / 1e9:.3f} G)"
        )
    return "\n".join(parts)

"""`archc draw`: a Graphviz diagram of the compiled tree, from static shapes (never runs torch).

One recursive walk turns the tree into a graph. Each node is drawn from the tensor it receives
(a Port) and returns the tensor it produces, so additions, concatenations and skip edges come
from each combinator's own rule (Combinator.draw in archc.combinators), and every edge carries the inferred shape of
the tensor it stands for. `depth` collapses subtrees into one box each; identical neighbours
in a sequence (a stage's repeated blocks) fold into one `block ×n` box.

Writing files (formats, the dot program, markers for no-clobber) lives in graphviz_files.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import graphviz

from archc.backends import graphviz_files
from archc.compiler import Spec, library, load
from archc.errors import UsageError
from archc.ir import Node, splice
from archc.outputs import MARKER, contained, write_atomic
from archc.primitives import Shape, fmt_shape
from archc.tables import human, kind_label

DIRECTIONS = ("TB", "LR")
SHORT_SEQ = 4  # a collapsed plain sequence of at most this many layers lists them
FONT = "Helvetica"

# Fill colours: primitives by category, then the joins (collapsed subtrees: Combinator.fill).
FILL = {
    "conv": "#c6dbef", "linear": "#dadaeb", "norm": "#fff2b2", "activation": "#d4edcc",
    "pool": "#fdd8b5", "other": "#e6e6e6",
    "add": "#ffffff", "mul": "#ffffff", "concat": "#f4cccc", "io": "#ffffff",
}  # fmt: skip

# How each sort of box looks: a layer, a collapsed subtree, a fold of identical ones (a stack).
LOOK = {
    "layer": {"style": "filled"},
    "subtree": {"style": "rounded,filled,bold"},
    "fold": {"style": "filled,bold", "shape": "box3d", "margin": "0.14,0.08"},
    "io": {"style": "rounded", "color": "#333333"},
    "add": {"shape": "circle", "label": "+", "fontsize": "14", "width": "0.3", "height": "0.3", "fixedsize": "true", "margin": "0"},
    "mul": {"shape": "circle", "label": "×", "fontsize": "14", "width": "0.3", "height": "0.3", "fixedsize": "true", "margin": "0"},
    "concat": {"label": "concat", "fontsize": "9", "height": "0.25", "style": "filled"},
}  # fmt: skip

# Background of expanded subtrees (clusters), alternating with nesting so borders stay visible.
CLUSTER_FILL = ("#f3f3f3", "#ffffff")

GRAPH_ATTR = {
    "fontname": FONT,
    "nodesep": "0.25",
    "ranksep": "0.3",
    "labelloc": "t",
    "labeljust": "l",
    "newrank": "true",
}
NODE_ATTR = {
    "shape": "box", "style": "rounded,filled", "fontname": FONT, "fontsize": "10",
    "margin": "0.1,0.04", "height": "0.3", "penwidth": "0.8", "color": "#555555",
}  # fmt: skip
EDGE_ATTR = {
    "weight": "4",
    "fontname": FONT,
    "fontsize": "8",
    "fontcolor": "#444444",
    "color": "#555555",
    "arrowsize": "0.6",
}
SKIP_EDGE = {
    "color": "#1f77b4",
    "penwidth": "1.4",
    "weight": "1",
}  # light, so the main path stays straight


@dataclass(frozen=True)
class Port:
    """A tensor in the drawing: the graph node that produced it and its static shape."""

    node: str
    shape: Shape


def digraph(
    spec: Spec, *, depth: int | None = None, direction: str = "TB", shapes: bool = True
) -> graphviz.Digraph:
    """The diagram of `spec`: `depth` levels expanded (None: all), edges labelled with shapes."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise UsageError(f"depth must be a whole number of at least 1, got {depth!r}")
    if direction not in DIRECTIONS:
        raise UsageError(f"direction must be TB or LR, got {direction!r}")
    return _Drawing(spec, depth, direction, shapes).graph


class _Drawing:
    def __init__(self, spec: Spec, depth: int | None, direction: str, shapes: bool) -> None:
        self.depth = depth
        self.direction = direction
        self.graph = graphviz.Digraph(
            spec.name,
            graph_attr={
                **GRAPH_ATTR,
                "rankdir": direction,
                "comment": marker(spec),
                "label": _title(spec),
            },
            node_attr=NODE_ATTR,
            edge_attr=EDGE_ATTR,
        )
        self.edges: list[tuple[Port, str, dict[str, str]]] = []
        self.signatures: dict[int, tuple] = {}
        self.place(self.graph, "/input", "io", _html("input", fmt_shape(spec.input_shape)))
        out = self.inside(spec.tree, Port("/input", spec.input_shape), 1, self.graph)
        self.place(self.graph, "/output", "io", _html("output", fmt_shape(spec.output_shape)))
        self.edge(out, "/output")
        # Edges last and at top level, so an edge never pulls a node into the wrong cluster.
        for port, head, attrs in self.edges:
            label = {"label": fmt_shape(port.shape)} if shapes else {}
            self.graph.edge(port.node, head, **label, **attrs)

    # ---- one node of the tree --------------------------------------------------------------

    def draw(self, node: Node, src: Port, level: int, into: graphviz.Digraph) -> Port:
        """Draw `node` (at `level`; top-level children are 1) fed by `src`; return its output."""
        if node.is_primitive:
            fill = FILL[node.primitive.category]
            return self.box(into, node, "layer", _layer_label(node), fill, src)
        if node.inline:  # a grouping in the spec only: no box, no cluster, no level of its own
            return self.inside(node, src, level, into)
        if self.collapsed(node, level):
            label = _collapsed_label(node, _short_name(node), 1)
            return self.box(into, node, "subtree", label, node.combinator.fill, src)
        with into.subgraph(name="cluster_" + node.path) as cluster:
            cluster.attr(
                label=_cluster_label(_short_name(node), _facts(node, layers=False), self.direction),
                style="rounded,filled",
                fillcolor=CLUSTER_FILL[(level - 1) % 2],
                color="#999999",
                tooltip=_tooltip(node),
            )
            return self.inside(node, src, level + 1, cluster)

    def inside(self, node: Node, src: Port, level: int, into: graphviz.Digraph) -> Port:
        """A combinator's tensors, by its own rule (Combinator.draw)."""
        return node.combinator.draw(self, node, src, level, into)

    @staticmethod
    def port(node_id: str, shape: Shape) -> Port:
        return Port(node_id, shape)

    def collapsed(self, node: Node, level: int) -> bool:
        return (
            self.depth is not None
            and level >= self.depth
            and not node.is_primitive
            and not node.inline
        )

    def box(
        self, into: graphviz.Digraph, node: Node, look: str, label: str, fill: str, src: Port
    ) -> Port:
        self.place(into, node.path, look, label, fillcolor=fill, tooltip=_tooltip(node))
        self.edge(src, node.path)
        return Port(node.path, node.out_shape)

    def place(
        self,
        into: graphviz.Digraph,
        node_id: str,
        look: str,
        label: str | None = None,
        **attrs: str,
    ) -> str:
        """Declare a graph node; `look` picks its shape and style from LOOK."""
        style = {"fillcolor": FILL.get(look, FILL["io"]), **LOOK[look], **attrs}
        if label is not None:
            style["label"] = label
        into.node(node_id, **style)
        return node_id

    def edge(self, src: Port, head: str, skip: bool = False) -> None:
        self.edges.append((src, head, SKIP_EDGE if skip else {}))

    # ---- what combinators draw with (each combinator's rule: archc.combinators) -------------

    def chain(self, nodes: list[Node], src: Port, level: int, into: graphviz.Digraph) -> Port:
        """Nodes one after another; identical collapsed neighbours fold into one `×n` box."""
        for group in self.runs(splice(nodes), level):
            if len(group) == 1:
                src = self.draw(group[0], src, level, into)
                continue
            first, last = group[0], group[-1]
            name = f"{_short_name(first)}–{last.name}"
            tooltip = f"{name}: {len(group)} × {_tooltip(first)}"
            label = _collapsed_label(first, name, len(group))
            self.place(
                into,
                first.path + "/fold",
                "fold",
                label,
                fillcolor=first.combinator.fill,
                tooltip=tooltip,
            )
            self.edge(src, first.path + "/fold")
            src = Port(first.path + "/fold", last.out_shape)
        return src

    def runs(self, nodes: list[Node], level: int) -> list[list[Node]]:
        """Consecutive nodes grouped when collapsed and structurally identical."""
        groups: list[list[Node]] = []
        for node in nodes:
            prev = groups[-1][-1] if groups else None
            same = prev is not None and self.collapsed(prev, level) and self.collapsed(node, level)
            if same and self.signature(prev) == self.signature(node):
                groups[-1].append(node)
            else:
                groups.append([node])
        return groups

    def signature(self, node: Node) -> tuple:
        """Everything that makes two subtrees the same module except their own names."""
        key = id(node)
        if key not in self.signatures:
            self.signatures[key] = (
                node.kind, repr(node.template), node.repeats, repr(node.params),
                node.role, node.inline, node.in_shape, node.out_shape,
                tuple((c.name, self.signature(c)) for c in node.children),
            )  # fmt: skip
        return self.signatures[key]


# ---- labels ------------------------------------------------------------------------------


def marker(spec: Spec) -> str:
    """The no-clobber marker every drawing carries (a comment in DOT and SVG)."""
    return f"{MARKER} from {Path(spec.file).name}; rerun `archc draw` to update"


def _html(title: str, *lines: str) -> str:
    """An HTML-like node label: a bold first line, then smaller grey lines."""
    parts = [f'<font point-size="10"><b>{html.escape(title)}</b></font>']
    parts += [
        f'<font point-size="9" color="#444444">{html.escape(line)}</font>' for line in lines if line
    ]
    return "<" + "<br/>".join(parts) + ">"


def _cluster_label(title: str, lines: list[str], direction: str) -> str:
    """A left-aligned cluster title. Top to bottom, a blank cell as wide as the text keeps the
    text left of the centre line, where the edge into the cluster runs."""
    text = f'<font point-size="11"><b>{html.escape(title)}</b></font>'
    text += "".join(
        f'<br/><font point-size="9" color="#444444">{html.escape(line)}</font>'
        for line in lines
        if line
    )
    pad = max(7 * len(title), *(5 * len(line) for line in lines)) if direction == "TB" else 0
    spacer = f'<td width="{pad}"></td>' if pad else ""
    return f'<<table border="0" cellpadding="0" cellspacing="0"><tr><td align="left" balign="left">{text}</td>{spacer}</tr></table>>'


def _title(spec: Spec) -> str:
    facts = (
        f"input {fmt_shape(spec.input_shape)} → output {fmt_shape(spec.output_shape)}   ·   "
        f"{human(spec.param_count)} params   ·   {human(spec.macs)} MACs"
    )
    return (
        f'<<font point-size="16"><b>{html.escape(spec.name)}</b></font><br/>'
        f'<font point-size="10" color="#444444">{html.escape(facts)}</font><br/> >'
    )


def _short_name(node: Node) -> str:
    """The node's name; a numbered one (`0`) keeps its parent's (`layer1.0`) to make sense."""
    parts = node.path.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]


def _layer_label(node: Node) -> str:
    """The primitive's own label, and the layer's name where it says something more."""
    text = node.primitive.label(node.params, node.out_shape)
    return _html(text, "" if node.name in (node.kind, text) else node.name)


def _collapsed_label(node: Node, name: str, times: int) -> str:
    """A subtree drawn as one box: name, what it is, its settings, its size."""
    size = f"{human(node.param_count * times)} params" if node.param_count else ""
    return _html(name, *_facts(node, times), size)


def _facts(node: Node, times: int = 1, *, layers: bool = True) -> list[str]:
    """What a subtree is (`bottleneck ×5`, `stage: bottleneck ×6`) and its settings; for a
    short plain sequence drawn as one box (`layers`), its layers instead."""
    what = f"{kind_label(node)} ×{times}" if times > 1 else kind_label(node)
    args = _arguments(node)
    if layers and not args and not node.template and not node.repeats and 0 < len(node.children) <= SHORT_SEQ:
        return [_one_line(c) for c in node.children]
    return [what, args]


def _one_line(node: Node) -> str:
    if node.is_primitive:
        return node.primitive.label(node.params, node.out_shape)
    args = _arguments(node)
    return f"{kind_label(node)}: {args}" if args else kind_label(node)


def _arguments(node: Node) -> str:
    """Block arguments that differ from the block's defaults: what a person would mention."""
    use = node.template
    if use is None and node.repeats and node.children:  # a stage: its first block carries them
        use = node.children[0].template
    if use is None or not use.args:
        return ""
    args = use.args
    template = library().get(use.name)
    defaults = template.template.params if template else {}
    return ", ".join(
        f"{k} {_value(v)}" for k, v in args.items() if k not in defaults or defaults[k] != v
    )


def _value(value: Any) -> str:
    return "/".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _tooltip(node: Node) -> str:
    return (
        f"{node.path or 'model'} ({node.spec_kind if node.path else 'model'}): {fmt_shape(node.in_shape)} → {fmt_shape(node.out_shape)}, "
        f"{node.param_count:,} params, {node.macs:,} MACs"
    )


def render(args: Any) -> int:
    """`archc draw`: write the diagram to args.output (default: <spec stem>.svg here)."""
    output = (
        Path(args.output) if args.output else contained(Path.cwd(), Path(args.spec).stem + ".svg")
    )
    fmt = graphviz_files.output_format(output)
    spec = load(args.spec)
    graph = digraph(spec, depth=args.depth, direction=args.direction, shapes=not args.no_shapes)
    write_atomic(output, graphviz_files.encode(graph.source, fmt, marker(spec)), force=args.force)
    print(f"wrote {output}")
    return 0

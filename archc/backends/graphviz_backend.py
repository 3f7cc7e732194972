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
from archc.ir import Node, steps
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
    _check_options(depth, direction)
    return _Drawing(spec, depth, direction, shapes).graph


def _check_options(depth: int | None, direction: str) -> None:
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise UsageError(f"depth must be a whole number of at least 1, got {depth!r}")
    if direction not in DIRECTIONS:
        raise UsageError(f"direction must be TB or LR, got {direction!r}")


class _Folding:
    """Which subtrees a drawing at `depth` collapses, and which neighbours fold into one box."""

    def __init__(self, depth: int | None, signatures: dict[int, tuple] | None = None) -> None:
        self.depth = depth
        self.signatures = {} if signatures is None else signatures  # shareable: same tree
        self.texts: dict[int, tuple[str, Any]] = {}

    def collapsed(self, node: Node, level: int) -> bool:
        return (
            self.depth is not None
            and level >= self.depth
            and not node.is_primitive
            and not node.inline
        )

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
                node.kind, repr(node.template), node.repeats, self.text(node.params),
                node.role, node.inline, node.in_shape, node.out_shape,
                tuple((c.name, self.signature(c)) for c in node.children),
            )  # fmt: skip
        return self.signatures[key]

    def text(self, params: Any) -> str:
        """repr(params), once per params object: a stage's copied blocks share theirs, and
        pydantic's repr is the slow part of telling 10,000 blocks apart."""
        key = id(params)
        if key not in self.texts:
            self.texts[key] = (repr(params), params)  # params kept, so its id stays its own
        return self.texts[key][0]

    def boxes(self, nodes: list[Node], level: int, budget: int) -> int:
        """The boxes and clusters drawing `nodes` at `level` makes (`+` and `concat` joins, at
        most one per box, not counted), counted only until past `budget`: cheap, so a depth
        that fits can be chosen before drawing."""
        total = 0
        for group in self.runs(steps(nodes), level):
            node = group[0]
            if len(group) > 1 or node.is_primitive or self.collapsed(node, level):
                total += 1
            else:
                inner = level if node.inline else level + 1
                total += 1 + self.boxes(node.children, inner, budget - total - 1)
            if total > budget:
                break
        return total


class _Drawing(_Folding):
    def __init__(
        self,
        spec: Spec,
        depth: int | None,
        direction: str,
        shapes: bool,
        signatures: dict[int, tuple] | None = None,
    ) -> None:
        super().__init__(depth, signatures)
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
        self.place(self.graph, "/input", "io", _html("input", fmt_shape(spec.input_shape)))
        out = self.inside(spec.tree, Port("/input", spec.input_shape), 1, self.graph)
        if not spec.taps:  # with taps the model returns them (output boxes of their own)
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

    def extra_output(self, src: Port, title: str) -> None:
        """An output box besides the model's main one (an auxiliary head's, a feature tap's), fed
        by `src`."""
        node_id = self.place(self.graph, f"/output/{title}", "io", _html(title, fmt_shape(src.shape)))
        self.edge(src, node_id)

    def edge(self, src: Port, head: str, skip: bool = False) -> None:
        self.edges.append((src, head, SKIP_EDGE if skip else {}))

    # ---- what combinators draw with (each combinator's rule: archc.combinators) -------------

    def chain(self, nodes: list[Node], src: Port, level: int, into: graphviz.Digraph) -> Port:
        """Nodes one after another; identical collapsed neighbours fold into one `×n` box."""
        for group in self.runs(steps(nodes), level):
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
        f"input {fmt_shape(spec.input_shape)} → "
        + (f"{len(spec.outputs)} outputs" if spec.taps else f"output {fmt_shape(spec.output_shape)}")
        + "   ·   "
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


MAX_DRAWN_BOXES = 5_000  # ~7x DenseNet-201's layers; Graphviz takes minutes to lay out much more


@dataclass(frozen=True)
class Drawn:
    """What `render` wrote: the file, and the depth it chose itself (None if it did not)."""

    path: Path
    chosen_depth: int | None = None


def fitting_depth(
    spec: Spec, limit: int = MAX_DRAWN_BOXES, signatures: dict[int, tuple] | None = None
) -> int | None:
    """None when the whole tree fits in `limit` boxes; else the deepest depth that does (at
    least 1, however wide the top level is). `signatures` memoizes the folds for the drawing."""
    signatures = {} if signatures is None else signatures
    if _Folding(None, signatures).boxes(spec.tree.children, 1, limit) <= limit:
        return None
    depth = 1
    while _Folding(depth + 1, signatures).boxes(spec.tree.children, 1, limit) <= limit:
        depth += 1
    return depth


def default_output(spec: Spec) -> Path:
    """`<spec name>.svg` in the current folder (the spec's `name:`, a plain identifier)."""
    return contained(Path.cwd(), spec.name + ".svg")


def render(
    spec_path: str | Path,
    output: str | Path | None = None,
    *,
    depth: int | None = None,
    direction: str = "TB",
    shapes: bool = True,
    force: bool = False,
    **options: Any,
) -> Drawn:
    """Write the diagram of the spec at `spec_path` to `output` (default: `default_output`).

    Without `depth`, a graph too big for Graphviz is collapsed to the deepest depth that fits
    (`Drawn.chosen_depth` says which), instead of writing a file no one can render.
    """
    if output is not None:
        graphviz_files.output_format(Path(output))  # a usage error before any work
    spec = load(spec_path, **options)  # variant=, overrides=
    path = Path(output) if output is not None else default_output(spec)
    _check_options(depth, direction)
    signatures: dict[int, tuple] = {}  # the folds found choosing a depth serve the drawing
    chosen = fitting_depth(spec, signatures=signatures) if depth is None else None
    graph = _Drawing(spec, depth or chosen, direction, shapes, signatures).graph
    fmt = graphviz_files.output_format(path)
    write_atomic(path, graphviz_files.encode(graph.source, fmt, marker(spec)), force=force)
    return Drawn(path, chosen)

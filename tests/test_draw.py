"""`archc draw`: diagrams from static shapes, the DOT structure, rendering, and safe writes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import graphviz
import pytest

import archc
from archc.backends.graphviz_backend import digraph
from archc.backends.graphviz_files import PNG_SIGNATURE, _mark_pdf
from archc.cli import main
from archc.errors import UsageError
from archc.ir import Node
from archc.outputs import MARKER, written_by_archc
from archc.primitives import fmt_shape
from conftest import MODELS, ROOT, SPECS, run_archc

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="Graphviz's dot program is not installed")

# Every combinator and an inline group, small enough to check by hand:
# stem 8×16×16 → mix (4 + 6 + 8 = 18) → grow (18 + 3·4 = 30) → res (identity) → st (3 × basic)
# → head (inline: pool, flatten) → fc 10.
MIXED = """\
archc: 1
name: mixnet
input: [3, 16, 16]
blocks:
  unit:
    params: {growth: ~}
    body:
      seq:
        bn: batchnorm
        relu: relu
        conv: {conv: {out: "${growth}", kernel: 3, padding: 1}}
body:
  stem: {conv: {out: 8, kernel: 3, padding: 1}}
  mix:
    parallel:
      a: {conv: {out: 4, kernel: 1}}
      b:
        - {conv: {out: 2, kernel: 1}}
        - {conv: {out: 6, kernel: 3, padding: 1}}
      c: {maxpool: {kernel: 3, stride: 1, padding: 1}}
  grow: {dense: {block: unit, depth: 3, growth: 4, names: "unit{i}", start: 1}}
  res:
    residual:
      body:
        c1: {conv: {out: 30, kernel: 3, padding: 1}}
      shortcut: identity
  st: {stage: {block: basic, depth: 3, width: 30}}
  head:
    inline: true
    seq:
      pool: {adaptive_avgpool: 1}
      flat: flatten
  fc: {linear: 10}
"""


# ---- a small DOT reader ------------------------------------------------------------------

_ID = r'"(?:[^"\\]|\\.)*"|[^\s\[\]{};"]+'
_EDGE = re.compile(rf"^\s*({_ID}) -> ({_ID})(?: \[(.*)\])?$")
_NODE = re.compile(rf"^\s*({_ID}) \[(.*)\]$")
_SUBGRAPH = re.compile(rf"^\s*subgraph ({_ID}) \{{$")
_LABEL = re.compile(r'(?:^|\s)label=("(?:[^"\\]|\\.)*"|<.*?>(?=\s\w+=|$)|[^\s\]]+)')


def _unquote(text: str) -> str:
    return text[1:-1].replace('\\"', '"') if text.startswith('"') else text


@dataclass
class Dot:
    nodes: dict[str, str] = field(default_factory=dict)  # id → attribute text
    edges: list[tuple[str, str, str | None, str]] = field(
        default_factory=list
    )  # tail, head, label, attrs
    clusters: list[str] = field(default_factory=list)

    def into(self, head: str) -> list[tuple[str, str, str | None, str]]:
        return [e for e in self.edges if e[1] == head]

    def label(self, node_id: str) -> str:
        found = _LABEL.search(self.nodes[node_id])
        return _unquote(found.group(1)) if found else ""


def parse(source: str) -> Dot:
    dot = Dot()
    for line in source.splitlines():
        if (m := _EDGE.match(line)) is not None:
            attrs = m.group(3) or ""
            label = _LABEL.search(attrs)
            dot.edges.append(
                (
                    _unquote(m.group(1)),
                    _unquote(m.group(2)),
                    _unquote(label.group(1)) if label else None,
                    attrs,
                )
            )
        elif (m := _SUBGRAPH.match(line)) is not None:
            dot.clusters.append(_unquote(m.group(1)))
        elif (m := _NODE.match(line)) is not None and m.group(1) not in ("graph", "node", "edge"):
            dot.nodes[_unquote(m.group(1))] = m.group(2)
    return dot


# ---- what each drawn tensor's shape must be, straight from the IR ---------------------------


def joins(node) -> str:
    """Where a node's joins (concat, add, ...) are drawn: its path, an inline parallel's under
    its parent's path and its own name."""
    return f"{node.path}/{node.name}" if node.inline else node.path


def expected_shapes(spec) -> dict[str, str]:
    """Shape each graph node's output must be labelled with, by node id."""
    out = {"/input": fmt_shape(spec.input_shape)}
    for node in spec.tree.walk():
        if node.inline and node.kind != "parallel":  # an inline sequence draws no node
            continue
        where = joins(node)
        if not node.inline:
            out[node.path] = fmt_shape(node.out_shape)
        if node.kind == "residual":
            body = node.role_children("body")
            out[node.path + "/add"] = fmt_shape(body[-1].out_shape)
        elif node.kind == "parallel":
            post = node.role_children("post")
            out[where + "/concat"] = fmt_shape(post[0].in_shape if post else node.out_shape)
            if node.children[0].role == "chunk":  # split: each branch is fed its chunk
                out[where + "/chunk"] = fmt_shape(node.children[0].in_shape)
        elif node.kind == "gate":
            out[node.path + "/mul"] = fmt_shape(node.out_shape)
        elif node.kind == "dense":
            after = [c.in_shape for c in node.children[1:]] + [node.out_shape]
            out.update({f"{node.path}/concat{i}": fmt_shape(s) for i, s in enumerate(after)})
        if node.children:  # a run of folded identical children is labelled with its output
            for child in node.children:
                if not child.inline:  # (an inline child has its parent's path and never folds)
                    out[child.path + "/fold"] = fmt_shape(child.out_shape)
    return out


def check_edges(spec, dot: Dot) -> None:
    shapes = expected_shapes(spec)
    assert dot.edges
    for tail, head, label, _ in dot.edges:
        assert tail in dot.nodes and head in dot.nodes, (tail, head)
        assert label == shapes[tail], (
            f"{tail} -> {head}: labelled {label}, static shape {shapes[tail]}"
        )


@pytest.fixture(scope="module")
def resnet50():
    return archc.load(SPECS / "resnet50.yaml")


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "mixnet.yaml"
    path.write_text(MIXED)
    return archc.load(path)


# ---- structure ---------------------------------------------------------------------------


def test_resnet50_stages_and_blocks_are_clusters(resnet50):
    dot = parse(digraph(resnet50).source)
    for stage, blocks in (("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3)):
        assert f"cluster_{stage}" in dot.clusters
        assert all(f"cluster_{stage}.{i}" in dot.clusters for i in range(blocks))
    assert "cluster_layer2.0.downsample" in dot.clusters


def test_resnet50_edges_carry_the_static_shapes(resnet50):
    dot = parse(digraph(resnet50).source)
    check_edges(resnet50, dot)
    assert ("/input", "conv1", "3×224×224") == dot.edges[0][:3]
    assert ("layer1.0.conv3", "layer1.0.bn3", "256×56×56") in [e[:3] for e in dot.edges]
    assert dot.into("/output")[0][2] == "1000"


def test_residual_additions_and_skip_edges(resnet50):
    """Every block has a + node fed by its body and its shortcut; identity skips are edges."""
    dot = parse(digraph(resnet50).source)
    adds = [n for n in dot.nodes if n.endswith("/add")]
    assert len(adds) == 16
    for add in adds:
        assert len(dot.into(add)) == 2
        assert dot.label(add) == "+"
    # identity shortcut: the previous block's output goes straight to the addition
    assert ("layer1.0.relu", "layer1.1/add") in [e[:2] for e in dot.into("layer1.1/add")]
    # projection: the block's input goes through the downsample layers to the addition
    into = {e[0] for e in dot.into("layer2.0/add")}
    assert into == {"layer2.0.bn3", "layer2.0.downsample.1"}
    assert ("layer1.2.relu", "layer2.0.downsample.0") in [e[:2] for e in dot.edges]
    # after the addition comes the block's post activation
    assert [e[1] for e in dot.edges if e[0] == "layer1.1/add"] == ["layer1.1.relu"]


def test_depth_one_is_one_box_per_top_level_child(resnet50):
    full = parse(digraph(resnet50).source)
    top = parse(digraph(resnet50, depth=1).source)
    assert len(top.nodes) < len(full.nodes) / 10
    children = [c.path for c in resnet50.tree.children]
    assert set(top.nodes) == {"/input", "/output", *children}
    assert top.clusters == []
    assert "stage: bottleneck ×6" in top.label("layer3")
    assert [e[:2] for e in top.edges] == list(zip(["/input", *children], [*children, "/output"]))
    check_edges(resnet50, top)


def test_depth_two_folds_repeated_blocks():
    spec = archc.load(SPECS / "resnet152.yaml")
    dot = parse(digraph(spec, depth=2).source)
    assert dot.clusters == ["cluster_layer1", "cluster_layer2", "cluster_layer3", "cluster_layer4"]
    # layer3 is 36 bottlenecks: the first changes the shape, the other 35 are one box
    assert {n for n in dot.nodes if n.startswith("layer3")} == {"layer3.0", "layer3.1/fold"}
    label = dot.label("layer3.1/fold")
    assert "layer3.1–35" in label and "bottleneck ×35" in label
    assert len(dot.nodes) == 17
    check_edges(spec, dot)


def test_parallel_branches_meet_in_a_concat(mixed):
    dot = parse(digraph(mixed).source)
    check_edges(mixed, dot)
    assert "cluster_mix" in dot.clusters and "cluster_mix.b" in dot.clusters
    assert dot.label("mix/concat") == "concat"
    assert sorted(e[2] for e in dot.into("mix/concat")) == ["4×16×16", "6×16×16", "8×16×16"]
    assert {e[0] for e in dot.edges if e[1] in ("mix.a", "mix.b.0", "mix.c")} == {"stem"}
    # the concatenation feeds the dense block: its first layer, and the skip past it
    assert sorted(e[1:3] for e in dot.edges if e[0] == "mix/concat") == [
        ("grow.unit1.bn", "18×16×16"),
        ("grow/concat0", "18×16×16"),
    ]


def test_dense_layers_concatenate_onto_their_input(mixed):
    dot = parse(digraph(mixed).source)
    cats = ["grow/concat0", "grow/concat1", "grow/concat2"]
    assert [n for n in dot.nodes if n.startswith("grow/")] == cats
    inputs = ["mix/concat", *cats[:-1]]
    for cat, before, unit, width in zip(cats, inputs, ("unit1", "unit2", "unit3"), (18, 22, 26)):
        edges = {e[0]: e for e in dot.into(cat)}
        assert set(edges) == {before, f"grow.{unit}.conv"}
        assert (
            edges[before][2] == f"{width}×16×16" and "color=" in edges[before][3]
        )  # the skip edge
        assert edges[f"grow.{unit}.conv"][2] == "4×16×16"
    assert sorted(e[1:3] for e in dot.edges if e[0] == "grow/concat2") == [
        ("res.c1", "30×16×16"),
        ("res/add", "30×16×16"),
    ]


def test_mixed_spec_at_every_depth(mixed):
    """Inline groups add no cluster; collapsed subtrees are one box; identical blocks fold."""
    sizes = []
    for depth in (1, 2, 3, None):
        dot = parse(digraph(mixed, depth=depth).source)
        check_edges(mixed, dot)
        assert not any(c == "cluster_" or c == "cluster_head" for c in dot.clusters)
        assert {"pool", "flat"} <= set(dot.nodes)
        sizes.append(len(dot.nodes))
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    top = parse(digraph(mixed, depth=1).source)
    assert {"mix", "grow", "res", "st"} <= set(top.nodes)
    assert "dense: unit ×3" in top.label("grow") and "growth 4" in top.label("grow")
    two = parse(digraph(mixed, depth=2).source)
    assert "st.0/fold" in two.nodes and "basic ×3" in two.label("st.0/fold")


@pytest.mark.parametrize("name", MODELS)
def test_every_shipped_model_draws_with_static_shapes(name):
    spec = archc.load(name)
    full = parse(digraph(spec).source)
    check_edges(spec, full)
    top = parse(digraph(spec, depth=1).source)
    check_edges(spec, top)
    assert len(top.nodes) <= len(full.nodes)
    for node in spec.tree.walk():  # every join is drawn at full depth (and only those)
        if node.kind in ("residual", "parallel"):
            joined = node.settings.get("use_res_connect", True)  # a conditional skip may not be
            join = f"{joins(node)}/{'add' if node.kind == 'residual' else 'concat'}"
            assert (join in full.nodes) == joined
        if node.kind == "dense":
            assert f"{node.path}/concat{len(node.children) - 1}" in full.nodes


def test_options(resnet50):
    plain = digraph(resnet50, shapes=False, direction="LR")
    dot = parse(plain.source)
    assert all(label is None for _, _, label, _ in dot.edges)
    assert "rankdir=LR" in plain.source
    assert "rankdir=TB" in digraph(resnet50).source
    for bad in ({"depth": 0}, {"depth": -1}, {"depth": 1.5}, {"direction": "BT"}):
        with pytest.raises(UsageError):
            digraph(resnet50, **bad)


def test_title_and_marker(resnet50):
    source = digraph(resnet50).source
    assert MARKER in source[:4096]
    assert "<b>resnet50</b>" in source and "input 3×224×224" in source
    assert "25.56M params" in source and "4.09G MACs" in source


def test_api_returns_a_digraph(resnet50):
    graph = archc.draw(SPECS / "resnet50.yaml", depth=1)
    assert isinstance(graph, graphviz.Digraph)
    assert graph.source == digraph(resnet50, depth=1).source


def test_dot_is_deterministic(resnet50, tmp_path):
    assert digraph(resnet50).source == digraph(archc.load(SPECS / "resnet50.yaml")).source
    for name in ("a.dot", "b.dot"):
        assert (
            run_archc("draw", str(SPECS / "resnet50.yaml"), "-o", str(tmp_path / name)).returncode
            == 0
        )
    assert (tmp_path / "a.dot").read_bytes() == (tmp_path / "b.dot").read_bytes()


# ---- files -------------------------------------------------------------------------------


@needs_dot
def test_rendered_formats_are_valid_marked_and_deterministic(tmp_path):
    spec = str(SPECS / "resnet50.yaml")
    for fmt in ("svg", "png", "pdf"):
        a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
        for path in (a, b):
            assert main(["draw", spec, "--depth", "2", "-o", str(path)]) == 0
        assert a.read_bytes() == b.read_bytes(), fmt
        assert written_by_archc(a), fmt
    svg = ET.parse(tmp_path / "a.svg").getroot()
    assert svg.tag.endswith("svg")
    texts = "".join(svg.itertext())
    assert "layer3.1–5" in texts and "bottleneck ×5" in texts and "1024×14×14" in texts
    png = (tmp_path / "a.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and png[37:41] == b"tEXt"
    assert (tmp_path / "a.pdf").read_bytes().startswith(b"%PDF-")


@needs_dot
def test_marked_pdf_keeps_valid_offsets(tmp_path):
    path = tmp_path / "m.pdf"
    assert main(["draw", str(SPECS / "resnet18.yaml"), "--depth", "1", "-o", str(path)]) == 0
    data = path.read_bytes()
    xref = int(re.search(rb"startxref\s+(\d+)", data).group(1))
    assert data[xref : xref + 4] == b"xref"
    offsets = [int(m.group(1)) for m in re.finditer(rb"(\d{10}) \d{5} n", data[xref:])]
    assert offsets and all(re.match(rb"\d+ \d+ obj", data[o : o + 20]) for o in offsets)
    assert b"/CreationDate (D:" not in data


def test_pdf_marking_leaves_unknown_layouts_alone():
    odd = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\nstartxref\n9\n%%EOF\n"
    assert _mark_pdf(odd, b"Generated by archc") == odd


def test_missing_dot_fails_cleanly_and_dot_output_still_works(tmp_path):
    """PATH without Graphviz: .svg is refused with an install hint (exit 1), .dot is written."""
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty)}
    spec = str(SPECS / "resnet50.yaml")

    def draw(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "archc", "draw", spec, *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=120,
        )

    done = draw("-o", "x.svg")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "Graphviz" in done.stderr and "install" in done.stderr and ".dot" in done.stderr
    assert not (tmp_path / "x.svg").exists()
    assert draw("-o", "x.dot").returncode == 0 and (tmp_path / "x.dot").exists()


def test_bad_format_is_a_usage_error(tmp_path):
    done = run_archc("draw", str(SPECS / "resnet50.yaml"), "-o", str(tmp_path / "x.jpg"))
    assert (
        done.returncode == 2
        and ".dot, .svg, .png or .pdf" in done.stderr
        and "Traceback" not in done.stderr
    )


def test_no_clobber_without_force(tmp_path, capsys):
    spec = str(SPECS / "resnet50.yaml")
    mine = tmp_path / "notes.dot"
    mine.write_text("a person's file\n")
    assert main(["draw", spec, "-o", str(mine)]) == 1
    assert "--force" in capsys.readouterr().err
    assert mine.read_text() == "a person's file\n"
    assert main(["draw", spec, "-o", str(mine), "--force"]) == 0
    assert written_by_archc(mine)
    assert main(["draw", spec, "-o", str(mine), "--depth", "1"]) == 0  # archc's own file


@needs_dot
def test_binary_outputs_are_recognised_as_archcs_own(tmp_path):
    spec = str(SPECS / "resnet18.yaml")
    for fmt in ("png", "pdf"):
        path = tmp_path / f"d.{fmt}"
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n a person's picture"
            if fmt == "png"
            else b"%PDF-1.4\n a person's paper"
        )
        assert main(["draw", spec, "--depth", "1", "-o", str(path)]) == 1
        assert path.read_bytes().endswith(
            b"a person's picture" if fmt == "png" else b"a person's paper"
        )
        assert main(["draw", spec, "--depth", "1", "-o", str(path), "--force"]) == 0
        assert main(["draw", spec, "--depth", "2", "-o", str(path)]) == 0


@needs_dot
def test_default_output_is_spec_name_svg_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # in this process: a subprocess here would import another archc
    assert main(["draw", str(SPECS / "resnet18.yaml"), "--depth", "1"]) == 0
    assert (tmp_path / "resnet18.svg").exists()


def test_draw_does_not_import_torch(tmp_path):
    probe = (
        "import sys\nfrom archc.cli import main\n"
        f"assert main(['draw', {str(SPECS / 'resnet50.yaml')!r}, '-o', {str(tmp_path / 'x.dot')!r}]) == 0\n"
        "import archc\narchc.draw('specs/resnet50.yaml', depth=1)\n"
        "print('TORCH', any(m == 'torch' or m.startswith('torch.') for m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "TORCH False" in done.stdout


def test_collapsed_labels_name_the_block_and_its_settings(resnet50):
    dot = parse(digraph(resnet50, depth=2).source)
    label = dot.label("layer2.0")
    assert "layer2.0" in label and "bottleneck" in label and "width 128, stride 2" in label
    assert "expansion" not in label  # defaults are left out
    assert "379.39K params" in label
    three = parse(digraph(resnet50, depth=3).source)
    label = three.label("layer2.0.downsample")  # a short plain sequence lists its layers
    assert "<b>downsample</b>" in label and ">conv 1×1 /2, 512<" in label and ">batchnorm<" in label


def test_edges_are_declared_after_nodes(resnet50):
    """Edges at top level, after every node: an edge never drags a node into a cluster."""
    source = digraph(resnet50).source
    assert source.index(" -> ") > source.rindex("subgraph")


def _node_paths(tree: Node) -> set[str]:
    return {n.path for n in tree.walk() if n.is_primitive}


def test_full_depth_draws_every_layer(resnet50, mixed):
    for spec in (resnet50, mixed):
        dot = parse(digraph(spec).source)
        assert _node_paths(spec.tree) <= set(dot.nodes)

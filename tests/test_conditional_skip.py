"""A residual whose skip connection exists only where the shapes allow (`shortcut:
if_shapes_match`, torchvision's `use_res_connect`): every backend agrees with the live build."""

from __future__ import annotations

import re

import pytest
import torch
from test_codegen import assert_equals_live

import archc
from archc.backends import fuse, graphviz_backend
from archc.backends.codegen import generate
from archc.backends.torch_backend import check_shapes
from archc.combinators import COMBINATORS
from archc.resources import estimate
from archc.tables import rows

SPEC = """\
archc: 1
name: skips
input: [8, 16, 16]
blocks:
  inverted:
    params: {out: ~, stride: 1}
    body:
      residual:
        shortcut: if_shapes_match
        post: none
        body:
          conv:
            - {conv: {out: "${in_channels * 2}", kernel: 1, bias: false}}
            - batchnorm
            - relu6
            - {conv: {out: "${in_channels * 2}", kernel: 3, stride: "${stride}", padding: 1, groups: "${in_channels * 2}", bias: false}}
            - batchnorm
            - relu6
            - {conv: {out: "${out}", kernel: 1, bias: false}}
            - batchnorm
body:
  stage: {stage: {block: inverted, depth: 3, out: 12, stride: 2}}
  same: {inverted: {out: 12}}
"""


@pytest.fixture
def spec():
    return archc.loads(SPEC)


def test_the_skip_is_added_only_where_the_shape_is_kept(spec):
    flags = [n.settings["use_res_connect"] for n in spec.tree.walk() if n.kind == "residual"]
    assert flags == [False, True, True, True]  # 8→12 at stride 2, then 12→12 at stride 1
    model = archc.build(spec, seed=0).eval()
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        first = model.stage[0]
        assert torch.equal(first(x), first.conv(x))  # no sum: the shapes differ
        y = first(x)
        second = model.stage[1]
        torch.testing.assert_close(second(y), second.conv(y) + y, rtol=0, atol=0)
    assert check_shapes(model, spec) == []


def test_generated_code_has_a_use_res_connect_flag_and_equals_the_live_build(spec, tmp_path):
    path = tmp_path / "skips.yaml"
    path.write_text(SPEC)
    text = generate(archc.load(path))
    assert "self.use_res_connect = use_res_connect" in text
    assert "if self.use_res_connect:\n            out = out + x" in text
    assert len(re.findall(r"^class Inverted", text, re.M)) == 1  # one class for every use
    assert "Inverted(8, 16, stride=2)" in text and "use_res_connect=True" in text
    assert_equals_live(path, text)


def test_a_class_whose_uses_all_add_the_skip_has_no_flag(tmp_path):
    text = SPEC.replace("depth: 3, out: 12, stride: 2", "depth: 3, out: 8")
    path = tmp_path / "always.yaml"
    path.write_text(text.replace("  same: {inverted: {out: 12}}\n", ""))
    source = generate(archc.load(path))
    assert "use_res_connect" not in source and "out = out + x" in source
    assert_equals_live(path, source)


def test_draw_summary_fuse_and_memory_know_the_missing_sum(spec):
    dot = graphviz_backend.digraph(spec).source
    assert '"stage.0/add"' not in dot and '"stage.1/add"' in dot and '"same/add"' in dot
    assert [r["type"] for r in rows(spec, 1)] == ["stage: inverted ×3", "inverted"]
    residuals = [n for n in spec.tree.walk() if n.kind == "residual"]
    sums = [COMBINATORS["residual"].activations(n) for n in residuals]
    assert sums == [0, 12 * 8 * 8, 12 * 8 * 8, 12 * 8 * 8]  # the first block adds nothing
    assert estimate(spec).activations > sum(sums)
    model = archc.build(spec, seed=0).eval()
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fuse.fuse(model, spec)(x), model(x), rtol=1e-4, atol=1e-4)


def test_an_unknown_shortcut_lists_if_shapes_match(tmp_path):
    with pytest.raises(archc.SpecError, match="identity, auto, if_shapes_match"):
        archc.loads(SPEC.replace("if_shapes_match", "if_same"))

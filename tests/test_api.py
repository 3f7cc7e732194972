"""The Python API: load, summary, build, and what the build applies from the spec."""

from __future__ import annotations

import math

import pytest
import torch

import archc
from conftest import SPECS, run_archc


def test_load_exposes_shapes_and_totals():
    spec = archc.load(SPECS / "resnet18.yaml")
    assert spec.input_shape == (3, 224, 224)
    assert spec.output_shape == (1000,)
    assert spec.name == "resnet18"
    assert spec.param_count == sum(row["params"] for row in archc.summary(spec, depth=1)["layers"])


def test_summary_rows_follow_the_tree():
    data = archc.summary(SPECS / "resnet50.yaml", depth=2)
    names = [row["name"] for row in data["layers"]]
    assert names[:5] == ["conv1", "bn1", "relu", "maxpool", "layer1"]
    assert "layer1.0" in names and "layer1.0.conv1" not in names
    assert data["layers"][names.index("layer2")]["output_shape"] == [512, 28, 28]
    assert data["macs"] == sum(r["macs"] for r in data["layers"] if r["depth"] == 1)


def test_build_applies_the_init_rules():
    model = archc.build(SPECS / "resnet50.yaml", seed=0)
    conv = model.layer1[0].conv2
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    bn = model.layer3[2].bn2
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_same_seed_same_weights_different_seed_different_weights():
    a = archc.build(SPECS / "resnet18.yaml", seed=1).state_dict()
    b = archc.build(SPECS / "resnet18.yaml", seed=1).state_dict()
    c = archc.build(SPECS / "resnet18.yaml", seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_model_level_params_and_expressions(write_spec):
    spec = archc.load(write_spec(
        "archc: 1\nname: t\ninput: [3, 16, 16]\nparams: {num_classes: 7, width: 4}\nbody:\n"
        "  c: {conv: {out: '${width * 2}', kernel: 3}}\n  f: flatten\n"
        "  fc: {linear: '${num_classes}'}\n"
    ))  # fmt: skip
    assert spec.output_shape == (7,)
    assert spec.tree.children[0].out_shape == (8, 14, 14)


def test_build_cli_check_and_save(tmp_path):
    target = tmp_path / "r18.pt"
    result = run_archc("build", "specs/resnet18.yaml", "--check", "--save", str(target))
    assert result.returncode == 0, result.stderr
    assert "runtime shapes equal static shapes" in result.stdout
    assert "total params: 11,689,512" in result.stdout
    state = torch.load(target)
    assert state["fc.weight"].shape == (1000, 512)


def test_inline_children_join_the_parent_namespace(write_spec):
    spec = archc.load(write_spec(
        "archc: 1\nname: t\ninput: [3, 8, 8]\nbody:\n  features:\n    - {conv: {out: 4, kernel: 3, padding: 1}}\n"
        "    - {seq: [relu, {conv: {out: 4, kernel: 1}}], inline: true}\n    - relu\n"
    ))  # fmt: skip
    model = archc.build(spec)
    assert [name for name, _ in model.features.named_children()] == ["0", "1", "2", "3"]
    assert isinstance(model.features[2], torch.nn.Conv2d)


def test_user_defined_block_type_in_a_spec(write_spec):
    spec = archc.load(write_spec("""\
archc: 1
name: tiny
input: [3, 32, 32]
blocks:
  res_block_v1:
    doc: conv-bn-relu-conv-bn around an identity or projection shortcut
    params: {width: ~, stride: 1}
    body:
      residual:
        body:
          conv_a: {conv: {out: '${width}', kernel: 3, stride: '${stride}', padding: 1}}
          bn_a: batchnorm
          act: relu
          conv_b: {conv: {out: '${width}', kernel: 3, padding: 1}}
          bn_b: batchnorm
        shortcut: {projection: {name: proj, batchnorm: false, bias: true}}
body:
  stem: {conv: {out: 8, kernel: 3, padding: 1}}
  stage1: {stage: {block: res_block_v1, depth: 2, width: 16, stride: 2}}
"""))
    first, second = spec.tree.find("stage1.0"), spec.tree.find("stage1.1")
    assert first.template.name == "res_block_v1" and first.out_shape == (16, 16, 16)
    assert [c.name for c in first.children][-1] == "proj"
    assert "proj" not in [c.name for c in second.children]  # same shape: identity shortcut
    model = archc.build(spec)
    assert model.stage1[0].proj.stride == (2, 2) and model.stage1[0].proj.bias is not None
    assert tuple(model(torch.randn(2, 3, 32, 32)).shape) == (2, 16, 16, 16)

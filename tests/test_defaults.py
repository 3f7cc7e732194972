"""`defaults:` per layer kind: settings every layer of a kind gets unless it sets them itself."""

from __future__ import annotations

import pytest

import archc
from archc.errors import SpecError
from conftest import assert_spec_error

HEAD = "archc: 1\nname: d\ninput: [3, 16, 16]\n"
BODY = """body:
  stem: {conv: {out: 64, kernel: 3, padding: 1, bias: false}}
  bn: batchnorm
  own: {batchnorm: {eps: 0.1}}
  layer1: {stage: {block: bottleneck, depth: 2, width: 16}}
"""
DEFAULTS = "defaults:\n  batchnorm: {eps: 0.001, momentum: 0.01}\n"


def batchnorms(spec) -> dict[str, tuple[float, float]]:
    return {n.path: (n.params.eps, n.params.momentum) for n in spec.tree.walk() if n.kind == "batchnorm"}


def test_defaults_reach_every_layer_of_the_kind_inside_library_blocks_too():
    found = batchnorms(archc.loads(HEAD + DEFAULTS + BODY, "d.yaml"))
    assert found.pop("own") == (0.1, 0.01)  # its own eps wins, the default momentum still applies
    assert found and all(v == (0.001, 0.01) for v in found.values()), found
    assert {"layer1.0.bn1", "layer1.1.bn3"} <= set(found)  # inside the built-in bottleneck


def test_a_spec_with_defaults_equals_the_same_spec_written_out():
    written = BODY.replace("bn: batchnorm", "bn: {batchnorm: {eps: 0.001, momentum: 0.01}}")
    written = written.replace("eps: 0.1}", "eps: 0.1, momentum: 0.01}")
    written = written.replace("  layer1: {stage: {block: bottleneck, depth: 2, width: 16}}\n", "")
    with_defaults = BODY.replace("  layer1: {stage: {block: bottleneck, depth: 2, width: 16}}\n", "")
    a = archc.loads(HEAD + DEFAULTS + with_defaults, "d.yaml")
    b = archc.loads(HEAD + written, "d.yaml")
    assert batchnorms(a) == batchnorms(b)
    assert archc.codegen(a) == archc.codegen(b)
    torch = pytest.importorskip("torch")
    model = archc.build(a, seed=0)
    assert [m.eps for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)] == [0.001, 0.1]
    reference = archc.build(b, seed=0)
    reference.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 3, 16, 16)
    model.train(), reference.train()
    assert torch.equal(model(x), reference(x))  # train mode: momentum and eps both matter
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), reference.state_dict().values()))


@pytest.mark.parametrize(
    ("defaults", "col", "words"),
    [
        ("  batchnorm: {eps: 2}\n", 20, "batchnorm eps: Input should be less than 1 (got 2)"),
        ("  batchnrom: {eps: 0.1}\n", 3, "did you mean 'batchnorm'?"),
        ("  batchnorm: {epss: 0.1}\n", 15, "batchnorm has no setting 'epss'"),
        ("  conv: {out: 3}\n", 10, "conv out is what each layer says for itself"),
        ("  relu: {inplace: maybe}\n", 19, "valid boolean"),
        ("  leaky_relu: {negative_slope: 1.0e+300}\n", 32, "float32"),
    ],
)
def test_bad_defaults_are_refused_where_written(defaults, col, words, write_spec, capsys):
    path = write_spec(HEAD + "defaults:\n" + defaults + BODY)
    assert_spec_error(path, 5, words, capsys)
    with pytest.raises(SpecError) as info:
        archc.load(path)
    assert (info.value.location.line, info.value.location.col) == (5, col)


def test_settings_of_union_type_take_defaults_too():
    """A conv's stride, padding and dilation are an int or a pair: checked, not a crash."""
    spec = archc.loads(HEAD + "defaults:\n  conv: {stride: [1, 1], padding: [0, 0]}\n" + BODY, "d.yaml")
    assert spec.tree.find("stem").params.padding == 1  # its own padding wins
    assert spec.tree.find("layer1.0.conv2").params.stride == 1  # written by bottleneck itself
    assert (spec.tree.find("layer1.0.conv1").params.stride, spec.tree.find("stem").params.stride) == ((1, 1),) * 2
    assert spec.output_shape == archc.loads(HEAD + BODY, "d.yaml").output_shape


@pytest.mark.parametrize("value", ["[1, 2, 3]", "0", "x"])
def test_a_bad_union_typed_default_is_a_located_error(value, write_spec, capsys):
    path = write_spec(HEAD + f"defaults:\n  conv: {{stride: {value}}}\n" + BODY)
    assert_spec_error(path, 5, "defaults: conv stride", capsys)


def test_a_default_that_breaks_a_layer_is_blamed_at_the_default_with_the_layer_as_a_note(write_spec, capsys):
    body = BODY.replace("bias: false}", "bias: false, groups: 1}")  # the stem keeps groups 1
    path = write_spec(HEAD + "defaults:\n  conv: {groups: 32}\n" + body)
    with pytest.raises(SpecError) as info:
        archc.load(path)
    error = info.value
    assert (error.location.line, error.location.col, error.field) == (5, 18, "defaults.conv.groups")
    assert "the defaults for conv (groups: 32) make a layer invalid" in error.message
    assert "groups=32 must divide both input channels (64) and out (16)" in error.message
    (note,) = error.notes  # the layer, inside the built-in bottleneck: where the stage uses it
    assert "layer 'conv1' of block 'bottleneck' takes them here (at body.layer1.stage)" in note.message
    assert (note.location.line, note.location.col) == (10, 19)
    assert_spec_error(path, 5, "make a layer invalid", capsys)


def test_a_layer_that_is_wrong_by_itself_is_blamed_at_the_layer(write_spec):
    body = BODY.replace("{eps: 0.1}", "{eps: 2}")
    with pytest.raises(SpecError) as info:
        archc.load(write_spec(HEAD + DEFAULTS + body))
    assert info.value.field == "body.own.batchnorm.eps" and not info.value.notes


PREACT = """archc: 1
name: pre
input: [8, 8, 8]
defaults:
  relu: {inplace: true}
blocks:
  preact:
    params: {c: null}
    body:
      residual:
        body:
          r: relu
          conv: {conv: {out: "${c}", kernel: 3, padding: 1}}
        post: none
body:
  ok: relu
  b: {preact: {c: 8}}
"""


def test_an_in_place_default_that_would_overwrite_a_shared_input_is_blamed_at_the_default(write_spec, capsys):
    path = write_spec(PREACT)
    with pytest.raises(SpecError) as info:
        archc.load(path)
    error = info.value
    assert (error.location.line, error.location.col, error.field) == (5, 19, "defaults.relu.inplace")
    assert "set inplace: false on the layer or in the defaults" in error.message
    assert [(n.location.line, n.location.col) for n in error.notes] == [(12, 14), (17, 15)]
    assert "layer 'r' takes inplace: true from the defaults" in error.notes[0].message
    assert_spec_error(path, 5, "an in-place relu here would overwrite the input", capsys)
    fixed = archc.loads(PREACT.replace("r: relu", "r: {relu: {inplace: false}}"), "pre.yaml")
    assert fixed.tree.find("ok").params.inplace and not fixed.tree.find("b.r").params.inplace

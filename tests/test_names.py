"""Module names as torch allows them (issue 14): any name `add_module` accepts, such as
torchvision RegNet's `block1-0`, a Python keyword or a digit string, in layer keys and stage name
patterns; the live build, static shapes and generated code keep them exactly."""

from __future__ import annotations

import re
import subprocess

import pytest
import torch
from test_codegen import RUFF, assert_equals_live, factory, module, source

import archc
from archc.backends.torch_backend import check_shapes
from conftest import ROOT, assert_spec_error

HEAD = "archc: 1\nname: t\ninput: [3, 16, 16]\n"

NAMES = (
    HEAD
    + """\
body:
  stem-conv: {conv: {out: 8, kernel: 3, padding: 1}}
  class: relu
  trunk_output:
    seq:
      block1: {stage: {block: basic, depth: 2, width: 8, names: "block1-{i}"}}
      block2: {stage: {block: basic, depth: 3, width: 16, stride: 2, names: "block2-{i}", start: 1}}
  mix:
    parallel:
      a-1: {conv: {out: 4, kernel: 1}}
      "2": {conv: {out: 4, kernel: 1}}
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  fc-out: {linear: 10}
"""
)


@pytest.fixture
def names_spec(write_spec):
    return write_spec(NAMES, "names.yaml")


def test_torch_names_are_the_state_dict_keys(names_spec):
    spec = archc.load(names_spec)
    model = archc.build(spec, seed=0)
    keys = list(model.state_dict())
    assert keys[:2] == ["stem-conv.weight", "stem-conv.bias"]
    assert "trunk_output.block1.block1-0.conv1.weight" in keys
    assert "trunk_output.block1.block1-1.conv1.weight" in keys
    # start: 1 numbers the stage's blocks from 1, the first one carries the downsample
    assert "trunk_output.block2.block2-1.downsample.0.weight" in keys
    assert "trunk_output.block2.block2-3.bn2.weight" in keys
    assert not any(k.startswith("trunk_output.block2.block2-0.") for k in keys)
    assert {"mix.a-1.weight", "mix.2.weight", "fc-out.weight"} <= set(keys)
    assert isinstance(model.get_submodule("class"), torch.nn.ReLU)
    assert check_shapes(model, spec) == []
    paths = {n.path for n in spec.tree.walk()}
    assert {"trunk_output.block1.block1-0", "mix.a-1", "fc-out"} <= paths


def test_generated_code_keeps_the_names_and_equals_the_live_build(names_spec):
    assert_equals_live(names_spec)
    text = source(names_spec)
    assert re.search(r'self\.add_module\(\s*"stem-conv",', text), text
    assert re.search(r'self\.add_module\(\s*"class",', text), text
    assert '("block1-0", Basic(8, 8))' in text
    assert 'getattr(self, "a-1")(x)' in text
    assert "self.class" not in text  # a keyword is never written as an attribute
    scripted = torch.jit.script(factory(module(names_spec, text), text)().eval())
    assert "block1-0" in dict(scripted.trunk_output.block1.named_children())


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
def test_generated_code_with_torch_names_is_ruff_clean(names_spec, tmp_path):
    file = tmp_path / "names.py"
    file.write_text(source(names_spec))
    config = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    check = subprocess.run([RUFF, "check", *config, str(file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    fmt = subprocess.run(
        [RUFF, "format", "--check", "--diff", *config, str(file)], capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout


BAD = [
    ("dot", HEAD + "body:\n  a.b: relu\n", 5, "cannot contain '.'"),
    ("empty", HEAD + 'body:\n  "": relu\n', 5, "cannot be empty"),
    ("space", HEAD + 'body:\n  "a b": relu\n', 5, "no spaces"),
    ("nn-attribute", HEAD + "body:\n  forward: relu\n", 5, "reserved by torch.nn.Module"),
    ("private", HEAD + "body:\n  _modules: relu\n", 5, "reserved by torch.nn.Module"),
    (
        "pattern-dot",
        HEAD + "body:\n  s: {stage: {block: basic, depth: 2, width: 3, names: 'b.{i}'}}\n",
        5,
        "names is a pattern",
    ),
    (
        "pattern-two",
        HEAD + "body:\n  s: {stage: {block: basic, depth: 2, width: 3, names: '{i}-{i}'}}\n",
        5,
        "names is a pattern",
    ),
    (
        "shortcut",
        HEAD
        + "body:\n  r:\n    residual:\n      body: {c: {conv: {out: 3, kernel: 1}}}\n      shortcut: {custom: {a.b: identity}}\n",
        8,
        "cannot contain '.'",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_names_torch_refuses_are_refused_at_the_name(case, write_spec, capsys):
    _, text, line, words = case
    assert_spec_error(write_spec(text), line, words, capsys)


def test_block_and_param_names_stay_identifiers(write_spec, capsys):
    # they are read in ${...} expressions and become generated Python names
    text = HEAD + "params: {num-classes: 3}\nbody:\n  fc: {conv: {out: 3, kernel: 1}}\n"
    assert_spec_error(write_spec(text), 4, "not a valid name", capsys)

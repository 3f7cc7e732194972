"""ShuffleNet's `channel_shuffle` primitive in every backend (issue 13)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys

import pytest
import torch

import archc
from archc.backends import fuse, graphviz_backend
from archc.backends.codegen import generate
from archc.tables import rows
from conftest import assert_spec_error

SHUFFLE = """\
archc: 1
name: shuffle
input: [8, 6, 6]
body:
  conv1: {conv: {out: 12, kernel: 1, bias: false}}
  bn1: batchnorm
  shuffle: {channel_shuffle: 3}
  relu: relu
  conv2: {conv: {out: 4, kernel: 3, padding: 1}}
"""


def test_channel_shuffle_is_torchvision_channel_shuffle():
    shufflenetv2 = pytest.importorskip("torchvision.models.shufflenetv2")
    spec = archc.loads(
        "archc: 1\nname: s\ninput: [12, 5, 4]\nbody:\n  s: {channel_shuffle: {groups: 4}}\n"
    )
    model = archc.build(spec)
    x = torch.randn(2, 12, 5, 4)
    assert torch.equal(model(x), shufflenetv2.channel_shuffle(x, 4))
    assert list(model.state_dict()) == [] and spec.param_count == 0 and spec.macs == 0
    assert spec.output_shape == (12, 5, 4)


def test_channel_shuffle_in_every_backend(tmp_path):
    spec = archc.loads(SHUFFLE)
    assert [r["type"] for r in rows(spec, 1)][2] == "channel_shuffle"
    model = archc.build(spec, seed=0).eval()
    x = torch.randn(2, 8, 6, 6)
    # generated code: standalone (imports only torch), same state_dict and outputs
    text = generate(spec)
    tree = ast.parse(text)
    imports = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    imports |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imports <= {"torch", "collections"}, imports
    assert "self.shuffle = ChannelShuffle(3)" in text
    file = tmp_path / "gen_shuffle.py"
    file.write_text(text)
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", str(file)],
        capture_output=True,
        text=True,
    )
    assert ruff.returncode == 0 or "No module named ruff" in ruff.stderr, ruff.stdout
    mod_spec = importlib.util.spec_from_file_location(file.stem, file)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    generated = mod.Shuffle().eval()
    generated.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(generated(x), model(x))
        # fuse: the batch norm before the shuffle folds into conv1; outputs unchanged
        torch.testing.assert_close(fuse.fuse(model, spec)(x), model(x), rtol=1e-4, atol=1e-4)
    assert [f.conv for f in fuse.plan(spec)][0] == "conv1"
    source = graphviz_backend.digraph(spec).source
    assert "channel shuffle 3" in source


def test_channel_shuffle_groups_must_divide_channels(write_spec, capsys):
    path = write_spec(SHUFFLE.replace("{channel_shuffle: 3}", "{channel_shuffle: 5}"))
    assert_spec_error(path, 7, "12 channels do not split into 5 groups", capsys)


def test_channel_shuffle_needs_a_feature_map():
    with pytest.raises(archc.SpecError, match="channel_shuffle needs a C×H×W feature map"):
        archc.loads("archc: 1\nname: s\ninput: [12]\nbody:\n  s: {channel_shuffle: 2}\n")

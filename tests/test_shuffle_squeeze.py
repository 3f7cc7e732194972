"""ShuffleNet's `channel_shuffle` primitive in every backend (issue 13)."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch

import archc
from archc.backends import fuse, graphviz_backend
from archc.backends.codegen import generate
from archc.backends.torch_backend import check_shapes
from archc.tables import rows
from conftest import ROOT, SPECS, assert_spec_error
from reference import TORCHVISION

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
    assert [f.layer for f in fuse.plan(spec)][0] == "conv1"
    source = graphviz_backend.digraph(spec).source
    assert "channel shuffle 3" in source


def test_channel_shuffle_groups_must_divide_channels(write_spec, capsys):
    path = write_spec(SHUFFLE.replace("{channel_shuffle: 3}", "{channel_shuffle: 5}"))
    assert_spec_error(path, 7, "12 channels do not split into 5 groups", capsys)


def test_channel_shuffle_needs_a_feature_map():
    with pytest.raises(archc.SpecError, match="channel_shuffle needs a C×H×W feature map"):
        archc.loads("archc: 1\nname: s\ninput: [12]\nbody:\n  s: {channel_shuffle: 2}\n")


# ---- ShuffleNet V2: torchvision parity --------------------------------------------------------

SHUFFLENETS = [f"shufflenet_v2_{w}" for w in ("x0_5", "x1_0", "x1_5", "x2_0")]
SHUFFLENET_SPEC = SPECS / "shufflenet_v2.yaml"
SMALL = ["input=[3, 64, 64]"]  # the same network on a small input (fully convolutional)


@cache
def shufflenet(name: str, small: bool = False):
    return archc.load(SHUFFLENET_SPEC, variant=name, overrides=SMALL if small else ())


def calibrated(model: torch.nn.Module) -> torch.nn.Module:
    """Batch norm statistics of a real batch, so that eval outputs are not vanishingly small."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7)))
    for m in norms:
        m.momentum = 0.1
        m.running_var.clamp_(min=0.1)  # keeps --fuse's folded weights well conditioned
    return model.eval()


@pytest.mark.parametrize("name", SHUFFLENETS)
def test_shufflenet_matches_torchvision(name):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None)
    ours = archc.build(SHUFFLENET_SPEC, variant=name, seed=0)
    assert list(ours.state_dict()) == list(ref.state_dict())
    initial = ours.state_dict()
    for key, tensor in ref.state_dict().items():  # no custom init: construction order alone
        assert torch.equal(initial[key], tensor), key
    calibrated(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", SHUFFLENETS)
def test_shufflenet_published_params_and_macs(name):
    params, gflops = TORCHVISION[name]
    spec = shufflenet(name)
    assert spec.param_count == params
    # within 1%, or within the rounding of a figure given to 3 decimals (x0_5's 0.04 is 0.0405)
    assert abs(spec.macs / 1e9 - gflops) <= max(0.01 * gflops, 0.0005)
    assert spec.output_shape == (1000,)


@pytest.mark.parametrize("name", SHUFFLENETS)
def test_shufflenet_static_shapes_equal_runtime(name):
    model = archc.build(shufflenet(name, small=True))
    assert check_shapes(model, shufflenet(name, small=True), batch=1) == []


@pytest.mark.parametrize("name", SHUFFLENETS)
def test_shufflenet_generated_code_equals_live_build(name, tmp_path):
    text = archc.codegen(shufflenet(name, small=True))
    assert "x1, x2 = x.chunk(2, dim=1)" in text and "self.branch1 = nn.Sequential()" in text
    file = tmp_path / f"gen_{name}.py"
    file.write_text(text)
    tree = ast.parse(text)
    module_spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    factory = getattr(module, [n.name for n in tree.body if isinstance(n, ast.FunctionDef)][-1])
    torch.manual_seed(0)
    live = archc.build(shufflenet(name, small=True))
    torch.manual_seed(0)
    generated = factory()
    pairs = zip(live.state_dict().items(), generated.state_dict().items(), strict=True)
    for (key, a), (key2, b) in pairs:
        assert key == key2 and torch.equal(a, b), key
    calibrated(live)
    generated.load_state_dict(live.state_dict(), strict=True)
    generated.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), live(x), rtol=1e-5, atol=1e-5)
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    if ruff is not None:
        config = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
        for command in (["check"], ["format", "--check"]):
            result = subprocess.run(
                [ruff, *command, *config, str(file)], capture_output=True, text=True
            )
            assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", SHUFFLENETS)
def test_shufflenet_fuse_keeps_outputs(name):
    model = calibrated(archc.build(shufflenet(name, small=True), seed=0))
    fused = archc.fuse(model, shufflenet(name, small=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 1e-4
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


def test_shufflenet_draw_renders(tmp_path):
    graph = graphviz_backend.digraph(shufflenet("shufflenet_v2_x0_5"), depth=None)
    assert "chunk 2" in graph.source and "concat" in graph.source
    if shutil.which("dot"):
        out = tmp_path / "shufflenet.svg"
        graph.render(outfile=out, cleanup=True)
        assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


# ---- parallel's split and post options --------------------------------------------------------

SPLIT = """\
archc: 1
name: split
input: [6, 5, 5]
body:
  unit:
    parallel:
      split: true
      branches:
        keep: []
        conv: {conv: {out: 4, kernel: 3, padding: 1}}
      post: {channel_shuffle: 7}
"""


def test_split_gives_each_branch_its_chunk_and_post_follows_the_concatenation():
    spec = archc.loads(SPLIT.replace("{channel_shuffle: 7}", "{channel_shuffle: 1}"))
    unit = spec.tree.children[0]
    assert [c.in_shape for c in unit.children[:2]] == [(3, 5, 5), (3, 5, 5)]
    assert unit.out_shape == (7, 5, 5) and spec.param_count == 3 * 4 * 9 + 4
    model = archc.build(spec, seed=0)
    assert list(model.state_dict()) == ["unit.conv.weight", "unit.conv.bias"]
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        expected = torch.cat([x[:, :3], model.unit.conv(x[:, 3:])], 1)
        assert torch.equal(model(x), expected)
    shuffled = archc.loads(SPLIT.replace("out: 4", "out: 5").replace("7}", "2}"))
    model = archc.build(shuffled, seed=0)
    shufflenetv2 = pytest.importorskip("torchvision.models.shufflenetv2")
    with torch.no_grad():
        inner = torch.cat([x[:, :3], model.unit.conv(x[:, 3:])], 1)
        assert torch.equal(model(x), shufflenetv2.channel_shuffle(inner, 2))


def test_parallel_without_split_feeds_every_branch_the_whole_input():
    spec = archc.loads(
        SPLIT.replace("split: true", "split: false").replace("7}", "2}").replace("out: 4", "out: 6")
    )
    unit = spec.tree.children[0]
    assert [c.in_shape for c in unit.children[:2]] == [(6, 5, 5), (6, 5, 5)]
    assert unit.out_shape == (12, 5, 5)


def test_split_channels_must_divide_by_the_branches(write_spec, capsys):
    path = write_spec(SPLIT.replace("input: [6, 5, 5]", "input: [7, 5, 5]"))
    assert_spec_error(path, 7, "7 input channels do not divide into 2 branches", capsys)


def test_post_layers_must_be_parameter_free(write_spec, capsys):
    path = write_spec(SPLIT.replace("{channel_shuffle: 7}", "batchnorm"))
    assert_spec_error(path, 11, "post layers must be parameter-free", capsys)


def test_split_option_is_a_boolean(write_spec, capsys):
    path = write_spec(SPLIT.replace("split: true", "split: 2"))
    assert_spec_error(path, 7, "split", capsys)


def test_post_layer_cannot_take_a_branch_name(write_spec, capsys):
    path = write_spec(SPLIT.replace("{channel_shuffle: 7}", "{conv: {out: 3, kernel: 1}}"))
    assert_spec_error(path, 11, "post layer 'conv' has the name of a branch", capsys)

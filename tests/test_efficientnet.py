"""EfficientNet B0-B7 and V2 S/M/L: torchvision parity, stochastic depth, compound scaling.

Each of torchvision's 11 EfficientNet builders is a variant of specs/efficientnet.yaml or
specs/efficientnet_v2.yaml. Compared with `torchvision.models.<name>(weights=None)`: the
state_dict (keys, order), initial weights under one seed bit for bit, outputs in eval and in
training (stochastic depth and dropout draw the same random numbers), each block's stochastic
depth probability, and the published parameter and GFLOPS figures. Forward passes use 64x64
inputs to keep the suite fast (B7 and V2-L are big): the networks are fully convolutional up
to the global pool, so nothing but the spatial size changes.
"""

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
from archc.backends.torch_backend import check_shapes
from conftest import ROOT, SPECS
from reference import TORCHVISION

torchvision = pytest.importorskip("torchvision")

V1 = [f"efficientnet_b{i}" for i in range(8)]
V2 = [f"efficientnet_v2_{s}" for s in "sml"]
BUILDERS = V1 + V2
SMALL = ["input=[3, 64, 64]"]  # the same network on a small input
RUFF = shutil.which("ruff") or next(
    (str(p) for p in (ROOT / ".venv/bin/ruff", Path(sys.executable).parent / "ruff") if p.exists()),
    None,
)


def spec_file(name: str) -> Path:
    return SPECS / ("efficientnet_v2.yaml" if name in V2 else "efficientnet.yaml")


@cache
def spec(name: str, small: bool = False):
    return archc.load(spec_file(name), variant=name, overrides=SMALL if small else ())


def reference(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None)


def calibrate(model: torch.nn.Module) -> None:
    """Give every batch norm the statistics of a real batch. Freshly initialised EfficientNets
    shrink their activations towards zero block after block (depthwise convolutions initialised
    by fan-out), so outputs of order 1e-14 would make any comparison pass."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0  # running statistics := this batch's
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(7)))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def blocks(features: torch.nn.Module):
    """(path, block) of every MBConv / FusedMBConv: features.1 ... features.N-2, each a stage."""
    for i, stage in list(features.named_children())[1:-1]:
        for j, block in stage.named_children():
            yield f"features.{i}.{j}", block


@pytest.mark.parametrize("name", BUILDERS)
def test_matches_torchvision(name):
    ref = reference(name)
    ours = archc.build(spec_file(name), variant=name, seed=0)
    assert list(ours.state_dict()) == list(ref.state_dict())
    initial = ours.state_dict()
    for key, tensor in ref.state_dict().items():  # same seed, same weights: same init order
        assert torch.equal(initial[key], tensor), key
    calibrate(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.1  # activations of a sensible size, not vanishing
    assert (got - expected).abs().max().item() <= 1e-5

    # training: batch statistics, dropout and stochastic depth draw the same random numbers
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ref.train(), ours.train()
    with torch.no_grad():
        torch.manual_seed(3)
        expected = ref(x)
        torch.manual_seed(3)
        got = ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", BUILDERS)
def test_stochastic_depth_probabilities_match_torchvision(name):
    """torchvision's sd_prob = 0.2 * stage_block_id / total_stage_blocks, applied where the block
    has its skip connection (stride 1, same channels); the spec writes it with block_id and
    total_blocks, computed statically (the summary shows it)."""
    ref = reference(name)
    ours = archc.build(spec(name, small=True))
    theirs = dict(blocks(ref.features))
    mine = dict(blocks(ours.features))
    assert list(mine) == list(theirs)
    static = {n.path: n for n in spec(name, small=True).tree.walk() if n.kind == "stochastic_depth"}
    applied = 0
    for path, block in theirs.items():
        if block.use_res_connect:
            assert mine[path].stochastic_depth.p == block.stochastic_depth.p, path
            assert static[f"{path}.stochastic_depth"].params.p == block.stochastic_depth.p
            assert mine[path].stochastic_depth.mode == "row"
            applied += 1
        else:  # torchvision keeps the module but never calls it: archc leaves it out
            assert not hasattr(mine[path], "stochastic_depth"), path
    assert applied == len(static) > 0
    # the last block's probability is 0.2 * (total - 1) / total
    total = len(theirs)
    last = list(theirs.values())[-1]
    assert last.stochastic_depth.p == pytest.approx(0.2 * (total - 1) / total)


@pytest.mark.parametrize("name", BUILDERS)
def test_published_params_and_macs(name):
    params, gflops = TORCHVISION[name]
    assert spec(name).param_count == params
    assert abs(spec(name).macs / 1e9 - gflops) / gflops < 0.01
    assert spec(name).output_shape == (1000,)


@pytest.mark.parametrize("name", BUILDERS)
def test_static_shapes_equal_runtime(name):
    model = archc.build(spec(name, small=True))
    assert check_shapes(model, spec(name, small=True), batch=1) == []


def _import(path: Path):
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[path.stem] = module
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", BUILDERS)
def test_generated_code_equals_live_build(name, tmp_path):
    text = archc.codegen(spec(name, small=True))
    tree = ast.parse(text)
    imported = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"torch", "collections", "math"}, imported
    assert "class StochasticDepth(nn.Module):" in text  # carried as source, not imported
    file = tmp_path / f"gen_{name}.py"
    file.write_text(text)
    factory = getattr(
        _import(file), [n.name for n in tree.body if isinstance(n, ast.FunctionDef)][-1]
    )
    torch.manual_seed(0)
    live = archc.build(spec(name, small=True))
    torch.manual_seed(0)
    generated = factory()
    for (key, a), (key2, b) in zip(live.state_dict().items(), generated.state_dict().items()):
        assert key == key2 and torch.equal(a, b), key  # same init, same order
    calibrate(live)
    generated.load_state_dict(live.state_dict(), strict=True)
    generated.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), live(x), rtol=1e-5, atol=1e-5)
    if RUFF is not None:
        config = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
        for command in (["check"], ["format", "--check"]):
            result = subprocess.run(
                [RUFF, *command, *config, str(file)], capture_output=True, text=True
            )
            assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", BUILDERS)
def test_fuse_keeps_outputs(name):
    model = archc.build(spec(name, small=True), seed=0)
    calibrate(model)
    for m in model.modules():  # a near-zero variance folded in would magnify float rounding
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.clamp_(min=0.1)
    fused = archc.fuse(model, spec(name, small=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 1e-4
    # every batch norm was folded, into depthwise convolutions too
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_v2_s"])
def test_draw_renders(name, tmp_path):
    graph = archc.draw(spec(name))
    assert "stochastic depth 0.1" in graph.source  # the probability, computed statically
    assert graph.source.count("mul") >= 2 * len(spec(name).tree.children[0].children)  # SE gates
    if shutil.which("dot"):
        out = tmp_path / f"{name}.svg"
        graph.render(outfile=out, cleanup=True)
        assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_compound_scaling_is_written_once():
    """B0-B7 are one table: the variants set only the multipliers, dropout, batch norm and input."""
    text = spec_file("efficientnet_b0").read_text()
    assert text.count("stage: {block: mbconv") == 7
    b0, b7 = spec("efficientnet_b0"), spec("efficientnet_b7")
    assert b0.variants == tuple(V1)
    stages = lambda s: [len(n.registered()) for n in s.tree.children[0].children[1:-1]]  # noqa: E731
    assert stages(b0) == [1, 2, 2, 3, 3, 4, 1]
    assert stages(b7) == [4, 7, 7, 10, 10, 13, 4]  # ceil(n * 3.1)
    bn = [n for n in b7.tree.walk() if n.kind == "batchnorm"]
    assert {(n.params.eps, n.params.momentum) for n in bn} == {(0.001, 0.01)}


# ---- the language features EfficientNet needed ------------------------------------------------

POSITION_SPEC = """
archc: 1
name: position
input: [3, 8, 8]
params: {p: 0.2}
blocks:
  blk:
    params: {out: ~, stride: 1, p: 0.2}
    let: {sd: "${p * block_id / total_blocks}"}
    body:
      residual:
        body:
          conv: {conv: {out: "${out}", kernel: 3, padding: 1, stride: "${stride}"}}
          drop: {stochastic_depth: "${sd}"}
        post: none
body:
  a: {stage: {block: blk, depth: 2, out: 4}}
  b: {stage: {block: blk, depth: 3, out: 8, stride: 2, p: "${p * 2}"}}
  c: {stage: {block: blk, depth: 1, out: 8, p: "${block_id / 100}"}}
"""


def test_stage_blocks_know_their_place_in_the_network():
    """block_id counts every stage's blocks in network order, total_blocks is their number;
    both are static, so the summary and the generated code show each block's value."""
    spec = archc.loads(POSITION_SPEC)
    p = {n.path: n.params.p for n in spec.tree.walk() if n.kind == "stochastic_depth"}
    assert p == {
        "a.0.drop": 0.0, "a.1.drop": 0.2 * 1 / 6,
        "b.0.drop": 0.4 * 2 / 6, "b.1.drop": 0.4 * 3 / 6, "b.2.drop": 0.4 * 4 / 6,
        "c.0.drop": (5 / 100) * 5 / 6,  # a stage argument reads the position too
    }  # fmt: skip
    rows = {r["name"]: r["type"] for r in archc.summary(spec)["layers"]}
    assert rows["b.1.drop"] == "stochastic_depth p=0.2"
    source = archc.codegen(spec)
    assert "StochasticDepth(" in source and "import archc" not in source


def test_block_position_names_are_reserved_and_scoped(write_spec):
    from archc.errors import SpecError

    reserved = POSITION_SPEC.replace(
        "params: {out: ~, stride: 1, p: 0.2}", "params: {out: ~, stride: 1, p: 0.2, block_id: 0}"
    )
    with pytest.raises(SpecError, match="block_id"):
        archc.loads(reserved)
    outside = POSITION_SPEC.replace(
        'c: {stage: {block: blk, depth: 1, out: 8, p: "${block_id / 100}"}}', "c: {blk: {out: 8}}"
    )
    with pytest.raises(SpecError, match="block_id"):  # a block outside a stage has no position
        archc.loads(outside)


NESTED_POSITION_SPEC = """archc: 1
name: nested
input: [3, 8, 8]
blocks:
  leaf:
    params: {}
    body: {stochastic_depth: "${block_id / total_blocks}"}
  outer:
    params: {inner: 2}
    body: {stage: {block: leaf, depth: "${inner}"}}
body:
  s: {stage: {block: outer, depth: 3, inner: 2}}
  t: {stage: {block: leaf, depth: 2}}
"""


@pytest.mark.parametrize("inner", ["2", '"${1 + block_id // 2}"'])
def test_copied_stage_blocks_count_the_stage_blocks_inside_them(monkeypatch, inner):
    """A stage copies its repeated blocks (in the first pass even those that read their
    position, which only counts them); a copy counts the blocks of its own stages, so every
    block_id and total_blocks is what a full expansion of every block gives, also when the
    depth of a block's stage depends on its position (the count is then taken again)."""
    from archc.expand import Expander

    text = NESTED_POSITION_SPEC.replace("depth: 3, inner: 2", f"depth: 3, inner: {inner}")
    fast = archc.loads(text)
    monkeypatch.setattr(Expander, "reuse_repeats", False)
    slow = archc.loads(text)
    assert fast.tree == slow.tree
    rates = [n.params.p for n in fast.tree.walk() if n.kind == "stochastic_depth"]
    total = len(rates) + 3  # the outer blocks count too
    assert rates[-1] == (total - 1) / total


def test_a_depth_reading_total_blocks_is_refused():
    from archc.errors import SpecError

    text = """archc: 1
name: circular
input: [3, 8, 8]
blocks:
  inner:
    params: {}
    body: identity
  outer:
    params: {}
    body: {stage: {block: inner, depth: "${total_blocks}"}}
body:
  s: {stage: {block: outer, depth: 2}}
"""
    with pytest.raises(SpecError, match="number of stage blocks depends on total_blocks"):
        archc.loads(text)


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_is_torchvisions(mode):
    from torchvision.ops import StochasticDepth as Reference

    from archc.backends.torch_modules import StochasticDepth

    x = torch.randn(64, 3, 4, 4)
    for p in (0.0, 0.3, 1.0):
        ours, ref = StochasticDepth(p, mode), Reference(p, mode)
        torch.manual_seed(0)
        expected = ref(x)
        torch.manual_seed(0)
        got = ours(x)
        assert torch.equal(got, expected)
        assert torch.equal(ours.eval()(x), x)  # identity in eval
    ours = StochasticDepth(0.5, mode)
    torch.manual_seed(1)
    out = ours(x)
    per_row = out.flatten(1)
    kept = (per_row == 2 * x.flatten(1)).all(1)  # survivors scaled by 1 / (1 - p)
    dropped = (per_row == 0).all(1)
    assert (kept | dropped).all()
    assert (kept.all() or dropped.all()) if mode == "batch" else (0 < kept.sum() < 64)


def test_stochastic_depth_settings_are_checked():
    from archc.errors import SpecError

    bad = POSITION_SPEC.replace(
        'drop: {stochastic_depth: "${sd}"}', "drop: {stochastic_depth: {p: 1.5}}"
    )
    with pytest.raises(SpecError, match="p should be less than or equal to 1"):
        archc.loads(bad)
    bad = POSITION_SPEC.replace(
        'drop: {stochastic_depth: "${sd}"}', "drop: {stochastic_depth: {p: 0.1, mode: rows}}"
    )
    with pytest.raises(SpecError, match="mode"):
        archc.loads(bad)


def test_make_divisible_is_torchvisions():
    from torchvision.models._utils import _make_divisible

    from archc.spec import expr

    for channels in (3, 8, 16, 17, 24, 32, 40, 80, 112, 192, 320, 1280):
        for mult in (0.25, 0.5, 0.75, 1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0, 6, 4.5):
            env = {"c": channels, "m": mult}
            assert expr.evaluate("make_divisible(c * m, 8)", env) == _make_divisible(
                channels * mult, 8
            )
            assert expr.evaluate("make_divisible(c * m, 8, 16)", env) == _make_divisible(
                channels * mult, 8, 16
            )
    with pytest.raises(expr.ExprError):
        expr.evaluate("make_divisible(10, 0)", {})
    import math

    assert expr.evaluate("sqrt(1000)", {}) == math.sqrt(1000)


def test_defaults_read_model_params(write_spec):
    from archc.errors import SpecError

    text = """archc: 1
name: d
input: [3, 8, 8]
params: {eps: 0.001}
defaults:
  batchnorm: {eps: "${eps}", momentum: "${eps * 10}"}
body:
  conv: {conv: {out: 4, kernel: 1}}
  bn: batchnorm
"""
    spec = archc.loads(text)
    bn = next(n for n in spec.tree.walk() if n.kind == "batchnorm")
    assert (bn.params.eps, bn.params.momentum) == (0.001, 0.01)
    with pytest.raises(SpecError) as info:
        archc.loads(text.replace('"${eps * 10}"', '"${eps * 10000}"'))
    assert info.value.location.line == 6 and "momentum" in str(info.value)


def test_uniform_fan_init_is_efficientnets():
    """uniform(±1/sqrt(fan_out)) for a linear: torchvision's init_range = 1 / sqrt(out_features)."""
    spec = spec_file("efficientnet_b0")
    for num_classes in (10, 1000):
        model = archc.build(
            archc.load(spec, overrides=[f"params.num_classes={num_classes}", *SMALL]), seed=0
        )
        weight = model.classifier[1].weight
        bound = 1 / num_classes**0.5
        assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
        assert torch.equal(model.classifier[1].bias, torch.zeros(num_classes))

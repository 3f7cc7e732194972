"""SqueezeNet 1_0 / 1_1 and Inception v3 at torchvision parity; inline parallels; init rules by path.

SqueezeNet's Fire registers its two expand branches' layers on itself (an inline parallel in a
sequence), Inception v3's InceptionE splits a branch after a shared 1x1 (an inline parallel inside
a branch). SqueezeNet's final convolution and Inception v3's AuxLogits.fc get their own init by
module path. Each builder is compared with `torchvision.models.<name>(weights=None)`: state_dict
keys in order, initial weights bit for bit under one seed, outputs in eval (and, for Inception v3,
both outputs in train mode under one RNG state), the published parameter and GFLOPS figures.
SqueezeNet runs on 64x64 inputs; Inception v3 needs 299x299 for its auxiliary head (Mixed_6e must
be 17x17) and runs at 75x75, its smallest size, without it.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import archc
from archc.backends import fuse
from archc.backends.torch_backend import check_shapes
from conftest import ROOT, assert_spec_error

torchvision = pytest.importorskip("torchvision")

SQUEEZENETS = ["squeezenet1_0", "squeezenet1_1"]
WEIGHTS = {
    "squeezenet1_0": "SqueezeNet1_0_Weights",
    "squeezenet1_1": "SqueezeNet1_1_Weights",
    "inception_v3": "Inception_V3_Weights",
}
RUFF = shutil.which("ruff") or next(
    (str(p) for p in (ROOT / ".venv/bin/ruff", Path(sys.executable).parent / "ruff") if p.exists()),
    None,
)


def reference(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # inception_v3's note on its future default init
        warnings.simplefilter("ignore", FutureWarning)
        builder = "inception_v3" if name.startswith("inception_v3") else name
        return getattr(torchvision.models, builder)(weights=None, **kwargs)


def calibrate(model: nn.Module, size: int) -> None:
    """Batch norm statistics of a real batch: a fresh Inception v3's eval outputs are ~1e12
    (trunc_normal(0.1) weights, identity batch norms), too large for a 1e-5 comparison to mean
    anything."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(7)))
    for m in norms:
        m.momentum = 0.1
    model.eval()


def same_start(ours: nn.Module, ref: nn.Module) -> None:
    """Same keys in the same order, the same initial tensors bit for bit."""
    assert list(ours.state_dict()) == list(ref.state_dict())
    initial = ours.state_dict()
    for key, tensor in ref.state_dict().items():
        assert torch.equal(initial[key], tensor), key


@pytest.mark.parametrize("name", SQUEEZENETS)
def test_squeezenet_matches_torchvision(name):
    ref = reference(name)
    ours = archc.build(name, seed=0)
    same_start(ours, ref)
    fire = ours.features[3]  # Fire's six layers are its own attributes, as in torchvision
    assert [n for n, _ in fire.named_children()] == [n for n, _ in ref.features[3].named_children()]
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval(), ref.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.01
    assert (got - expected).abs().max().item() <= 1e-5


def test_squeezenet_final_conv_init_by_path():
    """classifier.1 is normal(0, 0.01), the other convolutions kaiming_uniform: the path rule
    replaces the kind's weight rule there and keeps its bias rule (zeros)."""
    spec = archc.load("squeezenet1_1")
    model = archc.build(spec, seed=0)
    final = model.classifier[1]
    assert final.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.count_nonzero(final.bias) == 0
    other = model.features[3].expand3x3.weight  # kaiming_uniform: bound sqrt(6 / fan_in)
    assert other.abs().max().item() <= (6 / (16 * 9)) ** 0.5
    assert other.std().item() > 0.05
    [rule] = spec.init_paths
    assert rule.selector == "classifier.1" and rule.paths == ("classifier.1",)
    assert spec.init_for("conv", "classifier.1")["weight"].kind == "normal"
    assert spec.init_for("conv", "classifier.1")["bias"].kind == "zeros"
    assert spec.init_for("conv", "features.0")["weight"].kind == "kaiming_uniform"


def test_inception_v3_matches_torchvision_in_eval_and_train():
    ref = reference("inception_v3")
    ours = archc.build("inception_v3", seed=0)
    same_start(ours, ref)
    # AuxLogits.fc gets std 0.001 by its path rule; AuxLogits.conv1 keeps 0.1 as in torchvision
    assert ours.AuxLogits.fc.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert ours.AuxLogits.conv1.conv.weight.std().item() == pytest.approx(0.1, rel=0.05)
    # InceptionE: the 1x3 / 3x1 pairs are attributes of the block, not of a branch module
    names = [n for n, _ in ours.Mixed_7b.named_children() if n != "pool"]
    assert names == [n for n, _ in ref.Mixed_7b.named_children()]
    calibrate(ref, 299)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(1, 3, 299, 299, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert isinstance(got, torch.Tensor) and expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 1e-5
    # train mode: InceptionOutputs(logits, aux_logits); dropout draws the same numbers
    ref.train(), ours.train()
    x = torch.randn(2, 3, 299, 299, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.manual_seed(3)
        expected = ref(x)
        torch.manual_seed(3)
        got = ours(x)
    assert got._fields == expected._fields == ("logits", "aux_logits")
    assert (got.logits - expected.logits).abs().max().item() <= 1e-5
    assert (got.aux_logits - expected.aux_logits).abs().max().item() <= 1e-5
    assert expected.aux_logits.abs().max() > 0


def test_inception_v3_without_aux_matches_torchvision():
    ref = reference("inception_v3_no_aux", aux_logits=False)
    spec = archc.load("inception_v3_no_aux", overrides=["input=[3, 75, 75]"])
    ours = archc.build(spec, seed=0)
    same_start(ours, ref)
    assert spec.init_paths == ()  # AuxLogits.fc's rule is `if: ${aux_logits}`
    calibrate(ref, 75)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.eval()
    x = torch.randn(2, 3, 75, 75, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 1e-5
    assert check_shapes(ours, spec, batch=1) == []


@pytest.mark.parametrize("name", [*SQUEEZENETS, "inception_v3"])
def test_published_params_and_macs(name):
    meta = getattr(torchvision.models, WEIGHTS[name]).IMAGENET1K_V1.meta
    spec = archc.load(name)
    assert spec.param_count == meta["num_params"]  # Inception v3's counts AuxLogits
    eval_macs = spec.macs - sum(h.macs for h in spec.heads)  # _ops: the eval forward
    assert abs(eval_macs / 1e9 - meta["_ops"]) / meta["_ops"] < 0.01
    assert spec.output_shape == (1000,)


def _import(path: Path):
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def generated_model(spec, tmp_path: Path, stem: str):
    text = archc.codegen(spec)
    file = tmp_path / f"gen_{stem}.py"
    file.write_text(text)
    tree = ast.parse(text)
    factory = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)][-1]
    if RUFF is not None:
        config = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
        for command in (["check"], ["format", "--check"]):
            result = subprocess.run(
                [RUFF, *command, *config, str(file)], capture_output=True, text=True
            )
            assert result.returncode == 0, result.stdout + result.stderr
    return text, getattr(_import(file), factory)


def test_generated_fire_and_inception_e_read_like_torchvision(tmp_path):
    text, _ = generated_model(archc.load("squeezenet1_0"), tmp_path, "squeezenet1_0")
    fire = text[text.index("class Fire(nn.Module):") : text.index("class Squeezenet1_0")]
    assert "self.expand3x3_activation = nn.ReLU(inplace=True)" in fire
    assert "def forward(self, x: torch.Tensor) -> torch.Tensor:" in fire
    assert "return torch.cat([expand1x1, expand3x3], 1)" in fire  # as torchvision returns it
    assert 'if name == "classifier.1":' in text  # the path rule, as torchvision's `m is final_conv`
    text = (ROOT / "generated" / "inception_v3.py").read_text()
    block = text[text.index("class InceptionE(nn.Module):") :]
    assert "branch3x3_2a = self.branch3x3_2a(branch3x3)" in block
    assert "branch3x3 = torch.cat([branch3x3_2a, branch3x3_2b], 1)" in block


@pytest.mark.parametrize("name", ["squeezenet1_1", "inception_v3_no_aux"])
def test_generated_code_equals_live_build(name, tmp_path):
    size = 64 if name.startswith("squeeze") else 75
    spec = archc.load(name, overrides=[f"input=[3, {size}, {size}]"])
    _, factory = generated_model(spec, tmp_path, name)
    torch.manual_seed(0)
    live = archc.build(spec)
    torch.manual_seed(0)
    generated = factory()
    for (key, a), (key2, b) in zip(live.state_dict().items(), generated.state_dict().items()):
        assert key == key2 and torch.equal(a, b), key
    calibrate(live, size)
    generated.load_state_dict(live.state_dict(), strict=True)
    generated.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), live(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["squeezenet1_1", "inception_v3_no_aux"])
def test_fuse_and_draw(name):
    size = 64 if name.startswith("squeeze") else 75
    spec = archc.load(name, overrides=[f"input=[3, {size}, {size}]"])
    model = archc.build(spec, seed=0)
    calibrate(model, size)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.clamp_(min=0.1)
    fused = archc.fuse(model, spec)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        expected = model(x)
        diff = (fused(x) - expected).abs().max().item() / max(1.0, expected.abs().max().item())
    assert diff <= 1e-4
    plan = fuse.plan(spec)
    assert {f.layer for f in plan} == {f.layer for f in fuse.plan_modules(model)}
    if name.startswith("inception"):  # the convs inside InceptionE's inline parallels fold too
        assert {"Mixed_7b.branch3x3_2a.conv", "Mixed_7b.branch3x3_2b.conv"} <= {
            f.layer for f in plan
        }
        assert all(f.batchnorm is not None for f in plan)
    assert "/concat" in archc.draw(spec).source


# ---- inline parallels on a small spec -----------------------------------------------------------

INLINE = """\
archc: 1
name: branchy
input: [4, 8, 8]
blocks:
  split_expand:
    params: {squeeze: ~, e1: ~, e3: ~}
    body:
      seq:
        squeeze: {conv: {out: "${squeeze}", kernel: 1}}
        squeeze_activation: relu
        expand:
          inline: true
          parallel:
            left: {inline: true, seq: {left: {conv: {out: "${e1}", kernel: 1}}, left_bn: batchnorm}}
            right: {conv: {out: "${e3}", kernel: 3, padding: 1}}
body:
  a: {split_expand: {squeeze: 2, e1: 3, e3: 5}}
  b:
    parallel:
      one: {conv: {out: 2, kernel: 1}}
      two:
        inline: true
        seq:
          two_1: {conv: {out: 4, kernel: 1, bias: false}}
          two_bn: batchnorm
          two_2:
            inline: true
            parallel:
              two_2a: {conv: {out: 3, kernel: [1, 3], padding: [0, 1]}}
              two_2b: {conv: {out: 3, kernel: [3, 1], padding: [1, 0]}}
  c:
    residual:
      body:
        mix:
          inline: true
          parallel:
            branches: {p: {conv: {out: 4, kernel: 1}}, q: []}
            split: true
            post: {channel_shuffle: 2}
        tail: {conv: {out: 8, kernel: 1}}
  pool: {adaptive_avgpool: 1}
  flatten: flatten
"""


def manual(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the spec means, written out by hand against the built modules."""
    a = model.a
    s = torch.relu(a.squeeze(x))
    x = torch.cat([a.left_bn(a.left(s)), a.right(s)], 1)
    b = model.b
    two = b.two_bn(b.two_1(x))
    x = torch.cat([b.one(x), torch.cat([b.two_2a(two), b.two_2b(two)], 1)], 1)
    c = model.c
    x1, x2 = x.chunk(2, 1)
    mixed = torchvision.models.shufflenetv2.channel_shuffle(torch.cat([c.p(x1), x2], 1), 2)
    x = torch.relu(c.tail(mixed) + x)
    return torch.flatten(model.pool(x), 1)


def test_inline_parallel_registers_on_the_enclosing_module(tmp_path):
    spec = archc.loads(INLINE)
    model = archc.build(spec, seed=0).eval()
    assert [n for n, _ in model.a.named_children()] == [
        "squeeze", "squeeze_activation", "left", "left_bn", "right"
    ]  # fmt: skip
    assert [n for n, _ in model.b.named_children()] == [
        "one",
        "two_1",
        "two_bn",
        "two_2a",
        "two_2b",
    ]
    assert [n for n, _ in model.c.named_children()] == ["p", "q", "channel_shuffle", "tail", "relu"]
    assert spec.tree.find("a").out_shape == (8, 8, 8) and spec.output_shape == (8,)
    assert check_shapes(model, spec) == []
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), manual(model, x))
    # fuse: chains end at an inline parallel and run along each of its branches
    folds = {f.layer: f.batchnorm for f in fuse.plan(spec)}
    assert folds["a.left"] == "a.left_bn" and folds["b.two_1"] == "b.two_bn"
    assert folds["a.squeeze"] is None  # its successor is the parallel, not `left`
    assert folds == {f.layer: f.batchnorm for f in fuse.plan_modules(model)}
    # generated code: one class per block, the branches written out in forward, same outputs
    text, factory = generated_model(spec, tmp_path, "branchy")
    assert "left = self.left(x)" in text and "two = torch.cat([two_2a, two_2b], 1)" in text
    torch.manual_seed(0)
    generated = factory().eval()
    generated.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(generated(x), model(x))
    dot = archc.draw(spec).source
    assert '"a/expand/concat"' in dot and '"b/two_2/concat"' in dot and '"b/concat"' in dot


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("  mix: {inline: true, parallel: {a: relu, b: relu}}\n", 5, "the model's top level"),
        (
            "  s: {stage: {block: pair, depth: 2}}\n",
            5,
            "a stage runs its layers one by one",
        ),
    ],
)
def test_inline_parallel_needs_a_module_around_it(write_spec, capsys, body, line, words):
    head = "archc: 1\nname: bad\ninput: [4, 8, 8]\nbody:\n"
    blocks = (
        "blocks:\n  pair:\n    body: {inline: true, parallel: {a: {conv: {out: 2, kernel: 1}}, "
        "b: {conv: {out: 2, kernel: 1}}}}\n"
    )
    path = write_spec(head + body + blocks)
    assert_spec_error(path, line, words, capsys)


# ---- init rules by path ---------------------------------------------------------------------

PATHS = """\
archc: 1
name: paths
input: [3, 8, 8]
params: {extra: true}
init:
  conv: {weight: {normal: {std: 1.0}}, bias: zeros}
  "*.down.0": {weight: zeros}
  "**.fc": {weight: ones, bias: {constant: 2.0}}
  head.fc2: {weight: {constant: 3.0}, if: "${extra}"}
body:
  a: {seq: {conv: {conv: {out: 4, kernel: 3}}, down: [{conv: {out: 4, kernel: 1}}, relu]}}
  b: {seq: {down: [{conv: {out: 4, kernel: 1}}, relu]}}
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  head: {seq: {fc: {linear: 5}, fc2: {linear: 2, if: "${extra}"}}}
"""


def test_path_rules_select_by_glob_and_replace_the_kind_rule(tmp_path):
    spec = archc.loads(PATHS)
    assert [(r.selector, r.paths) for r in spec.init_paths] == [
        ("*.down.0", ("a.down.0", "b.down.0")),
        ("**.fc", ("head.fc",)),
        ("head.fc2", ("head.fc2",)),
    ]
    model = archc.build(spec, seed=0)
    assert model.a.conv.weight.std() > 0.5 and torch.count_nonzero(model.a.conv.bias) == 0
    for down in (model.a.down[0], model.b.down[0]):  # weight by path, bias by kind
        assert torch.count_nonzero(down.weight) == 0 and torch.count_nonzero(down.bias) == 0
    assert torch.all(model.head.fc.weight == 1) and torch.all(model.head.fc.bias == 2)
    assert torch.all(model.head.fc2.weight == 3)
    # generated code tests the names and initialises the same tensors in the same order
    text, factory = generated_model(spec, tmp_path, "paths")
    assert "for name, m in self.named_modules():" in text
    assert 'if name in ("a.down.0", "b.down.0"):' in text
    torch.manual_seed(1)
    live = archc.build(spec)
    torch.manual_seed(1)
    for (key, a), b in zip(live.state_dict().items(), factory().state_dict().values()):
        assert torch.equal(a, b), key
    off = archc.loads(PATHS, overrides=["params.extra=false"])  # `if: false`: the rule is left out
    assert [r.selector for r in off.init_paths] == ["*.down.0", "**.fc"]


@pytest.mark.parametrize(
    ("rule", "col", "words"),
    [
        ("  head.fc3: {weight: zeros}\n", 3, "'head.fc3' is neither a layer kind with weights"),
        ("  a.down: {weight: zeros}\n", 3, "did you mean 'a.down.0'?"),  # a block, not a layer
        ("  relu: {weight: zeros}\n", 3, "init applies to layers with weights"),
        ("  b.down.0: {bias: kaiming_uniform}\n", 20, "needs a weight with fan-in and fan-out"),
        ("  b.down.0: {weight: zeros, if: 3}\n", 33, "'if' must be true or false"),
    ],
)
def test_bad_path_rules_point_at_the_selector(write_spec, capsys, rule, col, words):
    from archc.cli import main

    path = write_spec(PATHS.replace("init:\n", "init:\n" + rule))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"{path}:6:{col}: error: ") and words in first, err
    assert "Traceback" not in err


def test_a_new_head_gets_its_path_rule_when_weights_are_loaded():
    """SqueezeNet fine-tuned to 10 classes from torchvision's weights: classifier.1 changes
    shape, so it is re-initialised by the spec's rules for its path (normal(0, 0.01), zero
    bias), not by the kaiming_uniform of the other convolutions."""
    spec = archc.load("squeezenet1_1", overrides=["params.num_classes=10"])
    model = archc.build(spec, seed=0)
    report = archc.load_weights(model, spec, reference("squeezenet1_1", seed=1).state_dict())
    assert {key for key, _, _ in report.reinitialised} == {
        "classifier.1.weight",
        "classifier.1.bias",
    }
    final = model.classifier[1]
    assert final.weight.shape == (10, 512, 1, 1)
    assert final.weight.std().item() == pytest.approx(0.01, rel=0.1)
    assert torch.count_nonzero(final.bias) == 0

"""ConvNeXt T/S/B/L and the language features it needed: layernorm, layernorm2d, permute, a linear
over the last dimension of any tensor, a learnable scale held by its block.

Each of torchvision's 4 ConvNeXt builders is a variant of specs/convnext.yaml. Compared with
`torchvision.models.<name>(weights=None)`: the state_dict (keys, order), initial weights under
one seed bit for bit, outputs in eval and in training (stochastic depth draws the same random
numbers), each block's stochastic depth probability, and the published parameter and GFLOPS
figures. Forward passes use 64x64 inputs (the networks are fully convolutional up to the global
pool, so only the spatial size changes). To keep the suite fast, convnext_tiny is compared live
here (eval, with layer scales large enough that the blocks count, and training); all four are
compared statically and on the meta device (keys, shapes, stochastic depth: no memory, no
init), and tests/test_torchvision_parity.py compares every builder's initial weights and eval
outputs (strict load), convnext_small, _base and _large on a 64x64 input (conftest's
SMALL_INPUT).
"""

from __future__ import annotations

from functools import cache

import pytest
import torch

import archc
from archc.backends.torch_backend import check_shapes
from archc.errors import SpecError
from conftest import SPECS
from reference import TORCHVISION

torchvision = pytest.importorskip("torchvision")

BUILDERS = ["convnext_tiny", "convnext_small", "convnext_base", "convnext_large"]
# Compared live here, in eval with layer scales that make the blocks count and in training; every
# builder's state_dict, initial weights and eval outputs are compared by test_torchvision_parity.
COMPARED_LIVE = ["convnext_tiny"]
SMALL = ["input=[3, 64, 64]"]
SPEC = SPECS / "convnext.yaml"


@cache
def spec(name: str, small: bool = False):
    return archc.load(SPEC, variant=name, overrides=SMALL if small else ())


def blocks(model: torch.nn.Module):
    """(path, CNBlock) of every block: the stages are features.1, .3, .5 and .7."""
    for i in (1, 3, 5, 7):
        for j, block in model.features[i].named_children():
            yield f"features.{i}.{j}", block


@pytest.mark.parametrize("name", COMPARED_LIVE)
def test_matches_torchvision(name):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None)
    ours = archc.build(spec(name, small=True), seed=0)
    assert list(ours.state_dict()) == list(ref.state_dict())
    initial = ours.state_dict()
    for key, tensor in ref.state_dict().items():  # same seed, same weights: same init order
        assert torch.equal(initial[key], tensor), key
    scale = ours.features[1][0].layer_scale
    assert torch.equal(scale, torch.full(scale.shape, 1e-6))
    with torch.no_grad():  # layer scales of 1e-6 would hide the blocks: make them count
        for _, block in blocks(ref):  # (loaded into ours below)
            block.layer_scale.uniform_(0.5, 1.5)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
        skipped = ours.features[1][0].block(ours.features[0](x))  # the block's own output...
    assert skipped.abs().max() > 0.1  # ...is of a sensible size, so the sum sees it
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 1e-5

    # training: stochastic depth draws the same random numbers, row by row
    ref.train(), ours.train()
    with torch.no_grad():
        torch.manual_seed(3)
        expected = ref(x)
        torch.manual_seed(3)
        got = ours(x)
    assert (got - expected).abs().max().item() <= 1e-5


def test_large_state_dict_keys_and_shapes():
    """convnext_large on the meta device: the same keys, in order, with the same shapes."""
    with torch.device("meta"):
        ref = torchvision.models.convnext_large(weights=None)
        ours = archc.build(spec("convnext_large"))
    theirs = [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == theirs
    assert theirs[4] == ("features.1.0.layer_scale", (192, 1, 1))


@pytest.mark.parametrize("name", BUILDERS)
def test_stochastic_depth_probabilities_match_torchvision(name):
    """torchvision's sd_prob = stochastic_depth_prob * stage_block_id / (total_stage_blocks - 1),
    0.1 for tiny, 0.4 small, 0.5 base and large; the spec writes it with block_id and
    total_blocks, computed statically (summary and generated code show each block's)."""
    with torch.device("meta"):  # the probabilities are settings: no weights needed
        ref = getattr(torchvision.models, name)(weights=None)
        ours = archc.build(spec(name))
    theirs, mine = dict(blocks(ref)), dict(blocks(ours))
    assert list(mine) == list(theirs)
    static = {n.path: n.params.p for n in spec(name).tree.walk() if n.kind == "stochastic_depth"}
    for path, block in theirs.items():
        assert mine[path].stochastic_depth.p == block.stochastic_depth.p, path
        assert static[f"{path}.stochastic_depth"] == block.stochastic_depth.p
        assert mine[path].stochastic_depth.mode == block.stochastic_depth.mode == "row"
    assert len(static) == len(theirs)
    last = {"convnext_tiny": 0.1, "convnext_small": 0.4}.get(name, 0.5)
    assert list(static.values())[0] == 0.0 and list(static.values())[-1] == pytest.approx(last)


@pytest.mark.parametrize("name", BUILDERS)
def test_published_params_and_macs(name):
    params, gflops = TORCHVISION[name]
    assert spec(name).param_count == params
    assert abs(spec(name).macs / 1e9 - gflops) / gflops < 0.01
    assert spec(name).output_shape == (1000,)


def test_generated_code_reads_like_torchvision():
    text = archc.codegen(spec("convnext_tiny", small=True))
    assert "class LayerNorm2d(nn.LayerNorm):" in text  # carried as source, not imported
    assert "class CNBlock(nn.Module):" in text
    assert (
        "self.layer_scale = nn.Parameter(torch.full([in_channels, 1, 1], fill_value=layer_scale))"
        in text
    )
    assert "        out = self.layer_scale * out\n" in text
    assert "Permute([0, 2, 3, 1])" in text and "nn.LayerNorm(in_channels, eps=1e-06)" in text
    assert "import archc" not in text


def test_variants_share_one_table():
    text = SPEC.read_text()
    assert text.count("stage: {block: cnblock") == 4
    stages = lambda s: [len(s.tree.children[0].children[i].children) for i in (1, 3, 5, 7)]  # noqa: E731
    assert stages(spec("convnext_tiny")) == [3, 3, 9, 3]
    assert stages(spec("convnext_large")) == [3, 3, 27, 3]


# ---- the language features ConvNeXt needed ---------------------------------------------------

CHANNELS_LAST = """archc: 1
name: channels_last
input: [4, 5, 6]
blocks:
  blk:
    params: {}
    body:
      residual:
        body:
          inner:
            - {permute: [0, 2, 3, 1]}
            - {layernorm: {eps: 0.001}}
            - {linear: 7}
            - {linear: {out: 4, bias: false}}
            - {permute: [0, 3, 1, 2]}
          gamma: {scale: 0.5}
        shortcut: identity
        post: none
body:
  a: blk
  norm: {layernorm2d: {bias: false}}
  flat: flatten
  fc: {linear: 3}
"""


def test_channels_last_shapes_params_and_macs_are_static():
    """A permute reorders the static dims; a linear acts on the last one, whatever the rank."""
    compiled = archc.loads(CHANNELS_LAST)
    nodes = {n.path: n for n in compiled.tree.walk() if n.path}
    assert nodes["a.inner.0"].out_shape == (5, 6, 4)
    assert nodes["a.inner.2"].out_shape == (5, 6, 7)
    assert nodes["a.inner.2"].macs == 5 * 6 * 4 * 7 and nodes["a.inner.2"].param_count == 4 * 7 + 7
    assert nodes["a.inner.3"].param_count == 7 * 4
    assert nodes["a.inner.1"].param_count == 2 * 4  # over the last dim: the channels here
    assert nodes["a.gamma"].param_count == 4 and nodes["norm"].param_count == 4  # no bias
    model = archc.build(compiled, seed=0)
    assert check_shapes(model, compiled, batch=2) == []
    assert sum(p.numel() for p in model.parameters()) == compiled.param_count
    assert list(model.a.state_dict())[0] == "gamma"  # the block's own tensor comes first
    assert torch.equal(model.a.gamma, torch.full((4, 1, 1), 0.5))
    x = torch.randn(2, 4, 5, 6)
    inner = model.a.inner
    with torch.no_grad():
        expected = 0.5 * inner(x) + x
        assert torch.equal(model.a(x), expected)
        ln = torch.nn.functional.layer_norm(
            x.permute(0, 2, 3, 1), (4,), model.norm.weight, None, 1e-5
        )
        assert torch.allclose(model.norm(x), ln.permute(0, 3, 1, 2), atol=1e-6)
    # the generated file builds the same module: same keys, same outputs
    namespace: dict = {}
    exec(compile(archc.codegen(compiled), "generated", "exec"), namespace)  # noqa: S102 (our own output)
    generated = namespace["channels_last"]()
    generated.load_state_dict(model.state_dict(), strict=True)
    assert list(generated.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        assert torch.equal(generated(x), model(x))


ERRORS = {  # (replaced, replacement, words of the message, text on the line it points at)
    "permute-rank": (
        "{permute: [0, 2, 3, 1]}",
        "{permute: [0, 2, 3]}",
        "permutation of 0 ... 3",
        "permute",
    ),
    "permute-batch": (
        "{permute: [0, 2, 3, 1]}",
        "{permute: [1, 0, 2, 3]}",
        "keep the batch (0) first",
        "permute",
    ),
    "permute-repeat": (
        "{permute: [0, 2, 3, 1]}",
        "{permute: [0, 2, 2, 1]}",
        "a permutation",
        "permute",
    ),
    "layernorm2d-flat": (
        "  norm: {layernorm2d: {bias: false}}\n  flat: flatten\n",
        "  flat: flatten\n  norm: {layernorm2d: {bias: false}}\n",
        "layernorm2d needs a C×H×W feature map",
        "norm:",
    ),
    "scale-outside-residual": (
        "  a: blk\n",
        "  a: blk\n  g: {scale: 2.0}\n",
        "only a residual's body can hold",
        "g:",
    ),
    "scale-unknown-field": (
        "{scale: 0.5}",
        "{scale: {init: 0.5, shape: [4]}}",
        "unknown field 'shape'",
        "gamma",
    ),
    "layernorm-eps": ("{layernorm: {eps: 0.001}}", "{layernorm: {eps: 0}}", "eps", "layernorm"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_language_errors_point_at_the_layer(case):
    old, new, words, line = ERRORS[case]
    assert old in CHANNELS_LAST
    text = CHANNELS_LAST.replace(old, new)
    with pytest.raises(SpecError) as info:
        archc.loads(text)
    assert words in str(info.value)
    assert line in text.splitlines()[info.value.location.line - 1]


def test_fuse_keeps_outputs():
    """`--fuse` on ConvNeXt: no batch norm to fold; every convolution becomes a FusedConv2d,
    every linear layer a FusedLinear, and each block's GELU runs inside its first linear layer."""
    from archc.backends.fuse import FusedConv2d, FusedLinear

    compiled = spec("convnext_tiny", small=True)
    model = archc.build(compiled, seed=0)
    with torch.no_grad():
        for _, block in blocks(model):  # blocks that count (see test_matches_torchvision)
            block.layer_scale.uniform_(0.5, 1.5)
    model.eval()
    fused = archc.fuse(model, compiled)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected, got = model(x), fused(x)
    assert expected.abs().max() > 0.1
    assert (got - expected).abs().max().item() <= 1e-4
    convs = [m for m in fused.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 + 18 + 3 and all(isinstance(m, FusedConv2d) for m in convs)
    linears = [m for m in fused.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2 * 18 + 1 and all(isinstance(m, FusedLinear) for m in linears)
    assert [m.activation for m in linears].count("gelu") == 18
    assert not any(isinstance(m, torch.nn.GELU) for m in fused.modules())

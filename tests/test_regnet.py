"""RegNet as a design space (issue 14): specs/regnet.yaml computes every variant's stages from
the paper's parameters in `let:`, as torchvision's BlockParams.from_init_params does, and each
of torchvision's 15 RegNet builders is a variant at parity.

Numbers: all 15 variants' stage widths, depths and group widths against torchvision's
BlockParams, their parameters against the weights' meta num_params and MACs within 1% of _ops.
Outputs and initial weights bit for bit: a representative subset here (X and Y, small and large,
one with group widths adjusted by _adjust_widths_groups_compatibilty); the generic parity test
does the same for every variant not in conftest.HEAVY. The HEAVY ones (regnet_y_128gf: 644M
parameters) are compared on the meta device: state_dict keys in order with their shapes, and
static = runtime shapes (tests/test_static_equals_runtime.py).
"""

from __future__ import annotations

import pytest
import torch

import archc
from conftest import HEAVY, assert_spec_error

torchvision = pytest.importorskip("torchvision")
from torchvision.models import get_model_weights, regnet  # noqa: E402

SPEC = "specs/regnet.yaml"
VARIANTS = archc.load(SPEC).variants
BUILDERS = [n for n in regnet.__all__ if n.startswith("regnet_")]
SUBSET = ["regnet_x_400mf", "regnet_y_400mf", "regnet_x_8gf", "regnet_y_1_6gf"]


def block_params(name: str, **kwargs) -> regnet.BlockParams:
    """The BlockParams torchvision's builder computes (its model is not built)."""
    original = regnet._regnet
    regnet._regnet = lambda params, weights, progress, **kw: params
    try:
        return getattr(regnet, name)(**kwargs)
    finally:
        regnet._regnet = original


def reference_on_meta(name: str, **kwargs) -> torch.nn.Module:
    """torchvision's model for the builder, on the meta device (no weights): BlockParams needs
    real tensors, so it is computed first; the builder then builds RegNet(params) as here."""
    params = block_params(name, **kwargs)
    with torch.device("meta"):
        return regnet.RegNet(params)


def stages(spec) -> list:
    (trunk,) = [n for n in spec.tree.children if n.name == "trunk_output"]
    return trunk.children


def meta(name: str) -> dict:
    """The meta of the builder's weights at 224x224 (regnet_y_128gf: SWAG_LINEAR)."""
    return next(w.meta for w in get_model_weights(name) if w.transforms.keywords["crop_size"] == 224)


def test_every_torchvision_regnet_is_a_variant():
    assert len(BUILDERS) == 15
    assert sorted(VARIANTS) == sorted(BUILDERS)


@pytest.mark.parametrize("name", BUILDERS)
def test_stages_are_computed_as_torchvision_computes_them(name):
    spec = archc.load(SPEC, variant=name)
    expected = block_params(name)
    assert spec.lets["widths"] == expected.widths
    assert spec.lets["depths"] == expected.depths
    assert spec.lets["group_widths"] == expected.group_widths
    # ... and the network has those stages: names, blocks, widths, 3x3 groups, SE widths
    built = stages(spec)
    assert [s.name for s in built] == [f"block{i + 1}" for i in range(len(expected.widths))]
    assert [len(s.children) for s in built] == expected.depths
    assert [s.out_shape[0] for s in built] == expected.widths
    for stage, width, group_width in zip(built, expected.widths, expected.group_widths):
        assert stage.children[0].name == f"{stage.name}-0"
        conv = next(n for n in stage.children[-1].walk() if n.path.endswith(".f.b.0"))
        assert conv.params.groups == width // group_width


@pytest.mark.parametrize("name", BUILDERS)
def test_params_and_macs_match_the_published_figures(name):
    spec = archc.load(SPEC, variant=name)
    figures = meta(name)
    assert spec.param_count == figures["num_params"]
    assert abs(spec.macs / 1e9 - figures["_ops"]) <= 0.01 * figures["_ops"]


@pytest.mark.parametrize("name", SUBSET)
def test_weights_and_outputs_equal_torchvision(name):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    ours = archc.build(name, seed=0).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    initial = ours.state_dict()
    for key, tensor in ref.state_dict().items():  # same seed, same weights, bit for bit
        assert torch.equal(initial[key], tensor), key
    with torch.no_grad():  # weights far from the init, so every layer matters
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 160, 160)  # 224 in the generic parity test; RegNet pools adaptively
    with torch.no_grad():
        assert (ours(x) - ref(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", sorted(HEAVY))
def test_heavy_variants_have_torchvisions_keys_and_shapes(name):
    """Built on the meta device (no weights): the same state_dict keys in order, the same
    shapes, a strict load, and the same parameter count as the static one."""
    ref = reference_on_meta(name)
    with torch.device("meta"):
        ours = archc.build(name)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    assert sum(p.numel() for p in ours.parameters()) == archc.load(name).param_count


@pytest.mark.parametrize(
    "values",
    [
        {"depth": 10, "w_0": 24, "w_a": 36.0, "w_m": 2.5, "group_width": 8},  # 3 stages
        {"depth": 30, "w_0": 16, "w_a": 12.0, "w_m": 1.6, "group_width": 8},  # 6 stages
        {"depth": 13, "w_0": 64, "w_a": 30.0, "w_m": 2.2, "group_width": 24, "bottleneck_multiplier": 0.5},
    ],
)
def test_the_design_space_explored_with_set(values):
    """Other numbers give other stages (and numbers of stages), still torchvision's."""
    overrides = [f"params.{k}={v}" for k, v in values.items()]
    spec = archc.load(SPEC, variant="regnet_x_400mf", overrides=overrides)
    expected = regnet.BlockParams.from_init_params(**values)
    assert [s.out_shape[0] for s in stages(spec)] == expected.widths
    assert [len(s.children) for s in stages(spec)] == expected.depths
    assert spec.lets["group_widths"] == expected.group_widths
    ref = regnet.RegNet(expected).eval()
    with torch.device("meta"):
        ours = archc.build(spec)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]


def test_summary_shows_the_stages(capsys):
    from archc.cli import main

    assert main(["summary", SPEC, "--variant", "regnet_x_400mf", "--depth", "2"]) == 0
    out = capsys.readouterr().out
    for width, depth, name in zip([32, 64, 160, 400], [1, 2, 7, 12], ["block1", "block2", "block3", "block4"]):
        line = next(line for line in out.splitlines() if line.strip().startswith(name + " "))
        assert f"×{depth}" in line and f"{width}×" in line, line
    assert "widths = [32, 64, 160, 400]" in out and "depths = [1, 2, 7, 12]" in out


@pytest.mark.parametrize(
    "setting, blamed",
    [("params.w_0=20", "w_0"), ("params.w_m=1.0", "w_m"), ("params.w_a=-1.5", "w_a")],
)
def test_torchvisions_check_of_the_numbers_is_a_requirement(setting, blamed, capsys):
    """requires: refuses what BlockParams.from_init_params refuses, at the value given."""
    from archc.cli import main

    key, value = setting.split("=")
    x_400mf = {"depth": 22, "w_0": 24, "w_a": 24.48, "w_m": 2.54, "group_width": 16}
    x_400mf[key.split(".")[1]] = float(value) if "." in value else int(value)
    with pytest.raises(ValueError, match="Invalid RegNet settings"):
        regnet.BlockParams.from_init_params(**x_400mf)
    assert main(["validate", SPEC, "--variant", "regnet_x_400mf", "--set", setting]) == 1
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"--set {setting}:1:"), first
    assert "the spec requires w_a >= 0 and w_0 > 0 and w_m > 1 and w_0 % 8 == 0" in first
    assert f"(at params.{blamed})" in first


BAD_RANGE = """\
archc: 1
name: t
input: [3, 32, 32]
params:
  depth: 20000
let:
  ramp: "${[8 * i for i in range(depth)]}"
body:
  fc: {conv: {out: "${len(ramp)}", kernel: 1}}
"""


def test_a_range_past_the_limit_is_refused_at_the_value(write_spec, capsys):
    path = write_spec(BAD_RANGE)
    assert_spec_error(path, 5, "range(): gives 20,000 numbers; a list holds at most 10,000", capsys)


@pytest.mark.parametrize(
    "lines, line, words",
    [
        ({"let": '  xs: "${[w for w in 3]}"'}, 6, "a comprehension goes over a list, not int 3"),
        ({"let": '  xs: "${[w for w, g in [1, 2]]}"'}, 6, "cannot unpack 1 into 2 names"),
        ({"let": '  xs: "${(1, 2)}"'}, 6, "tuples are not allowed"),
        ({"let": '  n: "${3}"'}, 6, "let 'n' would hide the param of that name"),
        ({"let": '  xs: "${[n] * 2}"'}, 4, "* needs numbers, not list [2] (at params.n)"),  # the value it read
        ({"body": '{for: {each: 3, as: s, body: relu}}'}, 8, "each"),
        ({"body": '{for: {each: "${[1, 2]}", as: s, names: "b{t}", body: relu}}'}, 8, "{t} is unknown (usable: i, n, s)"),
        ({"body": '{for: {each: "${[1, 2]}", as: s, names: "b.{s}", body: relu}}'}, 8, "cannot contain '.'"),
        ({"body": '{for: {each: "${[]}", body: relu}}'}, 8, "for goes over an empty list"),
    ],
)
def test_errors_in_the_new_features_are_at_the_value(write_spec, capsys, lines, line, words):
    text = "archc: 1\nname: t\ninput: [3, 8, 8]\nparams: {n: 2}\nlet:\n"
    text += lines.get("let", "  xs: [1]") + "\nbody:\n"
    text += "  trunk: " + lines.get("body", "relu") + "\n"
    assert_spec_error(write_spec(text), line, words, capsys)

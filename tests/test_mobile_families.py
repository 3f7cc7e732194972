"""MobileNet V2, MobileNet V3 (small, large) and MNASNet (0_5, 0_75, 1_0, 1_3) against
torchvision's builders (issue 13): state_dict, initial weights, outputs, published figures,
static shapes, generated code, diagrams and the fused inference build; and the language
features they need (layer kinds as block parameters, floats as people type them,
make_divisible, defaults with expressions)."""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys

import pytest
import torch
from test_codegen import RUFF, factory, module
from torch import nn

import archc
from archc.backends import fuse, graphviz_backend
from archc.backends.codegen import generate
from archc.backends.torch_backend import check_shapes
from archc.spec import expr
from conftest import ROOT, SPECS
from reference import TORCHVISION

torchvision = pytest.importorskip("torchvision")

# builder -> (spec file, variant)
BUILDERS = {
    "mobilenet_v2": ("mobilenet_v2.yaml", None),
    "mobilenet_v3_small": ("mobilenet_v3.yaml", "mobilenet_v3_small"),
    "mobilenet_v3_large": ("mobilenet_v3.yaml", "mobilenet_v3_large"),
    "mnasnet0_5": ("mnasnet.yaml", "mnasnet0_5"),
    "mnasnet0_75": ("mnasnet.yaml", "mnasnet0_75"),
    "mnasnet1_0": ("mnasnet.yaml", "mnasnet1_0"),
    "mnasnet1_3": ("mnasnet.yaml", "mnasnet1_3"),
}
NAMES = list(BUILDERS)
SIZE = 96  # every one pools adaptively: a small input keeps the suite fast, parity holds anyway


@functools.cache
def spec(name: str):
    file, variant = BUILDERS[name]
    return archc.load(SPECS / file, variant=variant)


def reference(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(torchvision.models, name)(weights=None).eval()


def image(batch: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_initial_weights_and_outputs_match_torchvision(name):
    ref = reference(name)
    file, variant = BUILDERS[name]
    ours = archc.build(SPECS / file, variant=variant, seed=0).eval()  # the API takes variants
    assert list(ours.state_dict()) == list(ref.state_dict())
    initial = ours.state_dict()  # same seed, same construction and init order: same weights
    for key, tensor in ref.state_dict().items():
        assert torch.equal(initial[key], tensor), key
    # trained-looking weights and statistics, so the outputs are not near zero everywhere
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for key, tensor in ref.state_dict().items():  # in place: MNASNet's loader wants metadata
            if key.endswith("running_var"):
                tensor.uniform_(0.5, 1.5, generator=gen)
            elif tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=gen) * 0.1)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = image()
    with torch.no_grad():
        expected = ref(x)
        assert expected.abs().max() > 1e-3
        diff = (ours(x) - expected).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("name", NAMES)
def test_params_and_macs_match_published_figures(name):
    params, gflops = TORCHVISION[name]
    s = spec(name)
    assert s.param_count == params
    assert abs(s.macs / 1e9 - gflops) / gflops < 0.01
    assert s.name == name and s.output_shape == (1000,)


@pytest.mark.parametrize("name", NAMES)
def test_static_shapes_equal_runtime_shapes(name):
    model = archc.build(spec(name), seed=0).eval()
    assert check_shapes(model, spec(name), batch=1) == []


@pytest.mark.parametrize("name", NAMES)
def test_generated_code_is_standalone_and_equals_the_live_build(name, tmp_path):
    text = generate(spec(name))
    imports = [line for line in text.splitlines() if line.startswith(("import", "from"))]
    assert imports == ["import torch", "from torch import nn"]
    build = factory(module(SPECS / BUILDERS[name][0], text), text)
    torch.manual_seed(0)
    generated = build().eval()
    live = archc.build(spec(name), seed=0).eval()
    assert list(generated.state_dict()) == list(live.state_dict())
    for key, tensor in live.state_dict().items():  # its init loop is the live build's
        assert torch.equal(generated.state_dict()[key], tensor), key
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(generated(x), live(x), rtol=0, atol=1e-6)
    if RUFF is None and importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed")
    ruff = [RUFF] if RUFF else [sys.executable, "-m", "ruff"]
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    config = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    for args in (["check"], ["format", "--check", "--diff"]):
        result = subprocess.run([*ruff, *args, *config, str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", NAMES)
def test_draw_renders_the_conditional_skips(name):
    dot = graphviz_backend.digraph(spec(name)).source
    residuals = [n for n in spec(name).tree.walk() if n.kind == "residual"]
    added = [n for n in residuals if n.settings["use_res_connect"]]
    assert 0 < len(added) < len(residuals)
    assert dot.count("/add") >= len(added)
    assert all(f'"{n.path}/add"' not in dot for n in residuals if n not in added)


def perturbed(name: str) -> nn.Module:
    """Eval-mode model whose batch norms are far from the identity (as after training)."""
    model = archc.build(spec(name), seed=0)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 0.05, generator=gen)
    return model.eval()


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "mnasnet0_5"])
def test_fused_outputs_equal_unfused(name):
    model = perturbed(name)
    plan = fuse.plan(spec(name))
    # every batch norm follows a convolution (depthwise ones too): all fold
    assert sum(1 for f in plan if f.batchnorm) == sum(
        isinstance(m, nn.BatchNorm2d) for m in model.modules()
    )
    assert [(f.layer, f.batchnorm, f.activation) for f in plan] == [
        (f.layer, f.batchnorm, f.activation) for f in fuse.plan_modules(model)
    ]
    x = image()
    with torch.no_grad():
        expected = model(x)
        fused = archc.fuse(model, spec(name))
        got = fused(x)
    assert (got - expected).abs().max().item() / max(1.0, expected.abs().max().item()) <= 1e-4


def test_squeeze_excitation_block_is_torchvisions_with_hardsigmoid():
    ops = pytest.importorskip("torchvision.ops")
    s = archc.loads(
        "archc: 1\nname: se\ninput: [72, 7, 7]\n"
        "body:\n  se: {squeeze_excitation: {squeeze: 24, act: relu, scale: hardsigmoid}}\n"
    )
    ours = archc.build(s, seed=0).eval()
    ref = ops.SqueezeExcitation(72, 24, scale_activation=nn.Hardsigmoid).eval()
    assert [k.removeprefix("se.") for k in ours.state_dict()] == list(ref.state_dict())
    ref.load_state_dict({k.removeprefix("se."): v for k, v in ours.state_dict().items()})
    x = torch.randn(2, 72, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_batch_norm_settings_come_from_defaults():
    v3 = archc.build(spec("mobilenet_v3_small"), seed=0)
    norms = [m for m in v3.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 0.001 and m.momentum == 0.01 for m in norms)
    mnas = archc.build(spec("mnasnet0_5"), seed=0)
    norms = [m for m in mnas.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 1 - 0.9997 for m in norms)  # exactly torchvision's float


LAYER_KIND = """\
archc: 1
name: kinds
input: [4, 8, 8]
params: {act: hardswish}
blocks:
  cna:
    params: {act: relu}
    body:
      - {conv: {out: 4, kernel: 1}}
      - "${act}"
      - {"${act}": {inplace: true}}
body:
  a: {cna: {act: "${act}"}}
  b: {cna: {act: relu6}}
"""


def test_a_layer_kind_is_a_block_parameter():
    s = archc.loads(LAYER_KIND)
    model = archc.build(s, seed=0)
    assert [type(m).__name__ for m in model.a] == ["Conv2d", "Hardswish", "Hardswish"]
    assert [type(m).__name__ for m in model.b] == ["Conv2d", "ReLU6", "ReLU6"]
    assert model.a[2].inplace and not model.a[1].inplace
    code = generate(s)  # one class, the layer class its argument
    assert "def __init__(self, act: type[nn.Module]) -> None:" in code
    assert "act(), act(inplace=True)" in code
    assert "self.a = Cna(nn.Hardswish)" in code and "self.b = Cna(nn.ReLU6)" in code


def test_an_unknown_layer_kind_is_an_error_at_the_value(tmp_path):
    path = tmp_path / "kinds.yaml"
    path.write_text(LAYER_KIND.replace("params: {act: hardswish}", "params: {act: hardswishh}"))
    with pytest.raises(archc.SpecError) as info:
        archc.load(path)
    error = info.value
    assert (
        "gives 'hardswishh', which is not a layer or block type; did you mean 'hardswish'?"
        in error.message
    )
    assert (error.location.line, error.location.col) == (4, 15)  # where the user wrote it
    path.write_text(LAYER_KIND.replace("params: {act: hardswish}", "params: {act: 3}"))
    with pytest.raises(archc.SpecError, match="gives 3, which is not a layer"):
        archc.load(path)


@pytest.mark.parametrize(
    "text, value",
    [("1e-6", 1e-6), ("1e-3", 0.001), ("1E5", 100000.0), ("1.5e3", 1500.0), ("-2e-2", -0.02),
     ("5e+1", 50.0), ("0.001", 0.001), ("1_000", 1000), ("1e", "1e"), ("e5", "e5")],
)  # fmt: skip
def test_floats_as_people_type_them(text, value):
    doc = archc.loads(
        f"archc: 1\nname: f\ninput: [4]\nparams: {{v: {text}}}\nbody: [{{linear: 2}}]\n"
    )
    assert doc.params["v"] == value and type(doc.params["v"]) is type(value)


def test_a_float_in_exponent_form_is_a_valid_setting():
    s = archc.loads(
        "archc: 1\nname: f\ninput: [4, 4, 4]\ndefaults: {batchnorm: {eps: 1e-3}}\n"
        "body: [batchnorm, {batchnorm: {eps: 1e-6, momentum: 1e-2}}]\n"
    )
    model = archc.build(s, seed=0)
    assert (model[0].eps, model[1].eps, model[1].momentum) == (1e-3, 1e-6, 0.01)


@pytest.mark.parametrize(
    "v, divisor, expected",
    [(32, 8, 32), (16 * 0.5, 8, 8), (24 * 0.75, 8, 24), (40 * 1.3, 8, 56), (100, 8, 104),
     (3, 8, 8), (72 // 4, 8, 24), (960 // 4, 8, 240), (88 // 4, 8, 24), (13.0, 4, 12), (11, 8, 16)],
)  # fmt: skip
def test_make_divisible_is_torchvisions(v, divisor, expected):
    from torchvision.models._utils import _make_divisible
    from torchvision.models.mnasnet import _round_to_multiple_of

    assert expr.evaluate(f"make_divisible({v}, {divisor})", {}) == expected
    assert expected == _make_divisible(v, divisor) == _round_to_multiple_of(v, divisor)


def test_make_divisible_refuses_what_makes_no_sense():
    with pytest.raises(expr.ExprValueError, match="the divisor is a whole number"):
        expr.evaluate("make_divisible(32, 0)", {})
    with pytest.raises(expr.ExprValueError, match="takes numbers"):
        expr.evaluate("make_divisible(w, 8)", {"w": [1, 2]})


def test_a_defaults_expression_is_evaluated_and_located(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(
        "archc: 1\nname: d\ninput: [4, 4, 4]\nparams: {decay: 0.9997}\n"
        "defaults: {batchnorm: {momentum: '${1 - decay}'}}\nbody: [batchnorm]\n"
    )
    assert archc.build(path, seed=0)[0].momentum == 1 - 0.9997
    path.write_text(path.read_text().replace("1 - decay", "1 - decoy"))
    with pytest.raises(archc.SpecError, match="unknown name 'decoy'") as info:
        archc.load(path)
    assert info.value.location.line == 5

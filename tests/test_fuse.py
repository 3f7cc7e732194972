"""The inference build (`archc build --fuse`, `archc.fuse`): same outputs, batch norms folded."""

from __future__ import annotations

import copy
import functools
import pickle

import pytest
import torch
from torch import nn

import archc
from archc.backends.fuse import (
    EPILOGUES,
    FusedConv2d,
    FusedLinear,
    fuse,
    plan,
    plan_modules,
    summary,
)
from archc.cli import main
from conftest import MODELS

# specs with conv → batchnorm (→ relu) runs of several shapes: basic and bottleneck residuals,
# inception branches, pre-activation dense layers (only some batch norms fold), plain VGG,
# RegNetY (its projection registered before the body, grouped 3x3s, a gate between runs)
CANDIDATES = ["resnet18", "resnet50", "googlenet", "densenet121", "vgg11_bn", "alexnet", "regnet_y_400mf"]
NAMES = [name for name in CANDIDATES if name in MODELS]
TOLERANCE = 1e-4  # relative to the output's largest magnitude when above 1 (float32 rounding)


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    """How far apart two outputs are, on the TOLERANCE scale."""
    return (a - b).abs().max().item() / max(1.0, b.abs().max().item())


def small_input(spec, batch: int, gen: torch.Generator) -> torch.Tensor:
    """Half the spec's resolution (every parity model pools adaptively), to keep the suite fast."""
    c, h, w = spec.input_shape
    return torch.randn(batch, c, h // 2, w // 2, generator=gen)


@functools.cache
def perturbed(name: str, seed: int = 0):
    """The spec and an eval-mode model whose batch norms are far from the identity, as after
    training: running statistics measured on random images, random affine parameters."""
    spec = archc.load(name)
    model = archc.build(spec, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for module in norms:
            n = module.num_features
            module.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
            module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            module.momentum = None  # a plain average of what it sees
        model.train()
        model(small_input(spec, 4, gen))
        for module in norms:
            module.momentum = 0.1
    return spec, model.eval()


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "types": [(n, type(m)) for n, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
    }


def same(a: dict, b: dict) -> bool:
    return (
        a["types"] == b["types"] and a["training"] == b["training"] and a["grad"] == b["grad"]
        and a["state"].keys() == b["state"].keys()
        and all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    )  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_fused_outputs_equal_unfused(name):
    spec, model = perturbed(name)
    before = snapshot(model)
    x = small_input(spec, 2, torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        for options in ({}, {"prepack": False}, {"channels_last": True}):
            fused = fuse(model, spec, **options)
            diff = close(fused(x), expected)
            assert diff <= TOLERANCE, (options, diff)
    assert same(before, snapshot(model)), "fusing changed the unfused model"


@pytest.mark.parametrize("name", NAMES)
def test_folded_batch_norms_become_identity(name):
    spec, model = perturbed(name)
    fusions = plan(spec)
    fused = fuse(model, spec)
    modules = dict(fused.named_modules())
    originals = dict(model.named_modules())
    folded = [f for f in fusions if f.batchnorm]
    for fusion in fusions:
        original = originals[fusion.layer]
        assert isinstance(modules[fusion.layer], FusedConv2d if isinstance(original, nn.Conv2d) else FusedLinear)
        if fusion.batchnorm:
            assert isinstance(originals[fusion.batchnorm], nn.BatchNorm2d)
            assert type(modules[fusion.batchnorm]) is nn.Identity
            assert modules[fusion.layer].folded and modules[fusion.layer].bias is not None
        if fusion.activation:
            assert type(modules[fusion.activation]) is nn.Identity
            kind = modules[fusion.layer].activation
            assert type(originals[fusion.activation]) is EPILOGUES[kind].module
    bn_before = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    counts = summary(fused)
    assert counts["batchnorms_folded"] == len(folded)
    assert counts["batchnorms_left"] == bn_before - len(folded)
    assert not fused.training and not any(p.requires_grad for p in fused.parameters())
    if name.startswith(("resnet", "resnext", "googlenet", "vgg")):
        assert counts["batchnorms_left"] == 0  # every batch norm there follows a convolution


@pytest.mark.parametrize("name", NAMES)
def test_plan_from_ir_equals_plan_from_modules(name):
    spec, model = perturbed(name)
    key = [(f.layer, f.batchnorm, f.activation) for f in plan(spec)]
    assert key == [(f.layer, f.batchnorm, f.activation) for f in plan_modules(model)]
    assert archc.fuse(model) is not model  # the API without a spec uses the module plan


def test_plan_applies_to_torchvision_by_module_path():
    torchvision = pytest.importorskip("torchvision")
    spec = archc.load("resnet50")
    ref = torchvision.models.resnet50(weights=None).eval()
    fused = fuse(ref, spec)  # torchvision shares one ReLU per block: those stay, BN still folds
    assert summary(fused)["batchnorms_left"] == 0
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert close(fused(x), ref(x)) <= TOLERANCE


def test_build_fuse_api_and_weights_reloaded_after_packing():
    spec, model = perturbed("resnet18")
    fused = archc.build(spec, seed=0, fuse=True)
    assert summary(fused)["batchnorms_folded"] == 20
    fused.load_state_dict(fuse(model, spec).state_dict())  # new weights: the packed cache renews
    x = torch.randn(1, *spec.input_shape)
    with torch.no_grad():
        assert close(fused(x), model(x)) <= TOLERANCE
        clone = pickle.loads(pickle.dumps(fused))  # the packed weight is a cache, never saved
        assert close(clone(x), model(x)) <= TOLERANCE


def test_fused_conv_falls_back_where_packing_does_not_apply():
    spec, model = perturbed("resnet18")
    fused = fuse(model, spec).double()  # oneDNN's packed kernel takes float32 only
    x = torch.randn(1, *spec.input_shape, dtype=torch.float64)
    with torch.no_grad():
        # folding rounds the weights to float32 once; nothing else differs from float64
        assert close(fused(x), copy.deepcopy(model).double()(x)) <= 1e-5


def test_cli_build_fuse(capsys):
    argv = [
        "build",
        "resnet18",
        "--fuse",
        "--channels-last",
        "--check",
        "--depth",
        "1",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "20 batch norms folded" in out and "channels-last" in out
    assert "runtime shapes equal static shapes" in out


@pytest.mark.parametrize("kind", sorted(EPILOGUES))
def test_each_epilogue_runs_inside_the_layer_before_it(kind):
    """Every activation in EPILOGUES, after a conv + batch norm and after a linear layer, is
    absorbed by that layer (module replaced by Identity) and gives the eager result."""
    gen = torch.Generator().manual_seed(1)
    make = EPILOGUES[kind].module
    activations = [make(approximate="tanh") if kind == "gelu" else make(), make()]
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), activations[0],
        nn.Flatten(), nn.Linear(8 * 6 * 6, 16), activations[1], nn.Linear(16, 4),
    ).eval()  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
        model[1].running_var.uniform_(0.5, 2.0, generator=gen)
    x = torch.randn(2, 3, 6, 6, generator=gen) * 3
    fused = fuse(model)
    assert [type(m) for m in fused] == [
        FusedConv2d, nn.Identity, nn.Identity, nn.Flatten, FusedLinear, nn.Identity, FusedLinear,
    ]  # fmt: skip
    assert (fused[0].activation, fused[4].activation, fused[6].activation) == (kind, kind, "none")
    with torch.inference_mode():
        expected = model(x)
        assert close(fused(x), expected) <= 1e-5
    assert summary(fused)["activations_fused"] == 2

"""Combinators are defined once (archc.combinators); `gate` proves a new one needs nothing else."""

from __future__ import annotations

import re

import pytest
import torch

import archc
from archc.backends import fuse, graphviz_backend
from archc.combinators import COMBINATORS
from archc.resources import estimate
from archc.tables import rows
from conftest import ROOT

SE = """
archc: 1
name: se
input: [16, 7, 7]
body:
  se:
    gate:
      avgpool: {adaptive_avgpool: 1}
      fc1: {conv: {out: 4, kernel: 1}}
      activation: relu
      fc2: {conv: {out: 16, kernel: 1}}
      scale_activation: sigmoid
"""


def test_readme_lists_exactly_the_registry_combinators():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| combinator | what it builds |")[1].split("\n\n")[0]
    rows_ = [line for line in table.splitlines()[2:] if line.startswith("|")]
    expected = [f"| {c.syntax} | {c.meaning} |" for c in COMBINATORS.values()]
    assert rows_ == expected


def test_backends_name_no_combinator():
    """Backends reach each combinator's part through the registry: no string in their code is a
    combinator kind (docstrings and comments aside)."""
    import ast

    found = []
    for path in sorted((ROOT / "archc" / "backends").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        found += [
            f"{path.relative_to(ROOT)}:{n.lineno}: {n.value!r}"
            for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and n.value in COMBINATORS and id(n) not in docs
        ]
    assert found == []


def test_se_gate_matches_torchvision_squeeze_excitation():
    ops = pytest.importorskip("torchvision.ops")
    spec = archc.loads(SE)
    assert spec.output_shape == (16, 7, 7)
    model = archc.build(spec, seed=0).eval()
    reference = ops.SqueezeExcitation(16, 4).eval()
    assert [k.removeprefix("se.") for k in model.state_dict()] == list(reference.state_dict())
    reference.load_state_dict({k.removeprefix("se."): v for k, v in model.state_dict().items()})
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert spec.param_count == sum(p.numel() for p in reference.parameters())
    assert spec.macs == 16 * 4 * 2


def test_gate_in_every_backend():
    spec = archc.loads(SE)
    assert [r["type"] for r in rows(spec, 1)] == ["gate"]
    assert (
        estimate(spec).activations == 16 * 49 + (16 + 4 + 4 + 16 + 16) + 16 * 49
    )  # in, body, product
    assert [f.layer for f in fuse.plan(spec)] == ["se.fc1", "se.fc2"]
    assert fuse.plan(spec)[0].activation == "se.activation"
    model = archc.build(spec, seed=0).eval()
    assert [f.layer for f in fuse.plan_modules(model)] == ["se.fc1", "se.fc2"]
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(fuse.fuse(model, spec)(x), model(x), rtol=1e-5, atol=1e-5)
    source = graphviz_backend.digraph(spec).source
    assert '"se/mul"' in source and "×" in source


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "[{conv: {out: 8, kernel: 1}}]",
            "gate body gives 8×7×7, which does not broadcast over its input 16×7×7",
        ),
        ("[flatten]", "does not broadcast"),
        ("[{relu: {inplace: true}}]", "in-place relu"),
    ],
)
def test_gate_refuses_what_cannot_broadcast(body, message):
    with pytest.raises(archc.SpecError, match=re.escape(message)):
        archc.loads(f"archc: 1\nname: g\ninput: [16, 7, 7]\nbody:\n  g: {{gate: {body}}}\n")


def test_a_block_cannot_take_a_combinator_name():
    for kind in COMBINATORS:
        text = f"archc: 1\nname: g\ninput: [3]\nblocks:\n  {kind}: {{body: relu}}\nbody: [relu]\n"
        with pytest.raises(archc.SpecError, match="would hide the built-in layer type"):
            archc.loads(text)


# ---- primitives without a torch.nn class ------------------------------------------------------


def test_a_primitive_can_run_archc_own_module(monkeypatch):
    """TorchLayer(own=True) names a class of archc/backends/torch_modules.py: the live build
    uses it and its source is readable without torch (what codegen emits once)."""
    import ast
    from collections import OrderedDict

    from archc.primitives import PRIMITIVES, Identity, TorchLayer, own_source

    class Square(Identity):  # x * x: a gate with an empty body
        kind = "square"

        def torch_layer(self, p, shape):
            return TorchLayer("Gate", (OrderedDict(),), own=True)

    monkeypatch.setitem(PRIMITIVES, "square", Square())
    spec = archc.loads("archc: 1\nname: sq\ninput: [2, 3, 3]\nbody: [square]\n")
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(archc.build(spec)(x), x * x)
    tree = ast.parse(own_source("Gate"))
    assert [n.name for n in tree.body] == ["Gate"]
    with pytest.raises(KeyError):
        own_source("Conv2d")


def test_plan_modules_leaves_a_sequential_with_its_own_forward_alone():
    from torch import nn

    class Dense(nn.Sequential):  # as generated code writes it: conv and bn do not chain
        def forward(self, x):
            for layer in self:
                x = torch.cat([x, layer(x)], 1)
            return x

    plain = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    assert [f.batchnorm for f in fuse.plan_modules(plain)] == ["1"]
    assert fuse.plan_modules(Dense(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(4))) == []

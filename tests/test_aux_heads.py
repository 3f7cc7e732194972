"""Auxiliary heads (issue 14): a top-level layer with `head: {from, output}` reads an earlier
layer's output, runs in train mode only and is an extra output of the model. specs/googlenet.yaml
is torchvision's default googlenet() with both heads: same state_dict, weights, and outputs in
eval (the logits) and train mode (GoogLeNetOutputs(logits, aux_logits2, aux_logits1)); the live
build, the generated code, TorchScript and torch.export agree."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from test_codegen import factory, module, source

import archc
from archc.backends.torch_backend import check_shapes
from conftest import SPECS, assert_spec_error, run_archc

torchvision = pytest.importorskip("torchvision")
GOOGLENET = SPECS / "googlenet.yaml"
X = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))  # heads pool adaptively


def no_dropout(*models: torch.nn.Module) -> None:
    for model in models:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0


@pytest.fixture(scope="module")
def built():
    """torchvision's default googlenet, the spec's (built under the same seed) and the
    generated code's (with the spec's weights), built once."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torchvision.models.googlenet(weights=None)
    live = archc.build(archc.load(GOOGLENET), seed=0)
    text = source(GOOGLENET)
    generated = factory(module(GOOGLENET, text), text)()
    generated.load_state_dict(live.state_dict())
    return ref, live, generated


@pytest.fixture
def pair(built):
    """Fresh copies for each test: train-mode forwards update batch-norm statistics."""
    return copy.deepcopy(built[0]), copy.deepcopy(built[1])


@pytest.fixture
def generated(built):
    return copy.deepcopy(built[2])


def test_googlenet_is_the_default_builder_with_its_heads(pair):
    ref, ours = pair
    assert ref.aux_logits and ref.aux1 is not None
    assert list(ours.state_dict()) == list(ref.state_dict())  # aux1/aux2 between inception5b and fc
    for key, tensor in ref.state_dict().items():  # same construction and init order
        assert torch.equal(ours.state_dict()[key], tensor), key
    assert (
        sum(p.numel() for p in ours.parameters()) == 13_004_888 == archc.load(GOOGLENET).param_count
    )


def test_train_mode_returns_torchvision_outputs_eval_the_logits(pair):
    ref, ours = pair
    ref.train(), ours.train()
    try:
        torch.manual_seed(7)  # dropout on: the same RNG state gives the same masks, in order
        expected = ref(X)
        torch.manual_seed(7)
        got = ours(X)
        assert type(got).__name__ == type(expected).__name__ == "GoogLeNetOutputs"
        assert got._fields == expected._fields == ("logits", "aux_logits2", "aux_logits1")
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    finally:
        ref.eval(), ours.eval()
    with torch.no_grad():
        out = ours(X)
        assert isinstance(out, torch.Tensor)
        assert (out - ref(X)).abs().max().item() <= 1e-5


def test_heads_do_not_run_in_eval(pair):
    _, ours = pair
    ran = []
    handle = ours.aux1.register_forward_hook(lambda *_: ran.append(1))
    try:
        with torch.no_grad():
            ours.eval()(X)
        assert ran == []
        ours.train()
        with torch.no_grad():
            ours(X)
        assert ran == [1]
    finally:
        handle.remove()
        ours.eval()


def test_variant_without_heads_is_aux_logits_false():
    spec = archc.load(GOOGLENET, variant="googlenet_no_aux")
    assert spec.heads == [] and spec.param_count == 6_624_904
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = torchvision.models.googlenet(weights=None, aux_logits=False)
    ours = archc.build(spec, seed=0)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(torch.equal(ours.state_dict()[k], v) for k, v in ref.state_dict().items())
    no_dropout(ours)
    assert isinstance(ours.train()(X), torch.Tensor)  # no heads: a plain tensor in train mode too


def test_static_shapes_of_the_heads_equal_runtime(pair):
    spec = archc.load(GOOGLENET)
    assert check_shapes(pair[1], spec) == []  # the heads' modules are checked too
    result = run_archc("summary", str(GOOGLENET), "--json")
    data = json.loads(result.stdout)
    assert data["outputs"] == ["logits", "aux_logits2", "aux_logits1"]
    heads = {h["name"]: h for h in data["heads"]}
    assert [h["name"] for h in data["heads"]] == ["aux2", "aux1"]  # in output order
    assert heads["aux1"]["from"] == "inception4a" and heads["aux1"]["input_shape"] == [512, 14, 14]
    assert heads["aux2"]["from"] == "inception4d" and heads["aux2"]["input_shape"] == [528, 14, 14]
    assert heads["aux1"]["output_shape"] == [1000]
    assert sum(h["params"] for h in data["heads"]) == 13_004_888 - 6_624_904
    text = run_archc("summary", str(GOOGLENET), "--depth", "1").stdout
    assert "aux_logits1 1000 (head aux1 on inception4a)" in text


def test_generated_code_equals_live_in_both_modes(pair, generated):
    _, live = pair
    text = source(GOOGLENET)
    assert "class GoogLeNetOutputs(NamedTuple):" in text
    assert "if self.training:\n            aux_logits1 = self.aux1(x)" in text
    no_dropout(live, generated)
    with torch.no_grad():
        for train in (True, False):
            live.train(train), generated.train(train)
            got, expected = generated(X), live(X)
            if train:
                assert type(got).__name__ == "GoogLeNetOutputs" and got._fields == expected._fields
                for a, b in zip(got, expected, strict=True):
                    torch.testing.assert_close(a, b, rtol=0, atol=0)
            else:
                torch.testing.assert_close(got, expected, rtol=0, atol=0)
    live.eval(), generated.eval()


def test_torchscript_and_export(pair, generated):
    ref, live = pair
    no_dropout(ref, live, generated)
    with torch.no_grad():
        for train in (False, True):  # eval first: train-mode forwards update statistics
            for m in (ref, live, generated):
                m.train(train)
            expected = ref(X)
            # TorchScript returns the tuple in both modes, as torchvision's scripted model does
            scripted, scripted_ref = torch.jit.script(generated), torch.jit.script(ref)
            got, want = scripted(X), scripted_ref(X)
            assert got._fields == want._fields
            torch.testing.assert_close(got.logits, want.logits, rtol=0, atol=1e-5)
            if train:
                for a, b in zip(got, expected, strict=True):
                    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
            else:
                assert got.aux_logits1 is None and want.aux_logits1 is None
            for model in (live, generated) if train else (generated,):
                out = torch.export.export(model, (X,)).module()(X)
                if train:
                    for a, b in zip(out, expected, strict=True):
                        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
                else:
                    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    for m in (ref, live, generated):
        m.eval()


def test_draw_feeds_each_head_from_the_layer_it_reads():
    source_text = archc.draw(archc.load(GOOGLENET), depth=1).source
    edges = {line.split(" [")[0].strip() for line in source_text.splitlines() if "->" in line}
    assert {"inception4a -> aux1", "inception4d -> aux2", "inception4d -> inception4e"} <= edges
    assert {
        'aux1 -> "/output/aux_logits1 (train)"',
        'aux2 -> "/output/aux_logits2 (train)"',
    } <= edges
    assert not any(
        e.startswith(("aux1 -> aux2", "aux2 -> avgpool", "inception5b -> aux")) for e in edges
    )


HEAD = "archc: 1\nname: t\ninput: [3, 8, 8]\n"
BODY = "  c1: {conv: {out: 4, kernel: 3}}\n  c2: {conv: {out: 4, kernel: 3}}\n"
BAD = [
    (
        "later-layer",
        HEAD + "body:\n  h: {linear: 2, head: {from: c1}}\n" + BODY,
        5,
        "not an earlier top-level layer",
    ),
    (
        "unknown-layer",
        HEAD + "body:\n" + BODY + "  h: {conv: {out: 2, kernel: 1}, head: {from: c9}}\n",
        7,
        "not an earlier top-level layer",
    ),
    (
        "nested",
        HEAD
        + "body:\n"
        + BODY
        + "  s:\n    seq:\n      h: {conv: {out: 2, kernel: 1}, head: {from: c1}}\n",
        9,
        "only the model's top-level layers",
    ),
    (
        "unknown-setting",
        HEAD + "body:\n" + BODY + "  h: {conv: {out: 2, kernel: 1}, head: {from: c1, tap: 2}}\n",
        7,
        "unknown field 'tap'",
    ),
    (
        "inplace",
        HEAD + "body:\n" + BODY + "  h: {relu: {inplace: true}, head: {from: c1}}\n",
        7,
        "in-place",
    ),
    (
        "outputs-unknown",
        HEAD
        + "outputs: [y, nope]\nbody:\n"
        + BODY
        + "  h: {conv: {out: 2, kernel: 1}, head: {from: c1}}\n",
        4,
        "no head gives",
    ),
    (
        "outputs-missing",
        HEAD
        + "outputs: [y]\nbody:\n"
        + BODY
        + "  h: {conv: {out: 2, kernel: 1}, head: {from: c1}}\n",
        8,
        "missing from outputs",
    ),
    ("outputs-duplicate", HEAD + "outputs: [y, y]\nbody:\n" + BODY, 4, "once"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_heads_are_reported_where_written(case, write_spec, capsys):
    _, text, line, words = case
    assert_spec_error(write_spec(text), line, words, capsys)


def test_a_small_head_model_with_default_outputs(write_spec):
    spec = archc.load(
        write_spec(
            HEAD
            + "body:\n"
            + BODY
            + "  side: [{adaptive_avgpool: 1}, flatten, {linear: 3}], head: {from: c1}}\n  pool: {adaptive_avgpool: 1}\n".replace(
                "side: [", "side: {seq: ["
            ).replace("]], head", "]}, head")
        )
    )
    assert spec.outputs == ("out", "side") and spec.output_shape == (4, 1, 1)
    model = archc.build(spec, seed=0)
    out = model.train()(torch.randn(2, 3, 8, 8))
    assert (
        out._fields == ("out", "side")
        and out.side.shape == (2, 3)
        and out.out.shape == (2, 4, 1, 1)
    )
    assert check_shapes(model, spec) == []

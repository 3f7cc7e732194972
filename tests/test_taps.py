"""Feature taps (issue 15): `outputs:` entries naming top-level layers make the model return a
dict of those layers' outputs, in train and eval mode; `include_top: false` drops the layers
after the last tap. ResNet-50 with taps [layer2, layer3, layer4] gives what torchvision's
IntermediateLayerGetter and create_feature_extractor give for the same weights; the static
shapes (summary) are the runtime ones; generated code is the live model; torchvision's
FeaturePyramidNetwork runs on top; a tap that names no layer is located."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from test_codegen import factory, module

import archc
from archc.backends.codegen import generate
from archc.backends.torch_backend import check_shapes
from conftest import assert_spec_error, run_archc

torchvision = pytest.importorskip("torchvision")
from torchvision.models._utils import IntermediateLayerGetter  # noqa: E402
from torchvision.models.feature_extraction import create_feature_extractor  # noqa: E402

TAPS = ["outputs=[layer2, layer3, layer4]"]
HEADLESS = [*TAPS, "include_top=false"]
X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def resnet50():
    """The spec's ResNet-50 with taps (head kept), and torchvision's with its weights."""
    ours = archc.build("resnet50", overrides=TAPS, seed=0).eval()
    ref = torchvision.models.resnet50(weights=None).eval()
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def close(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)


def test_resnet50_taps_equal_torchvisions_feature_extractors(resnet50):
    ours, ref = resnet50
    layers = {"layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}
    with torch.no_grad():
        got = ours(X)
        assert isinstance(got, dict) and list(got) == ["layer2", "layer3", "layer4"]
        close(got, IntermediateLayerGetter(ref, layers)(X))
        close(got, create_feature_extractor(ref, layers)(X))
    assert [tuple(v.shape) for v in got.values()] == [(2, 512, 8, 8), (2, 1024, 4, 4), (2, 2048, 2, 2)]


def test_train_mode_returns_the_dict_too(resnet50):
    ours, ref = copy.deepcopy(resnet50[0]), copy.deepcopy(resnet50[1])
    getter = IntermediateLayerGetter(ref, {"layer2": "layer2", "layer3": "layer3", "layer4": "layer4"})
    ours.train(), getter.train()
    close(ours(X), getter(X))  # batch statistics: the same, as every layer is the same


def test_include_top_false_drops_avgpool_and_fc():
    spec = archc.load("resnet50", overrides=HEADLESS)
    assert [n.name for n in spec.tree.children][-2:] == ["layer3", "layer4"]
    assert spec.output_shape == (2048, 7, 7)
    fc = 2048 * 1000 + 1000
    assert spec.param_count == 25_557_032 - fc == 23_508_032
    ours = archc.build(spec, seed=0).eval()
    keys = list(ours.state_dict())
    assert not any(k.startswith(("fc.", "avgpool.")) for k in keys)
    assert sum(p.numel() for p in ours.parameters()) == spec.param_count
    ref = torchvision.models.resnet50(weights=None).eval()
    getter = IntermediateLayerGetter(ref, {"layer2": "layer2", "layer3": "layer3", "layer4": "layer4"})
    assert keys == list(getter.state_dict())  # the getter drops what follows layer4 as well
    getter.load_state_dict(ours.state_dict())
    with torch.no_grad():
        close(ours(X), getter(X))


def test_static_tap_shapes_equal_runtime():
    spec = archc.load("resnet50", overrides=TAPS)
    model = archc.build(spec, seed=0)
    assert check_shapes(model, spec) == []
    data = archc.summary(spec)
    assert data["taps"] == [
        {"name": "layer2", "output_shape": [512, 28, 28]},
        {"name": "layer3", "output_shape": [1024, 14, 14]},
        {"name": "layer4", "output_shape": [2048, 7, 7]},
    ]
    with torch.no_grad():
        out = model.eval()(torch.randn(1, *spec.input_shape))
    assert {k: list(v.shape[1:]) for k, v in out.items()} == {t["name"]: t["output_shape"] for t in data["taps"]}


def test_summary_cli_prints_each_tap(tmp_path):
    args = ("summary", "resnet50", "--set", "outputs=[layer2,layer3,layer4]", "--set", "include_top=false")
    text = run_archc(*args, "--depth", "1").stdout
    assert "returns a dict: layer2 512×28×28, layer3 1024×14×14, layer4 2048×7×7" in text
    assert "fc " not in text and "total params: 23,508,032" in text
    data = json.loads(run_archc(*args, "--json").stdout)
    assert data["outputs"] == ["layer2", "layer3", "layer4"]
    assert [t["output_shape"] for t in data["taps"]] == [[512, 28, 28], [1024, 14, 14], [2048, 7, 7]]


def test_generated_code_equals_live():
    spec = archc.load("resnet50", overrides=HEADLESS)
    text = generate(spec)
    assert 'return {"layer2": layer2, "layer3": layer3, "layer4": layer4}' in text
    assert "-> dict[str, torch.Tensor]:" in text and "self.fc" not in text
    generated = factory(module("taps", text), text)()
    live = archc.build(spec, seed=0)
    assert [(k, v.shape) for k, v in generated.state_dict().items()] == [
        (k, v.shape) for k, v in live.state_dict().items()
    ]
    generated.load_state_dict(live.state_dict())
    with torch.no_grad():
        close(generated.eval()(X), live.eval()(X))
        close(torch.jit.script(generated)(X), live(X))
        close(torch.export.export(generated, (X,)).module()(X), live(X))


def test_feature_pyramid_network_on_top():
    spec = archc.load("resnet50", overrides=HEADLESS)
    taps = archc.summary(spec)["taps"]
    backbone = archc.build(spec, seed=0).eval()
    fpn = torchvision.ops.FeaturePyramidNetwork([t["output_shape"][0] for t in taps], 256).eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pyramid = fpn(backbone(x))
    assert list(pyramid) == ["layer2", "layer3", "layer4"]
    assert [tuple(v.shape) for v in pyramid.values()] == [(1, 256, 28, 28), (1, 256, 14, 14), (1, 256, 7, 7)]
    assert [tuple(v.shape[2:]) for v in pyramid.values()] == [tuple(t["output_shape"][1:]) for t in taps]


def test_a_tapped_layer_is_not_fused_into_what_follows():
    """`--fuse` folds bn1 (and relu) into conv1 unless a tap reads conv1's own output."""
    spec = archc.load("resnet18", overrides=["outputs=[conv1, layer1]", "include_top=false"])
    model = archc.build(spec, seed=0).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
        expected = model(X)
        got = archc.fuse(model, spec)(X)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)


def test_live_model_scripts_when_it_did_before():
    spec = archc.load("alexnet", overrides=["outputs=[features, classifier]"])
    model = archc.build(spec, seed=0).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        close(torch.jit.script(model)(x), model(x))
    assert [tuple(v.shape[1:]) for v in model(x).values()] == [(256, 6, 6), (1000,)]


def test_taps_with_heads_return_the_heads_in_train_mode_only():
    overrides = ["outputs=[inception4e, aux_logits2, fc, aux_logits1]"]
    spec = archc.load("googlenet", overrides=overrides)
    assert spec.taps == ("inception4e", "fc") and spec.outputs == ("inception4e", "aux_logits2", "fc", "aux_logits1")
    live = archc.build(spec, seed=0)
    text = generate(spec)
    generated = factory(module("taps", text), text)()
    generated.load_state_dict(live.state_dict())
    for m in (*live.modules(), *generated.modules()):
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for train, keys in ((True, list(spec.outputs)), (False, ["inception4e", "fc"])):
            live.train(train), generated.train(train)
            got, expected = generated(x), live(x)
            assert list(expected) == keys
            close(got, expected)
    assert check_shapes(live, spec) == []


def test_include_top_drops_heads_after_the_last_tap():
    spec = archc.load("googlenet", overrides=["outputs=[inception4c]", "include_top=false"])
    assert spec.heads == [] and [n.name for n in spec.tree.children][-1] == "inception4c"
    assert spec.outputs == ("inception4c",)


def test_draw_gives_each_tap_an_output():
    source = archc.draw(archc.load("resnet50", overrides=HEADLESS), depth=1).source
    edges = {line.split(" [")[0].strip() for line in source.splitlines() if "->" in line}
    assert {'layer2 -> "/output/layer2"', 'layer3 -> "/output/layer3"', 'layer4 -> "/output/layer4"'} <= edges
    assert "layer2 -> layer3" in edges and '"/output"' not in source


HEAD = "archc: 1\nname: t\ninput: [3, 8, 8]\n"
BODY = (
    "body:\n  c1: {conv: {out: 4, kernel: 3}}\n  s: {seq: {a: relu, b: {conv: {out: 4, kernel: 1}}}}\n"
    "  r: {residual: {body: {c: {conv: {out: 4, kernel: 3, padding: 1}}}}}\n  fc: {conv: {out: 2, kernel: 1}}\n"
)
BAD = [
    ("unknown", HEAD + "outputs: [c1, c9]\n" + BODY, 4, "outputs names 'c9'", "c9]"),
    ("typo-first", HEAD + "outputs: [fc1]\n" + BODY, 4, "did you mean 'fc'?", "fc1]"),
    ("in-residual", HEAD + "outputs: [r.c]\n" + BODY, 4, "a feature tap is a layer of a sequence", "r.c]"),
    ("head-by-layer", HEAD + "outputs: [c1, h]\n" + BODY + "  h: {conv: {out: 2, kernel: 1}, head: {from: c1, output: side}}\n", 4, "'h' is a head", "h]"),
    ("inplace-after", HEAD + "outputs: [c1]\n" + BODY.replace("a: relu", "a: {relu: {inplace: true}}"), 7, "would overwrite", "{relu"),
    ("no-taps", HEAD + "include_top: false\n" + BODY, 4, "include_top: false", "false"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_taps_are_reported_where_written(case, write_spec, capsys):
    _, text, line, words, at = case
    path = write_spec(text)
    assert_spec_error(path, line, words, capsys)
    with pytest.raises(archc.SpecError) as info:
        archc.load(path)
    assert info.value.location.col == text.splitlines()[line - 1].index(at) + 1


def test_a_tap_set_on_the_command_line_is_located_in_the_argument():
    result = run_archc("validate", "resnet50", "--set", "outputs=[layer2,layr3]")
    assert result.returncode == 1
    first = result.stderr.splitlines()[0]
    assert first.startswith("--set outputs=[layer2,layr3]:1:17: error: outputs names 'layr3'"), result.stderr
    assert "did you mean 'layer3'?" in first and "Traceback" not in result.stderr


def test_a_small_spec_with_taps(write_spec):
    spec = archc.load(write_spec(HEAD + "outputs: [s, c1]\n" + BODY))
    assert spec.taps == ("s", "c1") and spec.outputs == ("s", "c1")
    model = archc.build(spec, seed=0)
    out = model(torch.randn(2, 3, 8, 8))
    assert list(out) == ["s", "c1"]  # the order of outputs:, not of the body
    assert tuple(out["s"].shape) == (2, 4, 6, 6) and tuple(out["c1"].shape) == (2, 4, 6, 6)
    assert check_shapes(model, spec) == []


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program", "onnx"])
def test_export_keeps_every_tap(fmt, write_spec, tmp_path):
    from archc.cli import main

    path = write_spec(HEAD + BODY)
    out = tmp_path / f"m.{fmt}"
    args = ["export", str(path), "--set", "outputs=[c1, s]", "--set", "include_top=false"]
    if fmt == "onnx":
        ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    assert main([*args, "--format", fmt, "-o", str(out)]) == 0
    live = archc.build(archc.load(path, overrides=["outputs=[c1, s]", "include_top=false"]), seed=0).eval()
    x = torch.randn(1, 3, 8, 8)
    expected = live(x)
    assert list(expected) == ["c1", "s"]
    if fmt == "onnx":
        session = ort.InferenceSession(str(out))
        assert [o.name for o in session.get_outputs()] == ["c1", "s"]
        got = dict(zip(["c1", "s"], map(torch.from_numpy, session.run(None, {"input": x.numpy()}))))
    else:
        loaded = torch.jit.load(str(out)) if fmt == "torchscript" else torch.export.load(str(out)).module()
        got = loaded(x)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5)


def test_the_readme_example_runs_as_pasted():
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    (code,) = [b for b in blocks if "FeaturePyramidNetwork" in b]
    scope: dict = {}
    with torch.no_grad():
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (the README's own example)
    assert list(scope["features"]) == ["layer2", "layer3", "layer4"]
    assert [tuple(v.shape) for v in scope["pyramid"].values()] == [(1, 256, 28, 28), (1, 256, 14, 14), (1, 256, 7, 7)]


def test_taps_inside_stages_equal_create_feature_extractor():
    """`layer3.2`: a block of a stage; include_top drops what runs after it, in layer3 too."""
    spec = archc.load("resnet50", overrides=["outputs=[layer1, layer3.2]", "include_top=false"])
    assert spec.taps == ("layer1", "layer3.2") and spec.output_shape == (1024, 14, 14)
    assert [c.name for c in spec.tree.children[-1].children] == ["0", "1", "2"]
    live = archc.build(spec, seed=0).eval()
    ref = torchvision.models.resnet50(weights=None).eval()
    keys = list(live.state_dict())
    assert keys == [k for k in ref.state_dict() if k in live.state_dict()] and keys[-1] == "layer3.2.bn3.num_batches_tracked"
    ref.load_state_dict(live.state_dict(), strict=False)
    assert check_shapes(live, spec) == []
    with torch.no_grad():
        close(live(X), create_feature_extractor(ref, {"layer1": "layer1", "layer3.2": "layer3.2"})(X))
    text = generate(spec)
    assert "layer3_2 = self.layer3[2](x)" in text and 'return {"layer1": layer1, "layer3.2": layer3_2}' in text
    generated = factory(module("taps-nested", text), text)()
    generated.load_state_dict(live.state_dict())
    with torch.no_grad():
        close(generated.eval()(X), live(X))
        close(torch.jit.script(generated)(X), live(X))


def test_taps_in_vgg_features_for_a_perceptual_loss():
    overrides = ["outputs=[features.3, features.8, features.15]", "include_top=false"]
    spec = archc.load("vgg16", overrides=overrides)
    live = archc.build(spec, seed=0).eval()
    assert check_shapes(live, spec) == [] and len(live.features) == 16
    assert [t["output_shape"] for t in archc.summary(spec)["taps"]] == [[64, 224, 224], [128, 112, 112], [256, 56, 56]]
    ref = torchvision.models.vgg16(weights=None).eval()
    ref.load_state_dict(live.state_dict(), strict=False)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        nodes = {"features.3": "features.3", "features.8": "features.8", "features.15": "features.15"}
        close(live(x), create_feature_extractor(ref, nodes)(x))


def test_a_tap_inside_a_sequence_of_a_small_spec(write_spec):
    spec = archc.load(write_spec(HEAD + "outputs: [s.a, fc]\n" + BODY.replace("a: relu", "a: sigmoid")))
    model = archc.build(spec, seed=0)
    x = torch.randn(2, 3, 8, 8)
    out = model(x)
    assert list(out) == ["s.a", "fc"]
    with torch.no_grad():
        torch.testing.assert_close(out["s.a"], torch.sigmoid(model.c1(x)))
    assert check_shapes(model, spec) == []
    text = generate(spec)
    generated = factory(module("taps-small", text), text)()
    generated.load_state_dict(model.state_dict())
    close(generated(x), out)
    edges = archc.draw(spec).source
    assert '"s.a" -> "/output/s.a"' in edges


def test_a_classifiers_checkpoint_loads_strictly_into_its_backbone(tmp_path):
    """include_top: false leaves fc out: its tensors in a torchvision checkpoint are reported as
    dropped, not unexpected, so strict loading works; a key of no layer at all still fails."""
    ref = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path / "resnet50.pth"
    torch.save({"model": ref.state_dict()}, path)
    spec = archc.load("resnet50", overrides=["outputs=[layer2, layer3.2]", "include_top=false"])
    backbone = archc.build(spec, weights=path).eval()
    report = backbone.load_report
    assert report.unexpected == [] and report.missing == []
    assert {k for k, _ in report.dropped} == {k for k in ref.state_dict() if k.startswith(("layer3.3", "layer3.4", "layer3.5", "layer4", "fc"))}
    assert "of layers include_top: false leaves out, ignored" in report.format()
    with torch.no_grad():
        close(backbone(X), create_feature_extractor(ref, {"layer2": "layer2", "layer3.2": "layer3.2"})(X))
    state = {**ref.state_dict(), "head.weight": torch.zeros(1)}
    torch.save(state, path)
    with pytest.raises(archc.ArchcError, match="head.weight"):
        archc.build(spec, weights=path)


def test_draw_marks_a_tap_inside_a_collapsed_box_and_an_open_one():
    spec = archc.load("resnet50", overrides=["outputs=[layer1, layer3.2]", "include_top=false"])

    def edges(depth):
        source = archc.draw(spec, depth=depth).source
        return {line.split(" [")[0].strip() for line in source.splitlines() if "/output" in line and "->" in line}

    assert edges(1) == {'layer1 -> "/output/layer1"', 'layer3 -> "/output/layer3.2"'}
    assert edges(None) == {'"layer1.2.relu" -> "/output/layer1"', '"layer3.2.relu" -> "/output/layer3.2"'}

"""archc codegen: standalone, formatted, deterministic source that builds the live model.

Models are compared on the meta device first (state_dict keys, order, shapes: no memory, no
init), then both get the same random weights and run on a small input: this keeps VGG-sized
specs cheap. Init order is checked separately, on small specs, by seeding both builds.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import math
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import pytest
import torch

import archc
from archc.backends.codegen import generate
from archc.outputs import MARKER
from conftest import HEAVY, MODELS, ROOT, SPECS, run_archc, shipped_models

RUFF = shutil.which("ruff") or (
    str(ROOT / ".venv/bin/ruff") if (ROOT / ".venv/bin/ruff").exists() else None
)
GENERATED = ROOT / "generated"
ALLOWED_IMPORTS = {"torch", "collections", "typing", "math", "__future__"}

RESIDUALS = """
archc: 1
name: residual_zoo
input: [3, 16, 16]
params: {num_classes: 10, slope: 0.2}
blocks:
  pre_act:
    doc: Pre-activation residual, identity shortcut, nothing after the sum.
    params: {width: ~, slope: 0.01}
    body:
      residual:
        body:
          - batchnorm
          - relu
          - {conv: {out: "${width}", kernel: 3, padding: 1}}
          - batchnorm
          - {leaky_relu: {negative_slope: "${slope}"}}
          - {conv: {out: "${width}", kernel: 3, padding: 1}}
        shortcut: identity
        post: none
  pooled:
    params: {width: ~, stride: 1}
    body:
      residual:
        body:
          conv: {conv: {out: "${width}", kernel: 3, stride: "${stride}", padding: 1, bias: false}}
          bn: batchnorm
        shortcut: {custom: {pool: {avgpool: {kernel: 1, stride: "${stride}"}}}}
        post: relu
  projected:
    params: {width: ~}
    body:
      residual:
        body:
          conv: {conv: {out: "${width}", kernel: 3, padding: 1}}
          act: {relu6: {inplace: true}}
        shortcut: {projection: {name: proj, batchnorm: false, bias: true, always: true}}
        post: hardswish
body:
  stem: {conv: {out: 8, kernel: 3, padding: 1}}
  pre: {stage: {block: pre_act, depth: 3, width: 8, slope: "${slope}"}}
  pooled: {stage: {block: pooled, depth: 3, width: 8, stride: 2}}
  proj: {projected: {width: 12}}
  plain:
    residual:
      body: [{conv: {out: 12, kernel: 1}}, {batchnorm: {momentum: 0.2, eps: 0.001}}]
      shortcut: identity
      post: gelu
  auto:
    residual:
      body: {conv: {conv: {out: 16, kernel: 3, stride: 2, padding: 1}}}
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  head: {linear: "${num_classes}"}
"""

BRANCHES = """
archc: 1
name: branches
input: [3, 16, 16]
params: {num_classes: 5, growth: 4, p: 0.25}
init:
  conv: {weight: {kaiming_uniform: {nonlinearity: relu}}, bias: zeros}
  linear: {weight: {normal: {std: 0.02}}, bias: {constant: 0.1}}
  batchnorm: {weight: ones}
blocks:
  mixed:
    params: {a: ~, b: ~}
    body:
      parallel:
        left: {conv: {out: "${a}", kernel: 1}}
        mid:
          inline: true
          seq: {mid_conv: {conv: {out: "${b}", kernel: 3, padding: 1}}, mid_act: silu}
        right: [{maxpool: {kernel: 3, stride: 1, padding: 1}}, {conv: {out: "${a}", kernel: 1}}]
  tiny:
    params: {g: ~}
    body: [batchnorm, relu, {conv: {out: "${g}", kernel: 3, padding: 1, bias: false}}]
body:
  m1: {mixed: {a: 4, b: 6}}
  m2: {mixed: {a: 6, b: 2}}
  dense1: {dense: {block: tiny, depth: 5, g: "${growth}", names: "layer{i}", start: 1}}
  dense2: {dense: {block: tiny, depth: 1, g: 3}}
  dense3: {dense: {block: tiny, depth: 2, g: 2}}
  pool: {adaptive_maxpool: 2}
  flat: flatten
  heads:
    parallel:
      h1: {linear: 6}
      h2: [{linear: 4}, tanh]
  norm: batchnorm
  drop: {dropout: "${p}"}
  out: {linear: "${num_classes}"}
"""

INLINE = """
archc: 1
name: inline_zoo
input: [1, 32, 32]
params: {num_classes: 3, p: 0.25, inplace: true}
init:
  conv: {weight: {xavier_uniform: {gain: 1.0}}}
blocks:
  unit:
    params: {out: ~, pool: false, inplace: false}
    body:
      inline: true
      seq:
        - {conv: {out: "${out}", kernel: 3, padding: 1}}
        - {relu: {inplace: "${inplace}"}}
        - {maxpool: 2, if: "${pool}"}
  grow:
    body: [{conv: {out: "${in_channels + 2}", kernel: 1}}, sigmoid]
  twice:
    body: [{conv: {out: "${in_channels * 2}", kernel: 1}}, hardswish]
  opt:
    params: {width: ~, extra: false}
    body:
      seq:
        conv: {conv: {out: "${width}", kernel: 3, padding: 1}}
        extra: {conv: {out: "${width}", kernel: 1}, if: "${extra}"}
        act: relu
  convs:
    params: {n: ~, out: ~}
    body:
      - {stage: {block: unit, depth: "${n}", out: "${out}"}, inline: true}
      - {avgpool: {kernel: 2, ceil_mode: true}}
body:
  - {stage: {block: unit, depth: 3, out: 4, inplace: "${inplace}"}, inline: true}
  - {unit: {out: 6, pool: true}, inline: true}
  - {stage: {block: grow, depth: 4}}
  - {stage: {block: twice, depth: 3}}
  - {opt: {width: 8}}
  - {opt: {width: 8, extra: true}}
  - {stage: {block: opt, depth: 3, width: 5, names: "b{i}"}}
  - {convs: {n: 1, out: 6}}
  - {convs: {n: 3, out: 7}}
  - {adaptive_avgpool: 1}
  - flatten
  - {dropout: "${p}"}
  - {linear: "${num_classes}"}
"""

NAMES = """
archc: 1
name: odd_names
input: [3, 8, 8]
body:
  stem:
    seq:
      conv: {conv: {out: 4, kernel: 3, padding: 1}}
      rest: {inline: true, seq: [relu, {conv: {out: 4, kernel: 1}}]}
  res:
    residual:
      body: [{conv: {out: 4, kernel: 3, padding: 1}}, batchnorm]
      shortcut: identity
  locals:
    residual:
      body: {out: {conv: {out: 4, kernel: 1}}, identity: batchnorm}
      shortcut: {custom: {x: {conv: {out: 4, kernel: 1}}}}
  fork:
    parallel:
      x: {conv: {out: 2, kernel: 1}}
      out: {inline: true, seq: {identity: {conv: {out: 2, kernel: 1}}, act: relu}}
  numbered: {parallel: [{conv: {out: 2, kernel: 1}}, [{conv: {out: 3, kernel: 1}}, relu]]}
  later: {stage: {block: basic, depth: 2, width: 6, names: "block{i}"}}
  x: {conv: {out: 4, kernel: 1}}
  lrn: {lrn: 3}
  pool: {avgpool: {kernel: 3, stride: 2, ceil_mode: true}}
  id: identity
"""

HOSTILE = r'''
archc: 1
name: hostile
description: 'Ends with a quote " and has """ triple quotes, a backslash \ and a \n'
input: [2, 8, 8]
params: {range: 3, m: 2}
blocks:
  weird:
    doc: 'Doc with """ inside and a trailing backslash \'
    params: {range: ~, self: 1}
    body:
      seq:
        conv: {conv: {out: "${range}", kernel: "${self}"}}
        act: relu
body:
  a: {weird: {range: 4}}
  b: {weird: {range: "${range}", self: 3}}
  c: {weird: {range: "${m}"}}
'''

DEEP = """
archc: 1
name: deep
input: [4, 8, 8]
blocks:
  res:
    params: {width: ~}
    body:
      residual:
        body: {conv: {conv: {out: "${width}", kernel: 3, padding: 1, bias: false}}, bn: batchnorm}
body:
  stem: {conv: {out: 8, kernel: 1}}
  blocks: {stage: {block: res, depth: DEPTH, width: 8}}
  pool: {adaptive_avgpool: 1}
  flat: flatten
  fc: {linear: 2}
"""

GATES = """
archc: 1
name: gates
input: [8, 12, 12]
blocks:
  se_block:
    params: {width: ~, squeeze: 4}
    body:
      seq:
        conv: {conv: {out: "${width}", kernel: 3, padding: 1}}
        act: relu
        se:
          gate:
            avgpool: {adaptive_avgpool: 1}
            fc1: {conv: {out: "${squeeze}", kernel: 1}}
            activation: relu
            fc2: {conv: {out: "${width}", kernel: 1}}
            scale_activation: sigmoid
body:
  blocks: {stage: {block: se_block, depth: 3, width: 8}}
  wider: {se_block: {width: 16, squeeze: 2}}
  spatial: {gate: [{conv: {out: 1, kernel: 3, padding: 1}}, sigmoid]}
  numbered: {gate: [sigmoid]}
  res:
    residual:
      body: [{conv: {out: 16, kernel: 1}}, {gate: {pool: {adaptive_avgpool: 1}, act: hardswish}}]
      shortcut: identity
  pool: {adaptive_avgpool: 1}
  flat: flatten
  fc: {linear: 3}
"""

SYNTHETIC = {
    "gates": GATES,
    "residuals": RESIDUALS,
    "branches": BRANCHES,
    "inline": INLINE,
    "names": NAMES,
    "hostile": HOSTILE,
}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    for name, text in SYNTHETIC.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


@cache
def source(path: Path) -> str:
    return generate(archc.load(path))


MODULES = Path(tempfile.mkdtemp(prefix="archc-codegen-"))


def module(path: Path, text: str | None = None):
    """Import generated source from a file of its own, as a user would (TorchScript reads it)."""
    text = text if text is not None else source(path)
    file = MODULES / f"gen_{hashlib.sha1(f'{path}{text}'.encode()).hexdigest()[:16]}.py"
    file.write_text(text)
    spec = importlib.util.spec_from_file_location(file.stem, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[file.stem] = mod
    spec.loader.exec_module(mod)
    return mod


def factory(mod, text: str):
    """The function the file ends with (named after the spec file)."""
    name = [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)][-1]
    return getattr(mod, name)


def structure(model: torch.nn.Module) -> list[tuple[str, tuple]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def random_weights(state: dict, seed: int = 0) -> dict:
    """Weights that keep activations in a sane range (He-scaled), batch-norm statistics near 1."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.dtype.is_floating_point:
            out[key] = torch.zeros(value.shape, dtype=value.dtype)
            continue
        t = torch.empty(value.shape).uniform_(-1, 1, generator=g)
        if key.endswith("running_var"):
            t = t.abs() * 0.5 + 0.75
        elif value.dim() >= 2:
            t *= math.sqrt(6 / math.prod(value.shape[1:]))
        elif key.endswith("weight"):
            t = t * 0.25 + 1
        else:
            t *= 0.1
        out[key] = t
    return out


def input_size(model: torch.nn.Module, spec) -> tuple[int, ...]:
    """The smallest square input (down from the spec's) the network takes: shapes on meta."""
    shape = spec.input_shape
    if len(shape) != 3:
        return shape
    for size in (32, 64, 96, 128, 160):
        if size >= shape[1]:
            break
        try:
            with torch.no_grad():
                out = model(torch.empty(1, shape[0], size, size, device="meta"))
        except RuntimeError:
            continue
        if tuple(out.shape[1:]) == spec.output_shape:
            return (shape[0], size, size)
    return shape


def assert_equals_live(path: Path, text: str | None = None) -> None:
    spec = archc.load(path)
    text = text if text is not None else source(path)
    build = factory(module(path, text), text)
    with torch.device("meta"):
        live = archc.build(spec)
        ours = build()
    assert structure(ours) == structure(live)
    if path in HEAVY:  # the state_dict keys and shapes only: see conftest.HEAVY
        return
    x_shape = input_size(ours.eval(), spec)
    weights = random_weights(live.state_dict())
    live.load_state_dict(weights, assign=True)
    ours.load_state_dict(weights, assign=True)
    x = torch.randn(2, *x_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = live.eval()(x.clone()), ours.eval()(x.clone())  # inplace layers
    assert torch.isfinite(expected).all() and expected.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


# ---- every shipped spec -------------------------------------------------------------------------


@pytest.mark.parametrize("path", MODELS)
def test_generated_model_equals_live_build(path):
    assert_equals_live(path)


@pytest.mark.parametrize("path", MODELS)
def test_source_is_standalone_and_deterministic(path):
    text = source(path)
    assert text == generate(archc.load(path))  # byte-identical when generated again
    tree = ast.parse(text)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported <= ALLOWED_IMPORTS, imported
    assert MARKER in text[:4096]
    assert all(len(line) <= 100 for line in text.splitlines())


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
def test_ruff_check_and_format_pass(tmp_path, synthetic_dir):
    paths = [*MODELS, *sorted(synthetic_dir.glob("*.yaml"))]
    for i, path in enumerate(paths):
        (tmp_path / f"m{i}_{Path(path).stem}.py").write_text(source(path))
    config = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    check = subprocess.run([RUFF, "check", *config, str(tmp_path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    fmt = subprocess.run(
        [RUFF, "format", "--check", "--diff", *config, str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


@pytest.mark.parametrize(
    "name",
    [
        "resnet18",
        "googlenet",
        "densenet121",
        "d2l/resnet18",
        "d2l/googlenet",
        "d2l/densenet",
        "d2l/nin",
    ],
)
def test_init_rules_run_in_the_live_build_order(name):
    """Same seed, same weights: modules are created and initialised in the same order."""
    path = SPECS / f"{name}.yaml"
    text = source(path)
    build = factory(module(path, text), text)
    torch.manual_seed(0)
    live = archc.build(path)
    torch.manual_seed(0)
    ours = build()
    for (key, a), b in zip(live.state_dict().items(), ours.state_dict().values()):
        assert torch.equal(a, b), key


def test_generated_folder_is_current():
    """generated/ holds `archc codegen specs` output for every shipped model (one file per
    variant of a family spec), nothing else."""
    models = shipped_models()
    expected = {Path(name + ".py") for name in models}
    present = (
        {path.relative_to(GENERATED) for path in GENERATED.rglob("*.py")}
        if GENERATED.is_dir()
        else set()
    )
    assert present == expected, "generated/ is stale: run `archc codegen specs`"
    for name, model in models.items():
        relative = model.path.relative_to(SPECS)
        fresh = generate(archc.load(model.path, variant=model.variant), f"specs/{relative.as_posix()}")
        stored = (GENERATED / f"{name}.py").read_text()
        assert stored == fresh, f"generated/{name}.py is stale: run `archc codegen specs`"


# ---- shape of the code ----------------------------------------------------------------------------


def test_resnet50_reads_like_torchvision():
    text = source(SPECS / "resnet50.yaml")
    assert len(text.splitlines()) <= 200
    assert "class Bottleneck(nn.Module):" in text
    assert "def resnet50(num_classes: int = 1000) -> ResNet50:" in text
    assert "*[Bottleneck(1024, 256, 1024) for _ in range(5)]" in text
    assert "x = self.layer3(x)  # 1024x14x14" in text
    assert text.count("class ") == 2  # one block class, one model


def test_file_length_grows_with_block_types_not_depth(tmp_path):
    lengths = {}
    for depth in (10, 1000):
        path = tmp_path / f"deep{depth}.yaml"
        path.write_text(DEEP.replace("DEPTH", str(depth)))
        text = generate(archc.load(path))
        lengths[depth] = len(text.splitlines())
    assert lengths[1000] <= 1.5 * lengths[10]
    assert "for _ in range(1000)" in text
    build = factory(module(path, text), text)
    with torch.device("meta"):
        assert structure(build()) == structure(archc.build(path))


def test_model_parameters_become_keyword_arguments():
    text = source(SPECS / "googlenet.yaml")
    assert (
        "def googlenet(num_classes: int = 1000, dropout: float = 0.2, dropout_aux: float = 0.7) -> GoogLeNet:"
        in text
    )
    model = factory(module(SPECS / "googlenet.yaml", text), text)(num_classes=7, dropout=0.5)
    assert model.fc.out_features == 7 and model.dropout.p == 0.5
    assert model.aux1.fc2.out_features == 7 and model.aux1.dropout.p == 0.7  # the heads' too
    family = SPECS / "densenet.yaml"  # growth_rate sizes every layer: fixed, and said so
    dense = generate(archc.load(family, variant="densenet121"))
    assert "def densenet121(num_classes: int = 1000) -> DenseNet121:" in dense
    fixed = "growth_rate=32, block_config=[6, 12, 24, 16], num_init_features=64,\n    bn_size=4"
    assert fixed in dense
    wide = generate(archc.load(family, variant="densenet161"))  # each variant its own values
    assert "def densenet161(num_classes: int = 1000) -> DenseNet161:" in wide
    assert "growth_rate=48, block_config=[6, 12, 36, 24], num_init_features=96" in wide


# ---- synthetic specs: every combinator and naming corner ------------------------------------------


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_specs_equal_live_build(synthetic_dir, name):
    path = synthetic_dir / f"{name}.yaml"
    text = source(path)
    assert text == generate(archc.load(path))
    assert_equals_live(path, text)
    model = factory(module(path, text), text)().eval()
    x = torch.randn(2, *archc.load(path).input_shape)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x.clone()), model(x.clone()))


def test_synthetic_code_uses_loops_flags_and_names(synthetic_dir):
    inline = source(synthetic_dir / "inline.yaml")
    assert "for _ in range(n - 1):" in inline  # a stage of variable depth inside a block
    assert "if extra:" in inline  # an optional layer
    branches = source(synthetic_dir / "branches.yaml")
    assert 'f"layer{i + 1}"' in branches and "+ i * 4" in branches  # dense: growing inputs
    assert "return torch.cat([left, mid, right], 1)" in branches
    assert "def branches(num_classes: int = 5, p: float = 0.25) -> Branches:" in branches
    gates = source(synthetic_dir / "gates.yaml")
    assert "return x * out" in gates and "class Gate(nn.Module):" in gates
    hostile = source(synthetic_dir / "hostile.yaml")
    assert "range_" in hostile and "self_" in hostile
    doc = ast.get_docstring(ast.parse(hostile))
    assert '"""' in doc and "\\" in doc  # escaped, not breaking out of the docstring


def test_codegen_of_an_in_memory_spec(synthetic_dir):
    spec = archc.loads((synthetic_dir / "residuals.yaml").read_text())
    text = archc.codegen(spec)
    assert "class ResidualZoo(nn.Module):" in text
    # no file to re-read: the Spec carries its Document, so parameters are probed as for a file
    assert "def residual_zoo(num_classes: int = 10, slope: float = 0.2) -> ResidualZoo:" in text


OWN_MODULE = '''class Affine2d(nn.Module):
    """A per-channel scale and shift (archc's own module: torch.nn has none)."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]
'''


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
def test_a_primitive_with_archc_own_module(tmp_path, monkeypatch):
    """A layer built by archc's own module class (TorchLayer(own=True)): the generated file
    carries the class's source once and constructs the layer by its name; live = generated;
    the file is standalone and ruff-clean."""
    import archc.primitives as primitives
    from archc.backends import torch_modules

    file = tmp_path / "own_modules.py"
    file.write_text("import torch\nfrom torch import nn\n\n\n" + OWN_MODULE)
    loader = importlib.util.spec_from_file_location("own_modules", file)
    own = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(own)
    monkeypatch.setattr(primitives, "TORCH_MODULES", file)  # where own_source reads it
    monkeypatch.setattr(torch_modules, "Affine2d", own.Affine2d, raising=False)  # the live build

    class Affine(primitives.BatchNorm):  # two parameters per channel, as a batch norm's
        kind = "affine"

        def torch_layer(self, p, shape):
            return primitives.TorchLayer("Affine2d", (shape[0],), own=True)

    monkeypatch.setitem(primitives.PRIMITIVES, "affine", Affine())
    path = tmp_path / "own.yaml"
    path.write_text(
        "archc: 1\nname: own\ninput: [3, 16, 16]\n"
        "blocks:\n  affine2d:\n    params: {width: ~}\n"
        '    body: [{conv: {out: "${width}", kernel: 3, padding: 1}}, affine, relu]\n'
        "body:\n  stem: {conv: {out: 8, kernel: 3}}\n  norm: affine\n"
        "  layer: {stage: {block: affine2d, depth: 3, width: 8}}\n"
        "  pool: {adaptive_avgpool: 1}\n  flatten: flatten\n  fc: {linear: {out: 4}}\n"
    )
    text = generate(archc.load(path))
    assert text.count("class Affine2d(nn.Module):") == 1
    assert OWN_MODULE in text
    assert "Affine2d(8)" in text and "nn.Affine2d" not in text
    assert "class Affine2d_(nn.Sequential):" in text  # the block's class keeps out of its way
    assert "archc" not in {
        n.module.split(".")[0] for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)
    }
    assert_equals_live(path, text)
    (tmp_path / "gen").mkdir()
    out = tmp_path / "gen" / "own.py"
    out.write_text(text)
    config = ["--config", str(ROOT / "pyproject.toml"), "--no-cache"]
    for command in (["check"], ["format", "--check", "--diff"]):
        run = subprocess.run([RUFF, *command, *config, str(out)], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr


def test_random_specs_generate_the_live_model(tmp_path):
    """Random valid specs (tests/strategies.py): every primitive and combinator, stages, user
    blocks with `let`, `if` and `inline`; same modules, same seeded weights, same outputs."""
    strategies = pytest.importorskip("strategies")
    from hypothesis import HealthCheck, given, settings

    @settings(
        max_examples=25, derandomize=True, database=None, deadline=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(gen=strategies.valid_specs())
    def check(gen):
        path = tmp_path / "random.yaml"  # a file, so model parameters are probed too
        path.write_text(gen.text)
        spec = archc.load(path)
        text = generate(spec)
        build = factory(module(path, text), text)
        torch.manual_seed(0)
        live = archc.build(spec)
        torch.manual_seed(0)
        ours = build()
        assert list(ours.state_dict()) == list(live.state_dict()), text
        for key, value in live.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), (key, text)
        x = torch.randn(2, *spec.input_shape)
        with torch.no_grad():
            expected = live.eval()(x.clone())
            torch.testing.assert_close(ours.eval()(x.clone()), expected, equal_nan=True)

    check()


# ---- torchvision, TorchScript, export, compile ----------------------------------------------------


TORCHVISION = [name for name in MODELS if "/" not in name]


@pytest.mark.parametrize("name", TORCHVISION)
def test_generated_model_loads_torchvision_weights(name):
    torchvision = pytest.importorskip("torchvision")
    if not callable(getattr(torchvision.models, name, None)):
        pytest.skip("not a torchvision model")
    text = source(name)
    builder = getattr(torchvision.models, name)  # the default builder
    with torch.device("meta"):
        ours = factory(module(name, text), text)()
        try:
            reference = builder(weights=None)
        except NotImplementedError:  # it computes its layout from tensors (RegNet's BlockParams)
            reference = None
    if reference is None:
        if name in HEAVY:
            pytest.skip(f"{HEAVY[name]}: torchvision's model cannot be built on the meta device")
        reference = builder(weights=None)
    ours.load_state_dict(reference.state_dict(), strict=True, assign=True)


def test_resnet18_outputs_match_torchvision():
    torchvision = pytest.importorskip("torchvision")
    text = source(SPECS / "resnet18.yaml")
    ours = factory(module(SPECS / "resnet18.yaml", text), text)().eval()
    reference = torchvision.models.resnet18(weights=None).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_resnet50_scripts_and_exports():
    text = source(SPECS / "resnet50.yaml")
    model = factory(module(SPECS / "resnet50.yaml", text), text)().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected)
        exported = torch.export.export(model, (x,))
        torch.testing.assert_close(exported.module()(x), expected)


@pytest.mark.parametrize("name", ["d2l/googlenet", "d2l/densenet"])
def test_parallel_and_dense_compile_without_graph_breaks(name):
    path = SPECS / f"{name}.yaml"
    text = source(path)
    model = factory(module(path, text), text)().eval()
    x = torch.randn(1, *archc.load(path).input_shape)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x.clone()), model(x.clone()))


# ---- the command line -----------------------------------------------------------------------------


def test_codegen_does_not_import_torch(tmp_path):
    code = (
        "import sys; from archc.cli import main; "
        f"assert main(['codegen', 'specs/googlenet.yaml', '-o', {str(tmp_path)!r}]) == 0; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "googlenet.py").is_file()


def test_codegen_folder_mirrors_structure_and_refuses_to_clobber(tmp_path):
    specs = tmp_path / "specs"
    (specs / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(ROOT / "tests" / "data" / "resnet18.yaml", specs / "resnet18.yaml")
    shutil.copy(SPECS / "d2l" / "nin.yaml", specs / "nested" / "deeper" / "nin.yaml")
    out = tmp_path / "out"
    result = run_archc("codegen", str(specs), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.py")) == [
        "nested/deeper/nin.py",
        "resnet18.py",
    ]
    again = run_archc("codegen", str(specs), "-o", str(out))  # archc's own files: rewritten freely
    assert again.returncode == 0, again.stderr

    mine = out / "resnet18.py"
    mine.write_text("# my own code\n")
    refused = run_archc("codegen", str(specs / "resnet18.yaml"), "-o", str(out))
    assert refused.returncode == 1
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert mine.read_text() == "# my own code\n"
    forced = run_archc("codegen", str(specs / "resnet18.yaml"), "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert MARKER in mine.read_text()


def test_codegen_reports_bad_specs_and_missing_paths(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("archc: 1\nname: bad\ninput: [3, 8, 8]\nbody:\n  c: {conv: {out: 4}}\n")
    result = run_archc(
        "codegen", str(bad), str(tmp_path / "missing.yaml"), "-o", str(tmp_path / "out")
    )
    assert result.returncode == 1
    assert "bad.yaml:5" in result.stderr and "Traceback" not in result.stderr

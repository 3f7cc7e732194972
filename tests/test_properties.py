"""Property-based tests: random valid specs agree with torch; random broken specs are refused.

Example counts come from a Hypothesis profile chosen by ARCHC_HYPOTHESIS_PROFILE:
`ci` (the default, derandomised: 150 valid specs, 300 broken ones, 40 code generations; about
20 s on 2 cores) or `long` (5,000 / 5,000 / 2,000, random; about 7 minutes):

    ARCHC_HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_properties.py \
        --hypothesis-show-statistics
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import re
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from hypothesis import event, given, settings
from torch import nn

import archc
from archc.backends import torch_modules
from archc.backends.torch_backend import Dense, Gate, Residual, check_shapes, module_nodes
from archc.cli import main
from archc.errors import SpecError
from archc.resources import BYTES_PER_VALUE, estimate
from strategies import examples, invalid_specs, profile, valid_specs

BASE = profile()
VALID_EXAMPLES = examples(ci=150, long=5000)
INVALID_EXAMPLES = examples(ci=300, long=5000)
CODEGEN_EXAMPLES = examples(ci=40, long=2000)



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: threads only add overhead (restored for the rest of the session)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- an independent account of what torch does -------------------------------------------------


def measure(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[dict[str, int], int]:
    """MACs of every Conv2d/Linear (by module path) and activation elements, for one sample.

    Counted from the tensors torch produces, not from archc's rules: a conv's MACs are its
    output elements times (in_channels / groups) × kernel area; a linear's are in × out.
    Activations follow archc.resources' documented estimate: the input, every leaf layer's
    output except identity and flatten, every residual sum and gate product, every parallel
    concatenation (an inline one too, which has no module: counted where torch_modules makes
    it), and every concatenation inside a dense block.
    """
    macs: dict[str, int] = {}
    activations = [0]
    handles = []

    def leaf_hook(path: str, module: nn.Module):
        def hook(_module, inputs, output) -> None:
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                per_output = module.in_channels // module.groups * kh * kw
                macs[path] = macs.get(path, 0) + output[0].numel() * per_output
            elif isinstance(module, nn.Linear):
                macs[path] = macs.get(path, 0) + module.in_features * module.out_features
            if not isinstance(module, (nn.Identity, nn.Flatten)):
                activations[0] += output[0].numel()

        return hook

    def combinator_hook(_module, inputs, output) -> None:
        activations[0] += output[0].numel()

    def dense_hook(module: Dense):
        def hook(_module, inputs, output) -> None:
            x = inputs[0][0]
            channels, area = x.shape[0], x.shape[1] * x.shape[2]
            for layer in module.children():
                channels += layer.last_out_channels
                activations[0] += channels * area

        return hook

    def remember_channels(module, _inputs, output) -> None:
        module.last_out_channels = output.shape[1]

    for path, module in model.named_modules():
        if not list(module.children()):
            handles.append(module.register_forward_hook(leaf_hook(path, module)))
        elif isinstance(module, (Residual, Gate)):
            handles.append(module.register_forward_hook(combinator_hook))
        elif isinstance(module, Dense):
            handles.append(module.register_forward_hook(dense_hook(module)))
            for layer in module.children():
                handles.append(layer.register_forward_hook(remember_channels))
    concat = torch_modules.concat

    def counted_concat(modules, step, x):  # a parallel's concatenation (then its post layers)
        out = concat(modules, step, x)
        activations[0] += out[0].numel()
        return out

    try:
        model.eval()
        torch_modules.concat = counted_concat
        with torch.no_grad():
            x = torch.randn(1, *input_shape)
            activations[0] += x[0].numel()
            model(x)
    finally:
        torch_modules.concat = concat
        for handle in handles:
            handle.remove()
    return macs, activations[0]


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + ".")


# ---- valid specs ---------------------------------------------------------------------------------


@settings(BASE, max_examples=VALID_EXAMPLES)
@given(gen=valid_specs())
def test_random_valid_spec_builds_and_agrees_with_torch(gen):
    for feature in sorted(gen.features):
        event(feature)
    spec = archc.loads(gen.text, "prop.yaml")
    assert spec.output_shape == gen.out_shape, gen.text  # archc's inference = torch's formulas

    model = archc.build(spec, seed=0)
    assert check_shapes(model, spec, batch=2) == [], gen.text  # every node, static = runtime

    params = {name: p.numel() for name, p in model.named_parameters()}
    assert sum(params.values()) == spec.param_count
    macs, activations = measure(model, spec.input_shape)
    assert sum(macs.values()) == spec.macs, gen.text
    for node in module_nodes(spec):
        assert sum(n for name, n in params.items() if under(name.rsplit(".", 1)[0], node.path)) == node.param_count
        assert sum(n for path, n in macs.items() if under(path, node.path)) == node.macs, node.path

    found = estimate(spec)
    assert found.param_bytes == BYTES_PER_VALUE * sum(params.values())
    assert found.buffer_bytes == sum(b.numel() * b.element_size() for b in model.buffers())
    assert found.activations == activations

    again = archc.build(spec, seed=0)  # invariant 6: same seed, same weights
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)


@settings(BASE, max_examples=CODEGEN_EXAMPLES)
@given(gen=valid_specs())
def test_random_valid_spec_generates_code_equal_to_the_live_build(gen, tmp_path_factory):
    """Invariant 2 on random specs: same state_dict (keys, order, shapes), same outputs."""
    pytest.importorskip("archc.backends.codegen")
    spec = archc.loads(gen.text, "prop.yaml")
    text = archc.codegen(spec)
    folder = tmp_path_factory.mktemp("generated")
    file = folder / f"prop_{hashlib.sha1(text.encode()).hexdigest()[:16]}.py"
    file.write_text(text)
    loader = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)  # generated code, run as a user would import it
    factory = [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)][-1]
    ours, live = getattr(module, factory)(), archc.build(spec, seed=0)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in live.state_dict().items()
    ], text
    ours.load_state_dict(live.state_dict())
    x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x.clone()), live.eval()(x.clone()))


# ---- broken specs --------------------------------------------------------------------------------


def line_count(raw: bytes) -> int:
    return max(1, raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1))


@settings(BASE, max_examples=INVALID_EXAMPLES)
@given(broken=invalid_specs())
def test_random_broken_spec_is_refused_at_a_line_of_the_file(broken):
    event(broken.mutation.split(" = ")[0].split(" ")[0])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "broken.yaml"
        path.write_bytes(broken.raw)
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["validate", str(path)])
    text = broken.raw.decode("utf-8", "replace")
    assert code == 1, f"{broken.mutation} was accepted:\n{text}"
    first = err.getvalue().splitlines()[0]
    match = re.match(rf"^{re.escape(str(path))}:(\d+):(\d+): error: \S", first)
    assert match, f"{broken.mutation}: {err.getvalue()}\n{text}"
    line, col = int(match[1]), int(match[2])
    assert 1 <= line <= line_count(broken.raw), f"{broken.mutation}: {first}\n{text}"
    assert 1 <= col <= len(broken.raw.split(b"\n")[line - 1]) + 1, f"{broken.mutation}: {first}\n{text}"
    assert "Traceback" not in err.getvalue() and "internal error" not in err.getvalue(), err.getvalue()
    assert out.getvalue() == ""


# ---- regressions: bugs the properties found, each pinned by a plain test -------------------------

HEAD = "archc: 1\nname: t\ninput: [3, 8, 8]\n"


def test_auto_projection_finds_a_stride_for_non_square_maps():
    # A 2x5 map through a stride-3 body is 1x2; the stride guessed from the height alone (2)
    # gives 1x3, but stride 3 maps both sides. Before the fix this spec was refused.
    text = "archc: 1\nname: t\ninput: [2, 2, 5]\nbody:\n  r:\n    residual:\n      body:\n" \
        "        c: {conv: {out: 4, kernel: 1, stride: 3}}\n      shortcut: auto\n"  # fmt: skip
    spec = archc.loads(text)
    assert spec.output_shape == (4, 1, 2)
    assert check_shapes(archc.build(spec), spec) == []


def test_auto_projection_when_height_reaches_one_before_width():
    # e.g. a 32x128 spectrogram late in a ResNet: 1x4 -> stride 2 -> 1x2
    text = "archc: 1\nname: t\ninput: [8, 1, 4]\nbody:\n  s: {stage: {block: basic, depth: 1, width: 4, stride: 2}}\n"
    spec = archc.loads(text)
    assert spec.output_shape == (4, 1, 2)
    assert check_shapes(archc.build(spec), spec) == []


@pytest.mark.parametrize(
    "rule, words",
    [
        ("batchnorm: {weight: xavier_uniform}", "needs a weight with fan-in and fan-out"),
        ("conv: {bias: kaiming_normal}", "needs a weight with fan-in and fan-out"),
        ("conv: {weight: {uniform: {a: 1.0, b: 0.0}}}", "a must be at most b"),
        ("conv: {weight: {uniform: {a: 2.0}}}", "a must be at most b"),
        ("conv: {weight: {normal: {std: -1.0}}}", "std must be at least 0"),
        ("conv: {weight: {trunc_normal: {std: 0.0}}}", "std must be positive"),
        ("conv: {weight: {trunc_normal: {a: 5.0, b: -5.0}}}", "a must be at most b"),
        ("conv: {weight: {kaiming_normal: {nonlinearity: fan_out}}}", "nonlinearity is one of"),
        ("conv: {weight: {kaiming_normal: {mode: relu}}}", "mode is one of"),
        ("conv: {weight: {constant: relu}}", "val is a number"),
        ("conv: {weight: {normal: {std: .nan}}}", "finite"),
    ],
)
def test_init_rules_torch_would_reject_are_spec_errors(rule, words):
    # These validated, then died inside torch.nn.init at build time as internal errors.
    text = HEAD + f"init:\n  {rule}\nbody:\n  c: {{conv: {{out: 4, kernel: 3}}}}\n  b: batchnorm\n"
    with pytest.raises(SpecError) as info:
        archc.loads(text, "f.yaml")
    assert info.value.location.line == 5 and words in info.value.message


def test_valid_init_rules_still_build():
    text = HEAD + "init:\n  linear: {weight: {kaiming_normal: {nonlinearity: leaky_relu, a: 0.1}}}\n" \
        "  conv: {weight: {uniform: {a: 0.5}}}\nbody:\n  c: {conv: {out: 4, kernel: 3}}\n" \
        "  f: flatten\n  l: {linear: 3}\n"  # fmt: skip
    archc.build(archc.loads(text))


@pytest.mark.parametrize(
    "expression, words, blamed",
    [
        ("2 ** l", "needs numbers", "l"),  # was TypeError from abs() on a list: an internal error
        ("-l", "needs numbers", "l"),
        ("l < 1", "not supported", "l"),
        ("-s", "needs numbers", "s"),
        ("s * 1000000000000", "needs numbers", "s"),  # string repetition: MemoryError
        ("l * 1000000000", "needs numbers", "l"),  # list repetition: gigabytes
        ("round(5, -1000000000000000)", "ndigits", None),  # hung computing 10**(10**15)
        ("(-8) ** 0.5", "not a real number", None),  # a complex number reached pydantic
        ("-" * 200 + "1", "nested more than", None),  # recursion depth
    ],
)
def test_expression_errors_are_spec_errors(expression, words, blamed):
    # a param's value that the expression cannot use is reported where the param is written
    # (line 4), with the expression (line 6) as a note; the expression's own faults at line 6
    text = HEAD + f"params: {{l: [1, 2], s: abc}}\nbody:\n  c: {{conv: {{out: '${{{expression}}}', kernel: 1}}}}\n"
    with pytest.raises(SpecError) as info:
        archc.loads(text, "f.yaml")
    error = info.value
    assert words in error.message
    if blamed is None:
        assert error.location.line == 6 and error.field == "body.c.conv.out" and not error.notes
    else:
        assert (error.location.line, error.field) == (4, f"params.{blamed}")
        assert [n.location.line for n in error.notes] == [6]
        assert error.notes[0].message == f"{blamed} is used here (at body.c.conv.out)"


@pytest.mark.parametrize("field", ["alpha: .nan", "beta: .inf", "k: -.inf"])
def test_lrn_refuses_non_finite_numbers(field):
    with pytest.raises(SpecError, match="finite number"):
        archc.loads(HEAD + f"body:\n  n: {{lrn: {{size: 2, {field}}}}}\n")


def test_leaky_relu_refuses_an_infinite_slope():
    with pytest.raises(SpecError, match="finite number"):
        archc.loads(HEAD + "body:\n  a: {leaky_relu: {negative_slope: .inf}}\n")


def test_block_chains_deeper_than_the_nesting_limit_are_refused():
    # 3000 blocks each using the next one: a RecursionError (internal error) before the limit
    blocks = "".join(f"  b{i}:\n    body: {{b{i + 1}: {{}}}}\n" for i in range(3000)) + "  b3000:\n    body: relu\n"
    with pytest.raises(SpecError, match="nested more than 100 levels"):
        archc.loads(HEAD + "blocks:\n" + blocks + "body:\n  x: b0\n", "f.yaml")


def test_nesting_just_under_the_limit_builds_and_runs():
    def nest(n: int, inner: str) -> str:
        return "[" * n + inner + "]" * n

    text = HEAD + f"blocks:\n  b0:\n    body: {nest(48, '{b1: {}}')}\n  b1:\n" \
        f"    body: {nest(48, '{conv: {out: 4, kernel: 3, padding: 1}}')}\nbody:\n  x: b0\n"  # fmt: skip
    spec = archc.loads(text)
    assert check_shapes(archc.build(spec), spec) == []


def test_codegen_of_dense_blocks_of_different_depths():
    pytest.importorskip("archc.backends.codegen")
    spec = archc.loads(
        "archc: 1\nname: prop\ninput: [1, 1, 1]\nbody:\n"
        "  a: {dense_block: {layers: 1, growth_rate: 1, bn_size: 1}}\n"
        "  b: {dense_block: {layers: 2, growth_rate: 1, bn_size: 1}}\n"
    )
    assert "class" in archc.codegen(spec)


def test_numbers_too_long_for_int_are_spec_errors():
    with pytest.raises(SpecError, match="is not a number archc can read"):
        archc.loads(HEAD + "body:\n  c: {conv: {out: " + "1" * 5000 + ", kernel: 1}}\n")

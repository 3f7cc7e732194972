"""Hypothesis strategies: random valid specs (valid by construction) and ways to break them.

`valid_specs()` draws a spec as plain data together with the output shape it must have. Shapes
are tracked here with PyTorch's own formulas, written independently of archc's inference, so
every kernel fits, every group divides and every residual adds up. It covers every primitive
(conv with random kernel/stride/padding/dilation/groups, batch norm, the activations, max/avg
pooling with ceil_mode, adaptive pooling, LRN, dropout, stochastic depth, identity, flatten + linear heads), the
combinators (one strategy per combinator of archc's registry: seq as lists and mappings,
residual with identity / auto / projection / custom shortcuts and post layers, parallel,
dense, gate), stages of the library's basic and bottleneck
blocks, user-defined block templates with `let`, `requires` and `${...}` expressions, `if`
and `inline` meta keys, top-level `params` and `init` rules.

`invalid_specs()` takes such a spec and breaks it in one way that must be refused: a wrong
type, an out-of-range value, an unknown or a removed key, an unknown layer or block, a bad
expression, a duplicate key, or broken YAML / bytes.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from archc.combinators import COMBINATORS as REGISTRY
from archc.primitives import PRIMITIVES

# ---- profiles: ARCHC_HYPOTHESIS_PROFILE=ci (default: small, derandomised) or long ------------------

_COMMON = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("archc-ci", derandomize=True, database=None, **_COMMON)
settings.register_profile("archc-long", **_COMMON)
PROFILE = os.environ.get("ARCHC_HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    raise ValueError(f"ARCHC_HYPOTHESIS_PROFILE is ci or long, not {PROFILE!r}")


def profile() -> settings:
    """The settings every property test starts from (choose with ARCHC_HYPOTHESIS_PROFILE)."""
    return settings.get_profile(f"archc-{PROFILE}")


def examples(*, ci: int, long: int) -> int:
    return long if PROFILE == "long" else ci

ACTIVATIONS = tuple(k for k, p in PRIMITIVES.items() if p.category == "activation")
INPLACE_OK = tuple(k for k in ACTIVATIONS if "inplace" in PRIMITIVES[k].Params.model_fields)
PARAM_FREE_POST = ("relu", "relu6", "silu", "sigmoid", "tanh", "gelu", "identity")

Shape = tuple[int, ...]


# ---- PyTorch's shape formulas (aten/src/ATen/native/Pool.h, Convolution), written out here ---


def conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def pool_out(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    out = (size + 2 * pad - (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---- the generated spec ------------------------------------------------------------------------


@dataclass
class Generated:
    """A drawn spec: its data, the YAML text, and the output shape it must have."""

    data: dict
    out_shape: Shape
    flow: bool  # dumped in flow style (one line per top-level key) or block style
    text: str = ""
    features: set[str] = field(default_factory=set)  # what it exercises, for statistics

    def __post_init__(self) -> None:
        if not self.text:
            self.text = dump(self.data, self.flow)


def dump(data: Any, flow: bool) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None if flow else False, width=100)


class _State:
    """What one spec being drawn has accumulated: names, user blocks, features."""

    def __init__(self, draw):
        self.draw = draw
        self.counter = 0
        self.blocks: dict[str, dict] = {}
        self.features: set[str] = set()
        self.nodes = 0

    def name(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def pair(self, a: int, b: int) -> Any:
        """An int when both sides agree (sometimes as a list anyway), else [a, b]."""
        if a == b and self.draw(st.booleans()):
            return a
        return [a, b]


# ---- primitives ------------------------------------------------------------------------------


def _conv(s: _State, shape: Shape) -> tuple[Any, Shape]:
    draw = s.draw
    c, h, w = shape
    groups = draw(st.sampled_from([g for g in (1, 2, 3, 4) if c % g == 0]))
    out = groups * draw(st.integers(1, max(1, 8 // groups)))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    kh = draw(st.integers(1, min(5, (h + 2 * ph - 1) // dh + 1)))
    kw = draw(st.integers(1, min(5, (w + 2 * pw - 1) // dw + 1)))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    params: dict[str, Any] = {"out": out, "kernel": s.pair(kh, kw)}
    if (sh, sw) != (1, 1) or draw(st.booleans()):
        params["stride"] = s.pair(sh, sw)
    if (ph, pw) != (0, 0) or draw(st.booleans()):
        params["padding"] = s.pair(ph, pw)
    if (dh, dw) != (1, 1) or draw(st.booleans()):
        params["dilation"] = s.pair(dh, dw)
    if groups != 1 or draw(st.booleans()):
        params["groups"] = groups
    if draw(st.booleans()):
        params["bias"] = draw(st.booleans())
    s.features.add("conv" + ("-grouped" if groups > 1 else "") + ("-dilated" if (dh, dw) != (1, 1) else ""))
    return {"conv": params}, (out, conv_out(h, kh, sh, ph, dh), conv_out(w, kw, sw, pw, dw))


def _pool(s: _State, shape: Shape) -> tuple[Any, Shape]:
    draw = s.draw
    c, h, w = shape
    kind = draw(st.sampled_from(["maxpool", "avgpool"]))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    kh, kw = min(kh, h + 2 * ph), min(kw, w + 2 * pw)
    ph, pw = min(ph, kh // 2), min(pw, kw // 2)
    kh, kw = min(kh, h + 2 * ph), min(kw, w + 2 * pw)
    ceil_mode = draw(st.booleans())
    params: dict[str, Any] = {"kernel": s.pair(kh, kw)}
    if draw(st.booleans()):
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        params["stride"] = s.pair(sh, sw)
    else:
        sh, sw = kh, kw
    if (ph, pw) != (0, 0) or draw(st.booleans()):
        params["padding"] = s.pair(ph, pw)
    if ceil_mode or draw(st.booleans()):
        params["ceil_mode"] = ceil_mode
    s.features.add(kind + ("-ceil" if ceil_mode else ""))
    out = (c, pool_out(h, kh, sh, ph, ceil_mode), pool_out(w, kw, sw, pw, ceil_mode))
    if len(params) == 1 and kh == kw and draw(st.booleans()):
        return {kind: kh}, out  # shorthand: {maxpool: 2}
    return {kind: params}, out


def _activation(s: _State, shape: Shape) -> tuple[Any, Shape]:
    draw = s.draw
    kind = draw(st.sampled_from(ACTIVATIONS))
    s.features.add("activation")
    params: dict[str, Any] = {}
    if kind == "leaky_relu" and draw(st.booleans()):
        params["negative_slope"] = draw(st.sampled_from([0.0, 0.01, 0.2, 1.5]))
    if kind in INPLACE_OK and draw(st.booleans()):
        params["inplace"] = draw(st.booleans())
    return ({kind: params} if params else kind), shape


def _batchnorm(s: _State, shape: Shape) -> tuple[Any, Shape]:
    draw = s.draw
    s.features.add("batchnorm" + ("-1d" if len(shape) == 1 else ""))
    params: dict[str, Any] = {}
    if draw(st.booleans()):
        params["eps"] = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    if draw(st.booleans()):
        params["momentum"] = draw(st.sampled_from([0.0, 0.1, 0.9, 1.0]))
    if draw(st.booleans()):
        params["affine"] = draw(st.booleans())
    return ({"batchnorm": params} if params else "batchnorm"), shape


def _adaptive(s: _State, shape: Shape) -> tuple[Any, Shape]:
    draw = s.draw
    kind = draw(st.sampled_from(["adaptive_avgpool", "adaptive_maxpool"]))
    a, b = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    s.features.add("adaptive")
    size = s.pair(a, b)
    return ({kind: size} if draw(st.booleans()) else {kind: {"size": size}}), (shape[0], a, b)


def _lrn(s: _State, shape: Shape) -> tuple[Any, Shape]:
    draw = s.draw
    s.features.add("lrn")
    size = draw(st.integers(1, 5))
    if draw(st.booleans()):
        return {"lrn": size}, shape
    return {"lrn": {"size": size, "alpha": 1e-4, "beta": 0.75, "k": draw(st.sampled_from([1.0, 2.0]))}}, shape


def _dropout(s: _State, shape: Shape) -> tuple[Any, Shape]:
    draw = s.draw
    s.features.add("dropout")
    p = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    choice = draw(st.integers(0, 4))
    if choice >= 3:  # stochastic depth: random like dropout in training, the identity in eval
        s.features.add("stochastic_depth")
        if choice == 3:
            return {"stochastic_depth": p}, shape
        return {"stochastic_depth": {"p": p, "mode": draw(st.sampled_from(["row", "batch"]))}}, shape
    if choice == 0:
        return "dropout", shape
    if choice == 1:
        return {"dropout": p}, shape
    return {"dropout": {"p": p, "inplace": draw(st.booleans())}}, shape


def _identity(s: _State, shape: Shape) -> tuple[Any, Shape]:
    s.features.add("identity")
    return "identity", shape


# ---- layers that keep the spatial size (for residual bodies and parallel branches) --------------


def _same_layer(s: _State, shape: Shape, channels: int | None = None, stride: int = 1) -> tuple[Any, Shape]:
    """One layer mapping C×H×W to channels×ceil(H/stride)×ceil(W/stride)."""
    draw = s.draw
    c, h, w = shape
    out_c = c if channels is None else channels
    if stride == 1 and out_c == c:
        choice = draw(st.integers(0, 6))
        if choice == 1:
            return _batchnorm(s, shape)
        if choice == 2:
            return _activation(s, shape)
        if choice == 3:
            return _lrn(s, shape)
        if choice == 4:
            kind = draw(st.sampled_from(["maxpool", "avgpool"]))
            return {kind: {"kernel": 3, "stride": 1, "padding": 1}}, shape
        if choice == 5:
            return _dropout(s, shape)
    # a convolution with "same" padding, the stride on both sides
    kernel, dilation = draw(st.sampled_from([(1, 1), (3, 1), (5, 1), (3, 2)]))
    groups = draw(st.sampled_from([g for g in (1, 2) if c % g == 0 and out_c % g == 0]))
    params: dict[str, Any] = {"out": out_c, "kernel": kernel}
    if stride != 1:
        params["stride"] = stride
    if kernel > 1:
        params["padding"] = dilation * (kernel // 2)
    if dilation != 1:
        params["dilation"] = dilation
    if groups != 1:
        params["groups"] = groups
    if draw(st.booleans()):
        params["bias"] = False
    return {"conv": params}, (out_c, ceil_div(h, stride), ceil_div(w, stride))


def _named_or_listed(s: _State, layers: list[Any], stem: str = "l", *, node: bool = False) -> Any:
    """A sequence of layers as a list, or as a mapping with unique names (which, where a
    single layer is expected, is written {seq: {name: layer, ...}})."""
    if s.draw(st.booleans()):
        return list(layers)
    named = {s.name(stem): layer for layer in layers}
    return {"seq": named} if node else named


def _not_inplace(layer: Any) -> Any:
    """The first layer of a body or branch must not work in place: its input is shared."""
    if isinstance(layer, dict):
        (kind, params), = layer.items()
        if isinstance(params, dict) and params.get("inplace"):
            return {kind: {**params, "inplace": False}}
    return layer


def _body(s: _State, shape: Shape, out_c: int, stride: int, *, node: bool = False) -> tuple[Any, Shape]:
    """1-3 layers from `shape` to out_c×ceil(H/stride)×ceil(W/stride); the first one strides."""
    draw = s.draw
    layers = []
    first, shape = _same_layer(s, shape, out_c, stride)
    layers.append(_not_inplace(first))
    for _ in range(draw(st.integers(0, 2))):
        layer, shape = _same_layer(s, shape)
        layers.append(layer)
    return _named_or_listed(s, layers, node=node), shape


# ---- combinators -----------------------------------------------------------------------------


def _residual(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    draw = s.draw
    c = shape[0]
    form = draw(st.sampled_from(["identity", "auto", "projection", "custom", "default"]))
    if form == "identity":
        body, out = _body(s, shape, c, 1)
        if depth < 2 and draw(st.booleans()):  # a nested residual keeps the shape too
            inner, out = _residual_identity(s, out, depth + 1)
            body = (body + [inner]) if isinstance(body, list) else {**body, s.name("inner"): inner}
    else:
        out_c = draw(st.integers(1, 8))
        stride = draw(st.integers(1, 3))
        body, out = _body(s, shape, out_c, stride)
    spec: dict[str, Any] = {"body": body}
    if form == "identity":
        spec["shortcut"] = "identity"
    elif form == "auto":
        spec["shortcut"] = "auto"
    elif form == "projection":
        options: dict[str, Any] = {}
        if draw(st.booleans()):
            options["name"] = draw(st.sampled_from(["downsample", "proj", "shortcut"]))
        for key in ("batchnorm", "bias", "always"):
            if draw(st.booleans()):
                options[key] = draw(st.booleans())
        spec["shortcut"] = {"projection": options}
    elif form == "custom":
        # a 1x1 conv with the body's own stride maps the input onto the body's output
        stride = _common_stride(shape, out)
        layer: Any = {"conv": {"out": out[0], "kernel": 1, "stride": stride, "bias": False}}
        if draw(st.booleans()):
            layer = [layer, "batchnorm"]
        spec["shortcut"] = {"custom": {draw(st.sampled_from(["downsample", "skip"])): layer}}
    if draw(st.booleans()):
        spec["post"] = draw(st.sampled_from([*PARAM_FREE_POST, "none"]))
    s.features.add("residual-" + form)
    return {"residual": spec}, out


def _common_stride(shape: Shape, out: Shape) -> int:
    for stride in range(1, max(shape[1:]) + 1):
        if ceil_div(shape[1], stride) == out[1] and ceil_div(shape[2], stride) == out[2]:
            return stride
    raise AssertionError(f"no stride maps {shape} to {out}")  # the bodies always have one


def _residual_identity(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    body, out = _body(s, shape, shape[0], 1)
    s.features.add("residual-nested")
    return {"residual": {"body": body, "shortcut": "identity"}}, out


def _parallel(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    draw = s.draw
    stride = draw(st.integers(1, 2))
    branches, channels, out = [], 0, shape
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:
            body, out = _split_branch(s, shape, stride)
        elif draw(st.booleans()) or stride != 1:
            body, out = _body(s, shape, draw(st.integers(1, 6)), stride, node=True)
        else:
            body, out = _residual_identity(s, shape, depth + 1)
        branches.append(body)
        channels += out[0]
    s.features.add("parallel")
    value = _named_or_listed(s, branches, "branch")
    if depth > 0 and isinstance(value, dict) and draw(st.booleans()):
        # inside another layer: its branches' layers registered there (SqueezeNet's Fire); a
        # branch that is a named sequence may be inline too, its layers registered there
        s.features.add("inline-parallel")
        inline = {
            k: {**v, "inline": True} if isinstance(v, dict) and isinstance(v.get("seq"), dict) and draw(st.booleans()) else v
            for k, v in value.items()
        }
        return {"parallel": inline, "inline": True}, (channels, *out[1:])
    return {"parallel": value}, (channels, *out[1:])


def _split_branch(s: _State, shape: Shape, stride: int) -> tuple[Any, Shape]:
    """A branch that splits after its first layer into two layers side by side, registered on
    the parallel (Inception v3's InceptionE: an inline parallel inside a branch)."""
    draw = s.draw
    first, mid = _same_layer(s, shape, draw(st.integers(1, 4)), stride)
    sides, channels = {}, 0
    for _ in range(2):
        layer, out = _same_layer(s, mid, draw(st.integers(1, 4)))
        sides[s.name("side")] = _not_inplace(layer)
        channels += out[0]
    s.features.add("inline-parallel")
    layers = {s.name("l"): _not_inplace(first), s.name("split"): {"parallel": sides, "inline": True}}
    return {"seq": layers, "inline": draw(st.booleans())}, (channels, *mid[1:])


def _inline_parallel_in(layers: list[Any]) -> bool:
    """Whether an inline parallel would run in the module these layers register in."""
    for layer in layers:
        if isinstance(layer, dict) and layer.get("inline"):
            if "parallel" in layer:
                return True
            inner = layer.get("seq")
            if _inline_parallel_in(list(inner.values()) if isinstance(inner, dict) else inner or []):
                return True
    return False


def _gate(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    """x * body(x): a squeeze-and-excitation scale (C×1×1), a spatial one (1×H×W) or a full one."""
    draw = s.draw
    form = draw(st.sampled_from(["se", "spatial", "full"]))
    if form == "se":
        squeeze = {"conv": {"out": draw(st.integers(1, 8)), "kernel": 1}}
        layers = [{"adaptive_avgpool": 1}, squeeze, draw(st.sampled_from(["relu", "silu"])), {"conv": {"out": shape[0], "kernel": 1}}]
    else:
        body, _ = _body(s, shape, 1 if form == "spatial" else shape[0], 1)
        layers = list(body.values()) if isinstance(body, dict) else body
    layers.append(draw(st.sampled_from(["sigmoid", "tanh", "hardswish"])))
    s.features.add("gate-" + form)
    return {"gate": _named_or_listed(s, layers, "g")}, shape


def _user_dense_layer(s: _State) -> str:
    """A user-defined block keeping the spatial size, with `growth` output channels."""
    for name, block in s.blocks.items():
        if block.get("_role") == "dense":
            return name
    name = s.name("grow")
    s.blocks[name] = {
        "_role": "dense",
        "doc": "BN-ReLU-conv producing `growth` channels",
        "params": {"growth": None, "kernel": 3},
        "let": {"pad": "${kernel // 2}"},
        "requires": ["growth > 0", "kernel % 2 == 1"],
        "body": {
            "seq": {
                "norm": "batchnorm",
                "act": {"relu": {"inplace": True}},
                "conv": {"conv": {"out": "${growth}", "kernel": "${kernel}", "padding": "${pad}", "bias": False}},
            }
        },
    }
    return name


def _dense(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    draw = s.draw
    layers = draw(st.integers(1, 3))
    spec: dict[str, Any] = {"depth": layers}
    choice = draw(st.integers(0, 2))
    if choice == 0:
        spec["block"] = _user_dense_layer(s)
        growth = draw(st.integers(1, 4))
        spec["growth"] = growth
        if draw(st.booleans()):
            spec["kernel"] = draw(st.sampled_from([1, 3]))
    elif choice == 1:
        spec["block"] = "basic"
        growth = draw(st.integers(1, 4))
        spec["width"] = growth
    else:
        spec["block"] = "bottleneck"
        width = draw(st.integers(1, 3))
        spec["width"], spec["expansion"] = width, draw(st.integers(1, 2))
        growth = width * spec["expansion"]
    if draw(st.booleans()):
        spec["names"] = "denselayer{i}"
        spec["start"] = 1
    s.features.add("dense-" + spec["block"].rstrip("0123456789"))
    return {"dense": spec}, (shape[0] + layers * growth, *shape[1:])


def _stage(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    draw = s.draw
    block = draw(st.sampled_from(["basic", "bottleneck", "user"]))
    spec: dict[str, Any] = {"depth": draw(st.integers(1, 3))}
    stride = draw(st.integers(1, 3))
    if stride != 1 or draw(st.booleans()):
        spec["stride"] = stride
    if block == "basic":
        spec["block"] = "basic"
        width = draw(st.integers(1, 6))
        spec["width"] = width
        expansion = 1
        if draw(st.booleans()):
            expansion = draw(st.integers(1, 2))
            spec["expansion"] = expansion
        out_c = width * expansion
    elif block == "bottleneck":
        spec["block"] = "bottleneck"
        groups = draw(st.sampled_from([1, 2]))
        base_width = draw(st.sampled_from([64, 32, 128]))
        width = draw(st.integers(max(1, ceil_div(64, base_width)), 4))
        expansion = draw(st.integers(1, 4))
        spec.update(width=width, expansion=expansion)
        if groups != 1 or draw(st.booleans()):
            spec["groups"] = groups
        if base_width != 64 or draw(st.booleans()):
            spec["base_width"] = base_width
        out_c = width * expansion
    else:
        spec["block"] = _user_cbr(s)
        out_c = draw(st.integers(1, 6))
        spec["out"] = out_c
        if draw(st.booleans()):
            spec["k"] = draw(st.sampled_from([1, 3, 5]))
        if draw(st.booleans()):
            spec["bn"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["names"] = draw(st.sampled_from(["{i}", "block{i}", "b{i}_"]))
        if draw(st.booleans()):
            spec["start"] = draw(st.integers(0, 2))
    s.features.add("stage-" + spec["block"].rstrip("0123456789"))
    return {"stage": spec}, (out_c, ceil_div(shape[1], stride), ceil_div(shape[2], stride))


def _user_cbr(s: _State) -> str:
    """A user-defined conv-BN-ReLU block with `let`, `requires` and an `if` on its batch norm."""
    for name, block in s.blocks.items():
        if block.get("_role") == "cbr":
            return name
    name = s.name("cbr")
    s.blocks[name] = {
        "_role": "cbr",
        "params": {"out": None, "k": 3, "stride": 1, "bn": True},
        "let": {"pad": "${k // 2}"},
        "requires": ["k % 2 == 1 and out >= 1"],
        "body": [
            {"conv": {"out": "${out}", "kernel": "${k}", "stride": "${stride}", "padding": "${pad}", "bias": "${not bn}"}},
            {"batchnorm": None, "if": "${bn}"},
            {"relu": {"inplace": True}},
        ],
    }
    return name


def _user_block_use(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    draw = s.draw
    name = _user_cbr(s)
    out_c = draw(st.integers(1, 6))
    args: dict[str, Any] = {"out": out_c}
    stride = draw(st.integers(1, 2))
    if stride != 1:
        args["stride"] = stride
    if draw(st.booleans()):
        args["k"] = draw(st.sampled_from([1, 3]))
    s.features.add("user-block")
    return {name: args}, (out_c, ceil_div(shape[1], stride), ceil_div(shape[2], stride))


def _library_blocks() -> set[str]:
    from archc.compiler import library

    return set(library())


def _library(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    """One of the library's other blocks (DenseNet, GoogLeNet, VGG, NiN), where it has them."""
    draw = s.draw
    c, h, w = shape
    known = _library_blocks()
    usable = [b for b in ("dense_layer", "dense_block", "transition", "inception", "conv_bn_relu", "nin_block")
              if b in known]  # fmt: skip
    if "vgg_block" in known and h >= 2 and w >= 2:
        usable.append("vgg_block")
    if "transition" in usable and (h < 2 or w < 2):
        usable.remove("transition")
    if not usable:
        return _residual(s, shape, depth)
    block = draw(st.sampled_from(usable))
    s.features.add("library-" + block)
    if block == "dense_layer":
        layers, growth = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        args = {"block": "dense_layer", "depth": layers, "growth_rate": growth, "bn_size": draw(st.integers(1, 2))}
        if draw(st.booleans()):
            args["drop_rate"] = draw(st.sampled_from([0.0, 0.2]))
        return {"dense": args}, (c + layers * growth, h, w)
    if block == "dense_block":
        layers, growth = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        return {"dense_block": {"layers": layers, "growth_rate": growth, "bn_size": 1}}, (c + layers * growth, h, w)
    if block == "transition":
        compression = draw(st.sampled_from([1.0] + ([0.5] if c >= 2 else [])))
        return {"transition": {"compression": compression}}, (int(c * compression), h // 2, w // 2)
    if block == "inception":
        c1, c4 = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        c2 = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
        c3 = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
        args = {"c1": c1, "c2": c2, "c3": c3, "c4": c4}
        if draw(st.booleans()):
            args["k3"] = draw(st.sampled_from([1, 3, 5]))
        return {"inception": args}, (c1 + c2[1] + c3[1] + c4, h, w)
    if block == "vgg_block":
        out = draw(st.integers(1, 6))
        args = {"convs": draw(st.integers(1, 3)), "out": out}
        if draw(st.booleans()):
            args["batchnorm"] = draw(st.booleans())
        return {"vgg_block": args}, (out, h // 2, w // 2)
    # conv_bn_relu and nin_block: a convolution's shape
    out = draw(st.integers(1, 6))
    ph, stride = draw(st.integers(0, 1)), draw(st.integers(1, 2))
    kernel = draw(st.integers(1, min(3, h + 2 * ph, w + 2 * ph)))
    args = {"out": out, "kernel": kernel, "stride": stride, "padding": ph}
    return {block: args}, (out, conv_out(h, kernel, stride, ph, 1), conv_out(w, kernel, stride, ph, 1))


def _for(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    """`for` over a list of widths (as it is, or computed by an expression): one 1x1 conv or
    one stage of basic blocks per width, each named by a pattern that may read the variable."""
    draw = s.draw
    widths = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    var = draw(st.sampled_from(["item", "w"]))
    each = draw(st.sampled_from([widths, "${" + repr(widths) + "}", f"${{[{var} for {var} in {widths!r}]}}",
                                 f"${{[{widths!r}[k] for k in range({len(widths)})]}}"]))  # fmt: skip
    spec: dict[str, Any] = {"each": each}
    if var != "item" or draw(st.booleans()):
        spec["as"] = var
    form = draw(st.sampled_from(["conv", "stage"]))
    if form == "conv":
        spec["body"] = {"conv": {"out": f"${{{var}}}", "kernel": 1}}
    else:
        stage = {"block": "basic", "depth": draw(st.integers(1, 2)), "width": f"${{{var}}}"}
        if draw(st.booleans()):
            stage["names"] = f"b{{{var}}}-{{i}}"
        spec["body"] = {"stage": stage}
    patterns = ["{i}", "f{i}"] + ([f"c{{{var}}}"] if len(set(widths)) == len(widths) else [])
    if draw(st.booleans()):
        spec["names"] = draw(st.sampled_from(patterns))
        if draw(st.booleans()):
            spec["start"] = draw(st.integers(0, 2))
    s.features.add("for-" + form)
    return {"for": spec}, (widths[-1], *shape[1:])


def _seq(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    layers, shape = _chain(s, shape, depth + 1, s.draw(st.integers(1, 3)), allow_flatten=False)
    s.features.add("seq")
    value = _named_or_listed(s, layers)
    # (not inline around an inline parallel: at the top level nothing would run it)
    if isinstance(value, dict) and not _inline_parallel_in(layers) and s.draw(st.booleans()):
        s.features.add("inline")
        return {"seq": value, "inline": True}, shape
    return ({"seq": value} if isinstance(value, dict) or s.draw(st.booleans()) else value), shape


def _disabled(s: _State, shape: Shape, depth: int) -> tuple[Any, Shape]:
    """A layer switched off by `if: false` (it would not even fit if it were on)."""
    s.features.add("if-false")
    condition = s.draw(st.sampled_from([False, "${1 > 2}"]))
    return {"conv": {"out": 3, "kernel": 4000, "stride": 1}, "if": condition}, shape


FEATURE_MAP_LAYERS = [_conv, _pool, _activation, _batchnorm, _lrn, _dropout, _identity, _adaptive]
# One strategy per combinator of the registry (a new combinator without one fails here).
BY_KIND = {"seq": _seq, "residual": _residual, "parallel": _parallel, "stage": _stage, "dense": _dense, "gate": _gate, "for": _for}
COMBINATORS = [BY_KIND[kind] for kind in REGISTRY] + [_user_block_use, _disabled, _library]


def _chain(s: _State, shape: Shape, depth: int, n: int, *, allow_flatten: bool) -> tuple[list[Any], Shape]:
    draw = s.draw
    layers = []
    for _ in range(n):
        s.nodes += 1
        if len(shape) == 1:
            layer, shape = _head_layer(s, shape)
        else:
            combinator = depth < 3 and s.nodes < 24 and draw(st.sampled_from([True] + [False] * (depth + 1)))
            pick = draw(st.sampled_from(COMBINATORS if combinator else FEATURE_MAP_LAYERS))
            layer, shape = pick(s, shape, depth) if combinator else pick(s, shape)
        layers.append(layer)
    if all(isinstance(layer, dict) and "if" in layer for layer in layers):
        layers.append("identity")  # a sequence needs one layer that is switched on
    if allow_flatten and len(shape) == 3 and draw(st.booleans()):  # a classifier head
        s.features.add("flatten")
        layers.append("flatten")
        shape = (shape[0] * shape[1] * shape[2],)
        for _ in range(draw(st.integers(1, 3))):
            layer, shape = _head_layer(s, shape)
            layers.append(layer)
    return layers, shape


def _head_layer(s: _State, shape: Shape) -> tuple[Any, Shape]:
    draw = s.draw
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return _activation(s, shape)
    if choice == 1:
        return _dropout(s, shape)
    if choice == 2:
        return _batchnorm(s, shape)
    out = draw(st.integers(1, 12))
    s.features.add("linear")
    if draw(st.booleans()):
        return {"linear": out}, (out,)
    return {"linear": {"out": out, "bias": draw(st.booleans())}}, (out,)


INIT_RULES = [
    ("conv", "weight", {"kaiming_normal": {"mode": "fan_out", "nonlinearity": "relu"}}),
    ("conv", "weight", "xavier_uniform"),
    ("conv", "bias", "zeros"),
    ("linear", "weight", {"normal": {"std": 0.01}}),
    ("linear", "weight", {"trunc_normal": {"std": 0.02}}),
    ("linear", "bias", {"constant": 0.1}),
    ("linear", "weight", {"uniform": {"a": -0.1, "b": 0.1}}),
    ("batchnorm", "weight", "ones"),
    ("batchnorm", "bias", "zeros"),
]


@st.composite
def valid_specs(draw, max_top_layers: int = 6) -> Generated:
    """A random spec that must validate, build, and agree with torch on every shape."""
    s = _State(draw)
    if draw(st.sampled_from([True] + [False] * 9)):
        shape: Shape = (draw(st.integers(1, 24)),)  # flat features: an MLP
        s.features.add("flat-input")
    else:
        shape = (draw(st.integers(1, 4)), draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    data: dict[str, Any] = {"archc": 1, "name": "prop", "input": list(shape)}
    if draw(st.booleans()):
        data["description"] = "generated by tests/strategies.py"
    layers, out = _chain(s, shape, 0, draw(st.integers(1, max_top_layers)), allow_flatten=True)
    if draw(st.booleans()):  # a classifier head through a spec-level parameter
        classes = draw(st.integers(1, 10))
        data["params"] = {"num_classes": classes}
        if len(out) == 3:
            layers += [{"adaptive_avgpool": 1}, "flatten"]
        layers.append({"linear": {"out": "${num_classes}"}})
        out = (classes,)
        s.features.add("params")
    if draw(st.booleans()):
        picked = draw(st.lists(st.sampled_from(INIT_RULES), max_size=3, unique_by=lambda r: r[:2]))
        init: dict[str, dict] = {}
        for kind, tensor, rule in picked:
            init.setdefault(kind, {})[tensor] = rule
        if init:
            data["init"] = init
            s.features.add("init")
    if s.blocks:
        data["blocks"] = {
            name: {k: v for k, v in block.items() if not k.startswith("_")} for name, block in s.blocks.items()
        }
    data["body"] = _named_or_listed(s, layers, "layer")
    return Generated(data, out, flow=draw(st.booleans()), features=s.features)


# ---- breaking a valid spec -------------------------------------------------------------------


@dataclass
class Broken:
    """An invalid spec: bytes to write, and what was done to it."""

    raw: bytes
    mutation: str


def _walk_layers(node: Any, path: tuple, out: list[tuple[tuple, str, Any]]) -> None:
    """Every enabled primitive/combinator written in `node`, as (path, kind, params)."""
    if isinstance(node, list):
        for i, child in enumerate(node):
            _walk_layers(child, path + (i,), out)
        return
    if isinstance(node, str):
        out.append((path, node, None))
        return
    if not isinstance(node, dict):
        return
    if "if" in node:
        return  # possibly switched off: breaking it might not matter
    kinds = [k for k in node if k not in ("if", "inline")]
    combinator = REGISTRY.get(kinds[0]) if len(kinds) == 1 else None
    if combinator is not None and combinator.options is None:  # its value is its layers
        _walk_layers(node[kinds[0]], path + (kinds[0],), out)
        return
    if combinator is not None and "body" in combinator.options.model_fields:
        _walk_layers(node[kinds[0]]["body"], path + (kinds[0], "body"), out)
        out.append((path, kinds[0], node[kinds[0]]))
        return
    if len(kinds) == 1 and (kinds[0] in KNOWN_KINDS or combinator is not None):
        out.append((path, kinds[0], node[kinds[0]]))
        return
    if len(kinds) == 1 and isinstance(node[kinds[0]], dict) and (
        kinds[0].startswith(("cbr", "grow")) or kinds[0] in _library_blocks()
    ):
        out.append((path, kinds[0], node[kinds[0]]))  # a user block's use
        return
    for key, child in node.items():  # a mapping of named layers
        _walk_layers(child, path + (key,), out)


KNOWN_KINDS = tuple(PRIMITIVES)


def _get(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


def _set(data: Any, path: tuple, value: Any) -> None:
    _get(data, path[:-1])[path[-1]] = value


BAD_VALUES = {  # field -> values that field must refuse
    "out": ["wide", "64", 0, -3, 1.5, True, None, [8], {"a": 1}, 2**21, "${nope}", "${1/0}", "${'a'}", "${().x}", "${2**99}"],
    "kernel": [0, -1, "3", 5000, [1, 2, 3], 1.0, False],
    "stride": [0, -2, "two", [1, 0], 1e3],
    "padding": [-1, "one", 5000, [0, -1]],
    "dilation": [0, "x"],
    "groups": [0, "g", 2**21],
    "p": [1.5, -0.1, "half", ".nan"],
    "eps": [0.0, 2.0, "tiny"],
    "momentum": [1.5, "m"],
    "size": [0, "s", -1],
    "depth": [0, -1, 10**9, "two", 1.5],
    "width": [0, -4, "w"],
}
TOP_BAD = [
    ("input", [3, 0, 8]), ("input", [3, 8]), ("input", "big"), ("input", [3, 10**6, 10**6]),
    ("input", [2**21, 8, 8]), ("input", []), ("name", "1abc"), ("name", ["x"]), ("name", "a-b"),
    ("archc", 2), ("archc", "1"), ("body", []), ("body", {}), ("body", 3), ("params", [1]),
    ("blocks", {"basic": {"body": "relu"}}), ("blocks", {"relu": {"body": "relu"}}),
    ("blocks", {"class": {"body": "relu"}}), ("init", {"relu": {"weight": "zeros"}}),
    ("init", {"conv": {"weight": "sideways"}}), ("init", {"conv": {"bias": "kaiming_normal"}}),
    ("init", {"conv": {"weight": {"normal": {"std": -1.0}}}}), ("init", {"batchnorm": {"weight": "xavier_normal"}}),
    ("body", {"x": "flatten", "y": {"conv": {"out": 1, "kernel": 1}}}),
]  # fmt: skip


@st.composite
def invalid_specs(draw) -> Broken:
    """A valid spec broken in one way archc must refuse with a located error."""
    gen = draw(valid_specs(max_top_layers=3))
    data = copy.deepcopy(gen.data)
    layers: list[tuple[tuple, str, Any]] = []
    _walk_layers(data["body"], ("body",), layers)
    kind = draw(st.sampled_from(["value", "unknown-key", "removed-key", "unknown-kind", "top", "bad-name", "yaml", "bytes"]))
    flow = gen.flow

    if kind == "value":
        candidates = [
            (path, k, key) for path, k, params in layers if isinstance(params, dict)
            for key in params if key in BAD_VALUES
        ]  # fmt: skip
        if candidates:
            path, k, key = draw(st.sampled_from(candidates))
            bad = draw(st.sampled_from(BAD_VALUES[key]))
            if bad == ".nan":
                bad = float("nan")
            _get(data, path)[k][key] = bad
            return Broken(dump(data, flow).encode(), f"{k}.{key} = {bad!r}")
        kind = "top"
    if kind == "unknown-key":
        candidates = [(path, k) for path, k, params in layers if isinstance(params, dict)]
        if candidates:
            path, k = draw(st.sampled_from(candidates))
            _get(data, path)[k][draw(st.sampled_from(["strid", "outt", "kernal", "extra"]))] = 1
            return Broken(dump(data, flow).encode(), f"unknown key in {k}")
        data["bodyy"] = {}
        return Broken(dump(data, flow).encode(), "unknown top-level key")
    if kind == "removed-key":
        required = {
            kind: [name for name, f in model.model_fields.items() if f.is_required()]
            for kind, model in [(k, p.Params) for k, p in PRIMITIVES.items()]
            + [(k, c.options) for k, c in REGISTRY.items() if c.options is not None]
        }
        candidates = [
            (path, k, key) for path, k, params in layers if isinstance(params, dict)
            for key in required.get(k, []) if key in params
        ]  # fmt: skip
        if candidates and draw(st.booleans()):
            path, k, key = draw(st.sampled_from(candidates))
            del _get(data, path)[k][key]
            return Broken(dump(data, flow).encode(), f"removed {k}.{key}")
        key = draw(st.sampled_from(["archc", "name", "input", "body"]))
        del data[key]
        return Broken(dump(data, flow).encode(), f"removed top-level {key}")
    if kind == "unknown-kind" and not layers:
        kind = "top"
    if kind == "unknown-kind":
        path, k, params = draw(st.sampled_from(layers))
        typo = draw(st.sampled_from([k + "x", k.upper(), "conv2d", "Linear", "bottlenek"]))
        if params is None:
            _set(data, path, typo)
        else:
            node = _get(data, path)
            node[typo] = node.pop(k)
        options = REGISTRY[k].options if k in REGISTRY else None
        if options is not None and "block" in options.model_fields and draw(st.booleans()):  # or an unknown block inside it
            node = _get(data, path)
            node.clear()
            node[k] = {**(params or {}), "block": "bottlenek"}
        return Broken(dump(data, flow).encode(), f"unknown kind {typo!r}")
    if kind == "top":
        key, value = draw(st.sampled_from(TOP_BAD))
        data[key] = value
        return Broken(dump(data, flow).encode(), f"top-level {key} = {value!r}")
    if kind == "bad-name":
        name = draw(st.sampled_from(["forward", "_private", "training", "a.b", "a b", "parameters", ""]))  # keywords, digits and "-" are legal (torch allows them)
        body = data["body"]
        if isinstance(body, dict):
            body[name] = "relu"
        else:
            data["body"] = {name: "relu", "rest": body}
        return Broken(dump(data, flow).encode(), f"bad layer name {name!r}")
    if kind == "yaml":
        return Broken(_broken_yaml(draw, data).encode(), "broken YAML")
    return Broken(_broken_bytes(draw, dump(data, flow).encode()), "bad bytes")


def _broken_yaml(draw, data: dict) -> str:
    how = draw(st.sampled_from(["truncate-flow", "duplicate", "tab", "quote", "stray", "colon", "alias", "tag"]))
    if how == "truncate-flow":  # cut a one-line flow mapping before its closing brace
        text = yaml.safe_dump(data, sort_keys=False, default_flow_style=True, width=10**9).rstrip("\n")
        return text[: draw(st.integers(1, len(text) - 1))]
    text = dump(data, flow=False)  # block style: one key per line
    lines = text.splitlines()
    if how == "duplicate":  # repeat a `key: scalar` line at the same indentation
        simple = [i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("- ")
                  and not line.rstrip().endswith(":")]  # fmt: skip
        i = draw(st.sampled_from(simple))
        lines.insert(i + 1, lines[i])
    elif how == "tab":
        indented = [i for i, line in enumerate(lines) if line.startswith("  ")] or [len(lines) - 1]
        i = draw(st.sampled_from(indented))
        lines[i] = "\t" + lines[i].lstrip(" ")
    elif how == "quote":
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = lines[i].replace(": ", ': "', 1) if ": " in lines[i] else lines[i] + ' "'
    elif how == "stray":
        lines.insert(draw(st.integers(1, len(lines))), draw(st.sampled_from(["}", "]", "- - ] x", "{a: [", ": :"])))
    elif how == "colon":
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = lines[i] + ": x: y"
    elif how == "alias":
        lines.append("extra: *nowhere")
    else:
        lines.append(draw(st.sampled_from([
            "extra: !!python/object/apply:os.system ['true']", "extra: !!binary aGVsbG8=",
            "extra: !!set {a, b}", "extra: 2024-01-01", "<<: {x: 1}",
        ])))  # fmt: skip
    return "\n".join(lines) + "\n"


def _broken_bytes(draw, raw: bytes) -> bytes:
    at = draw(st.integers(0, len(raw)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\x00", b"\x07", b"\x1b[31m", b"\xed\xa0\x80"]))
    return raw[:at] + junk + raw[at:]

"""The primitive layers a spec can use, each defined once.

A primitive knows its parameters (a pydantic model), its static shape / parameter / MAC
rule, the `torch.nn` class and arguments that implement it, and a short label for diagrams.
Every backend reads these definitions; none re-derives them. This module never imports torch.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict
from pydantic_core import PydanticCustomError

MAX_CHANNELS = 1 << 20
MAX_KERNEL = 1 << 12
FLOAT32_MAX = 3.4028234663852886e38  # torch keeps these settings and weights as float32


def _fits_float32(value: float) -> float:
    """Refuse a number torch would turn into inf (or refuse) only when the model is built."""
    if abs(value) > FLOAT32_MAX:
        raise PydanticCustomError("float32_range", "Input should be within float32's range (±3.4e38)")
    return value


Float32 = AfterValidator(_fits_float32)

PosInt = Annotated[int, Strict(), Field(ge=1, le=MAX_CHANNELS)]
Kernel = Annotated[int, Strict(), Field(ge=1, le=MAX_KERNEL)]
Float = Annotated[float, Strict(), Field(allow_inf_nan=False), Float32]
Bool = Annotated[bool, Strict()]
PosPair = Union[Kernel, tuple[Kernel, Kernel]]
NonNegPair = Union[
    Annotated[int, Strict(), Field(ge=0, le=MAX_KERNEL)],
    tuple[Annotated[int, Strict(), Field(ge=0, le=MAX_KERNEL)], Annotated[int, Strict(), Field(ge=0, le=MAX_KERNEL)]],
]  # fmt: skip

# A tensor's dimensions without the batch: (C, H, W) for feature maps, (F,) for flat features,
# and whatever a permute or a linear over the last dimension makes, e.g. (H, W, C) channels last.
Shape = tuple[int, ...]


class StrictModel(BaseModel):
    """Every pydantic model of the spec language: unknown fields are errors.

    A model's validator is built when it is first used (`defer_build`): a run that validates a
    few kinds of layer does not pay for the rest at import. The docstring under each field is
    its description, read by `archc schema` (archc.jsonschema) when it writes the JSON Schema,
    not at import, where pydantic's `use_attribute_docstrings` would parse every class's source.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)


class Params(StrictModel):
    """A primitive's settings (immutable: validated settings are cached and shared)."""

    model_config = ConfigDict(frozen=True)


class ShapeError(ValueError):
    """The input shape cannot go through this layer (reported at the spec node)."""


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def pair_or_int(value: int | tuple[int, int]) -> int | tuple[int, int]:
    """Torch-style argument: an int when both sides agree, else a tuple."""
    a, b = pair(value)
    return a if a == b else (a, b)


@dataclass(frozen=True)
class TorchLayer:
    """How a backend instantiates a primitive: `nn.<cls>(*args, **kwargs)`.

    A layer torch.nn does not have (a channels-first LayerNorm, stochastic depth) sets `own`:
    `cls` is then archc's own class in archc/backends/torch_modules.py, which the live build
    imports and generated code carries as source (`own_source`), so neither depends on archc.
    Such a class is self-contained: it names nothing but torch, nn and OrderedDict.

    A layer that is a learnable tensor of its parent module rather than a module (`parameter`,
    ConvNeXt's layer_scale) is `nn.Parameter(torch.<cls>([*args], **kwargs))`, registered on
    the parent under the layer's name; the parent multiplies its input by it.
    """

    cls: str
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    own: bool = False
    parameter: bool = False


TORCH_MODULES = Path(__file__).parent / "backends" / "torch_modules.py"


def own_source(cls: str) -> str:
    """Source of archc's own module class `cls`, read without importing torch (for codegen)."""
    text = TORCH_MODULES.read_text(encoding="utf-8")
    for node in ast.parse(text).body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return ast.get_source_segment(text, node)
    raise KeyError(f"no class {cls!r} in {TORCH_MODULES.name}")


@dataclass(frozen=True)
class Inferred:
    out_shape: Shape
    params: int = 0
    macs: int = 0


def _feature_map(kind: str, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        got = "flat features" if len(shape) == 1 else f"a {len(shape)}-dimensional tensor"
        raise ShapeError(f"{kind} needs a C×H×W feature map, got {got} {fmt_shape(shape)}")
    return shape  # type: ignore[return-value]


def fmt_shape(shape: Shape) -> str:
    return "×".join(str(d) for d in shape)


def _window_out(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil: bool) -> int:
    span = dilation * (kernel - 1) + 1
    if size + 2 * pad < span:
        raise ShapeError(
            f"kernel {kernel} (dilation {dilation}) is larger than the padded input {size + 2 * pad}"
        )
    numerator = size + 2 * pad - span
    out = (math.ceil(numerator / stride) if ceil else numerator // stride) + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1  # PyTorch: the last window must start inside the input or left padding
    return out


class Primitive:
    """Base for primitive layers. Subclasses are registered by `kind`."""

    kind: ClassVar[str]
    Params: ClassVar[type[Params]]
    shorthand: ClassVar[str | None] = None  # field a bare scalar value fills, e.g. {dropout: 0.5}
    has_weights: ClassVar[bool] = False
    category: ClassVar[str] = "other"  # what it does, for diagrams: conv, linear, norm, activation, pool
    new_tensor: ClassVar[bool] = True  # its output is a new tensor, not a view of its input
    # a learnable tensor its parent module holds (and multiplies by), not a module of its own
    parameter: ClassVar[bool] = False

    def buffer_bytes(self, p: Any, shape: Shape) -> int:
        """Bytes of the buffers (non-trainable state) its torch module keeps."""
        return 0

    def infer(self, p: Any, shape: Shape) -> Inferred:
        return Inferred(shape)

    def torch_layer(self, p: Any, shape: Shape) -> TorchLayer:
        raise NotImplementedError

    def label(self, p: Any, out_shape: Shape) -> str:
        return self.kind

    def detail(self, p: Any) -> str:
        """A setting the summary table shows beside the kind (most layers: none)."""
        return ""

    def working_elements(self, p: Any, in_shape: Shape) -> int:
        """Elements of the temporary tensors a forward pass allocates besides its output, per
        sample (for the memory estimate); most layers need none."""
        return 0


PRIMITIVES: dict[str, Primitive] = {}


def primitive(cls: type[Primitive]) -> type[Primitive]:
    PRIMITIVES[cls.kind] = cls()
    return cls


@primitive
class Conv(Primitive):
    kind = "conv"
    category = "conv"
    has_weights = True

    class Params(Params):
        out: PosInt
        """Output channels."""
        kernel: PosPair
        """Kernel size: an int or [height, width]."""
        stride: PosPair = 1
        """Stride: an int or [height, width]."""
        padding: NonNegPair = 0
        """Zero padding on each side: an int or [height, width]."""
        dilation: PosPair = 1
        """Spacing between kernel elements: an int or [height, width]."""
        groups: PosInt = 1
        """Channel groups (must divide the input and output channels)."""
        bias: Bool = True
        """Add a learnable bias."""

    def infer(self, p, shape):
        c, h, w = _feature_map("conv", shape)
        if c % p.groups or p.out % p.groups:
            raise ShapeError(
                f"groups={p.groups} must divide both input channels ({c}) and out ({p.out})"
            )
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (p.kernel, p.stride, p.padding, p.dilation))
        oh = _window_out(h, kh, sh, ph, dh, False)
        ow = _window_out(w, kw, sw, pw, dw, False)
        per_output = (c // p.groups) * kh * kw
        params = p.out * per_output + (p.out if p.bias else 0)
        return Inferred((p.out, oh, ow), params, p.out * oh * ow * per_output)

    def torch_layer(self, p, shape):
        kwargs = {"kernel_size": pair_or_int(p.kernel)}
        for name, value, default in (
            ("stride", p.stride, 1), ("padding", p.padding, 0), ("dilation", p.dilation, 1),
        ):  # fmt: skip
            if pair_or_int(value) != default:
                kwargs[name] = pair_or_int(value)
        if p.groups != 1:
            kwargs["groups"] = p.groups
        if not p.bias:
            kwargs["bias"] = False
        return TorchLayer("Conv2d", (shape[0], p.out), kwargs)

    def label(self, p, out_shape):
        kh, kw = pair(p.kernel)
        sh, sw = pair(p.stride)
        text = f"conv {kh}×{kw}"
        if (sh, sw) != (1, 1):
            text += f" /{sh}" if sh == sw else f" /{sh}×{sw}"
        if pair(p.dilation) != (1, 1):
            dh, dw = pair(p.dilation)
            text += f" dil {dh}" if dh == dw else f" dil {dh}×{dw}"
        text += f", {p.out}"
        if p.groups != 1:
            text += f", groups {p.groups}"
        return text


@primitive
class BatchNorm(Primitive):
    kind = "batchnorm"
    category = "norm"
    has_weights = True

    class Params(Params):
        eps: Annotated[float, Strict(), Field(gt=0, lt=1)] = 1e-5
        """Added to the variance for numerical stability."""
        momentum: Annotated[float, Strict(), Field(ge=0, le=1)] = 0.1
        """Weight of the current batch in the running statistics."""
        affine: Bool = True
        """Learnable scale and shift."""

    def infer(self, p, shape):
        return Inferred(shape, 2 * shape[0] if p.affine else 0)

    def buffer_bytes(self, p, shape):
        return 2 * shape[0] * 4 + 8  # running mean and variance (float32), batch counter (int64)

    def torch_layer(self, p, shape):
        kwargs = {}
        if p.eps != 1e-5:
            kwargs["eps"] = p.eps
        if p.momentum != 0.1:
            kwargs["momentum"] = p.momentum
        if not p.affine:
            kwargs["affine"] = False
        return TorchLayer("BatchNorm2d" if len(shape) == 3 else "BatchNorm1d", (shape[0],), kwargs)

    def label(self, p, out_shape):
        return "batchnorm"


class _Activation(Primitive):
    category = "activation"
    torch_cls: ClassVar[str]

    class Params(Params):
        inplace: Bool = False
        """Overwrite the input instead of allocating the output."""

    def torch_layer(self, p, shape):
        kwargs = {k: v for k, v in p.model_dump().items() if v != type(p).model_fields[k].default}
        return TorchLayer(self.torch_cls, (), kwargs)


def _activation(kind: str, torch_cls: str, params: type[Params] = _Activation.Params):
    cls = type(kind.title(), (_Activation,), {"kind": kind, "torch_cls": torch_cls, "Params": params})
    return primitive(cls)


class _NoParams(Params):
    pass


class _LeakyParams(Params):
    negative_slope: Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False), Float32] = 0.01
    """Slope for negative inputs."""
    inplace: Bool = False
    """Overwrite the input instead of allocating the output."""


_activation("relu", "ReLU")
_activation("relu6", "ReLU6")
_activation("silu", "SiLU")
_activation("hardswish", "Hardswish")
_activation("leaky_relu", "LeakyReLU", _LeakyParams)
_activation("gelu", "GELU", _NoParams)
_activation("sigmoid", "Sigmoid", _NoParams)
_activation("hardsigmoid", "Hardsigmoid")
_activation("tanh", "Tanh", _NoParams)


class _Pool(Primitive):
    category = "pool"
    torch_cls: ClassVar[str]
    shorthand = "kernel"

    class Params(Params):
        kernel: PosPair
        """Window size: an int or [height, width]."""
        stride: PosPair | None = None  # defaults to the kernel, as in PyTorch
        """Stride: an int or [height, width] (default: the kernel)."""
        padding: NonNegPair = 0
        """Padding on each side (at most half the kernel): an int or [height, width]."""
        ceil_mode: Bool = False
        """Round the output size up instead of down."""

    def infer(self, p, shape):
        c, h, w = _feature_map(self.kind, shape)
        kernel, padding = pair(p.kernel), pair(p.padding)
        stride = pair(p.stride if p.stride is not None else p.kernel)
        if padding[0] * 2 > kernel[0] or padding[1] * 2 > kernel[1]:
            raise ShapeError(f"padding {p.padding} must be at most half the kernel {p.kernel}")
        oh = _window_out(h, kernel[0], stride[0], padding[0], 1, p.ceil_mode)
        ow = _window_out(w, kernel[1], stride[1], padding[1], 1, p.ceil_mode)
        return Inferred((c, oh, ow))

    def torch_layer(self, p, shape):
        kwargs: dict[str, Any] = {"kernel_size": pair_or_int(p.kernel)}
        if p.stride is not None and pair(p.stride) != pair(p.kernel):
            kwargs["stride"] = pair_or_int(p.stride)
        if pair(p.padding) != (0, 0):
            kwargs["padding"] = pair_or_int(p.padding)
        if p.ceil_mode:
            kwargs["ceil_mode"] = True
        return TorchLayer(self.torch_cls, (), kwargs)

    def label(self, p, out_shape):
        k = pair(p.kernel)
        s = pair(p.stride if p.stride is not None else p.kernel)
        text = f"{self.kind} {k[0]}×{k[1]}"
        if s != (1, 1):
            text += f" /{s[0]}" if s[0] == s[1] else f" /{s[0]}×{s[1]}"
        return text + (", ceil" if p.ceil_mode else "")


@primitive
class MaxPool(_Pool):
    kind = "maxpool"
    torch_cls = "MaxPool2d"


@primitive
class AvgPool(_Pool):
    kind = "avgpool"
    torch_cls = "AvgPool2d"


class _AdaptivePool(Primitive):
    category = "pool"
    torch_cls: ClassVar[str]
    shorthand = "size"

    class Params(Params):
        size: PosPair
        """Output size: an int or [height, width]."""

    def infer(self, p, shape):
        c, _, _ = _feature_map(self.kind, shape)
        return Inferred((c, *pair(p.size)))

    def torch_layer(self, p, shape):
        return TorchLayer(self.torch_cls, (pair_or_int(p.size),))

    def label(self, p, out_shape):
        return f"{self.kind.replace('adaptive_', 'adaptive ')} → {fmt_shape(pair(p.size))}"


@primitive
class AdaptiveAvgPool(_AdaptivePool):
    kind = "adaptive_avgpool"
    torch_cls = "AdaptiveAvgPool2d"


@primitive
class AdaptiveMaxPool(_AdaptivePool):
    kind = "adaptive_maxpool"
    torch_cls = "AdaptiveMaxPool2d"


@primitive
class Linear(Primitive):
    """torch's Linear: over the last dimension of any tensor, the others kept (a classifier on
    flat features; ConvNeXt's pointwise layers on a channels-last map)."""

    kind = "linear"
    category = "linear"
    shorthand = "out"
    has_weights = True

    class Params(Params):
        out: PosInt
        """Output features."""
        bias: Bool = True
        """Add a learnable bias."""

    def infer(self, p, shape):
        *rest, features = shape
        params = features * p.out + (p.out if p.bias else 0)
        return Inferred((*rest, p.out), params, math.prod(rest) * features * p.out)

    def torch_layer(self, p, shape):
        return TorchLayer("Linear", (shape[-1], p.out), {} if p.bias else {"bias": False})

    def label(self, p, out_shape):
        return f"linear, {p.out}"


class _LayerNorm(Primitive):
    category = "norm"
    has_weights = True
    torch_cls: ClassVar[str]
    own: ClassVar[bool] = False

    class Params(Params):
        eps: Annotated[float, Strict(), Field(gt=0, lt=1)] = 1e-5
        """Added to the variance for numerical stability."""
        elementwise_affine: Bool = True
        """Learnable per-element scale (and shift, with bias)."""
        bias: Bool = True
        """Learnable shift (with elementwise_affine)."""

    def normalized(self, shape: Shape) -> int:
        raise NotImplementedError

    def infer(self, p, shape):
        size = self.normalized(shape)
        return Inferred(shape, (size * (2 if p.bias else 1)) if p.elementwise_affine else 0)

    def torch_layer(self, p, shape):
        kwargs = {}
        if p.eps != 1e-5:
            kwargs["eps"] = p.eps
        if not p.elementwise_affine:
            kwargs["elementwise_affine"] = False
        if not p.bias:
            kwargs["bias"] = False
        return TorchLayer(self.torch_cls, (self.normalized(shape),), kwargs, own=self.own)


@primitive
class LayerNorm(_LayerNorm):
    """torch's LayerNorm over the last dimension (ConvNeXt's blocks, on a channels-last map)."""

    kind = "layernorm"
    torch_cls = "LayerNorm"

    def normalized(self, shape):
        return shape[-1]


@primitive
class LayerNorm2d(_LayerNorm):
    """Layer norm over the channels of a C×H×W map at each position (torchvision's
    LayerNorm2d: permuted channels last, F.layer_norm, permuted back)."""

    kind = "layernorm2d"
    torch_cls = "LayerNorm2d"
    own = True

    def normalized(self, shape):
        return _feature_map("layernorm2d", shape)[0]


@primitive
class Permute(Primitive):
    """torchvision's Permute: the input's dimensions reordered, the batch's included (it stays
    first): [0, 2, 3, 1] makes a C×H×W map H×W×C (channels last), [0, 3, 1, 2] turns it back.
    The output is a view."""

    kind = "permute"
    shorthand = "dims"
    new_tensor = False

    class Params(Params):
        dims: Annotated[
            tuple[Annotated[int, Strict(), Field(ge=0, le=7)], ...], Field(min_length=2, max_length=8)
        ]
        """The new order of the dimensions, batch (0) included: a permutation of 0 ... rank."""

    def infer(self, p, shape):
        rank = len(shape) + 1
        if sorted(p.dims) != list(range(rank)):
            raise ShapeError(
                f"permute dims {list(p.dims)} must order all {rank} dimensions of a "
                f"{fmt_shape(shape)} input and its batch: a permutation of 0 ... {rank - 1}"
            )
        if p.dims[0] != 0:
            raise ShapeError(f"permute dims {list(p.dims)} must keep the batch (0) first")
        return Inferred(tuple(shape[d - 1] for d in p.dims[1:]))

    def torch_layer(self, p, shape):
        return TorchLayer("Permute", (list(p.dims),), own=True)

    def label(self, p, out_shape):
        return f"permute {list(p.dims)}"


@primitive
class Scale(Primitive):
    """A learnable scale that is a tensor of the module holding it, not a module: the input
    multiplied by it, one value per channel (C×1×1 on a feature map), all initialised to
    `init`. ConvNeXt's layer_scale (CaiT's LayerScale): `features.1.0.layer_scale`."""

    kind = "scale"
    shorthand = "init"
    parameter = True

    class Params(Params):
        init: Float = 1.0
        """The value every element starts at (ConvNeXt: 1e-6)."""

    def tensor_shape(self, shape: Shape) -> Shape:
        return (shape[0],) + (1,) * (len(shape) - 1)

    def infer(self, p, shape):
        return Inferred(shape, shape[0])

    def torch_layer(self, p, shape):
        return TorchLayer("full", self.tensor_shape(shape), {"fill_value": p.init}, parameter=True)

    def detail(self, p):
        return f"init={p.init:g}"

    def label(self, p, out_shape):
        return f"× scale {fmt_shape(self.tensor_shape(out_shape))}"


@primitive
class Dropout(Primitive):
    kind = "dropout"
    shorthand = "p"

    class Params(Params):
        p: Annotated[float, Strict(), Field(ge=0, le=1)] = 0.5
        """Probability of zeroing an element."""
        inplace: Bool = False
        """Overwrite the input instead of allocating the output."""

    def torch_layer(self, p, shape):
        kwargs: dict[str, Any] = {"p": p.p} if p.p != 0.5 else {}
        if p.inplace:
            kwargs["inplace"] = True
        return TorchLayer("Dropout", (), kwargs)

    def label(self, p, out_shape):
        return f"dropout {p.p:g}"


@primitive
class StochasticDepth(Primitive):
    """torchvision.ops.StochasticDepth: in training, each sample's ("row") or the whole batch's
    ("batch") input is zeroed with probability p and the rest scaled by 1/(1-p); the identity
    in eval. It sits at the end of a residual body (EfficientNet's MBConv)."""

    kind = "stochastic_depth"
    shorthand = "p"

    class Params(Params):
        p: Annotated[float, Strict(), Field(ge=0, le=1)]
        """Probability of dropping a sample's (or the batch's) input in training."""
        mode: Literal["row", "batch"] = "row"
        """row: drop samples of the batch independently; batch: the whole batch at once."""

    def torch_layer(self, p, shape):
        return TorchLayer("StochasticDepth", (p.p, p.mode), own=True)

    def detail(self, p):
        return f"p={p.p:.4g}" + ("" if p.mode == "row" else f", {p.mode}")

    def label(self, p, out_shape):
        return f"stochastic depth {p.p:.4g}" + ("" if p.mode == "row" else f" {p.mode}")


@primitive
class Flatten(Primitive):
    kind = "flatten"
    Params = _NoParams
    new_tensor = False

    def infer(self, p, shape):
        return Inferred((math.prod(shape),))

    def torch_layer(self, p, shape):
        return TorchLayer("Flatten")


@primitive
class Identity(Primitive):
    kind = "identity"
    Params = _NoParams
    new_tensor = False

    def torch_layer(self, p, shape):
        return TorchLayer("Identity")


@primitive
class ChannelShuffle(Primitive):
    """ShuffleNet's channel shuffle (torchvision's `channel_shuffle`): the channels, seen as a
    `groups × C/groups` grid, are read column by column (a view, a transpose and a view back).
    It has no parameters and keeps the shape."""

    kind = "channel_shuffle"
    shorthand = "groups"

    class Params(Params):
        groups: PosInt
        """Number of groups the channels are split into before being interleaved."""

    def infer(self, p, shape):
        channels, _, _ = _feature_map("channel_shuffle", shape)
        if channels % p.groups:
            raise ShapeError(
                f"channel_shuffle: {channels} channels do not split into {p.groups} groups"
            )
        return Inferred(shape)

    def torch_layer(self, p, shape):
        return TorchLayer("ChannelShuffle", (p.groups,), own=True)

    def label(self, p, out_shape):
        return f"channel shuffle {p.groups}"


@primitive
class LocalResponseNorm(Primitive):
    kind = "lrn"
    category = "norm"
    shorthand = "size"

    class Params(Params):
        size: PosInt
        """Number of neighbouring channels to normalise over."""
        alpha: Float = 1e-4
        """Multiplicative factor."""
        beta: Float = 0.75
        """Exponent."""
        k: Float = 1.0
        """Additive factor."""

    def infer(self, p, shape):
        _feature_map("lrn", shape)
        return Inferred(shape)

    def torch_layer(self, p, shape):
        kwargs = {
            name: getattr(p, name)
            for name, default in (("alpha", 1e-4), ("beta", 0.75), ("k", 1.0))
            if getattr(p, name) != default
        }
        return TorchLayer("LocalResponseNorm", (p.size,), kwargs)

    def label(self, p, out_shape):
        return f"lrn {p.size}"

    def working_elements(self, p, in_shape):
        """torch squares the input (C x H x W) and pads the square with `size - 1` channels
        ((C + size - 1) x H x W) before averaging: a huge `size` costs that much however small
        the input."""
        channels, *rest = in_shape
        return (2 * channels + p.size - 1) * math.prod(rest)

"""Pydantic models for everything in a spec that is not a node of the network."""

from __future__ import annotations

import keyword
import re
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, ConfigDict, Field, Strict, field_validator, model_validator
from pydantic_core import PydanticCustomError

from archc.primitives import MAX_CHANNELS, Float32, StrictModel

SPEC_VERSION = 1  # the `archc:` value of the spec format this package reads
MAX_DEPTH_PER_STAGE = 10_000
MAX_SPATIAL = 1 << 14

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# nn.Module attributes a child module name must not shadow (add_module refuses them).
RESERVED_NAMES = frozenset(
    """T_destination add_module append apply bfloat16 buffers call_super_init children compile
    cpu cuda double dump_patches eval extend extra_repr float forward get_buffer get_extra_state
    get_parameter get_submodule half insert ipu load_state_dict modules mtia named_buffers
    named_children named_modules named_parameters parameters pop register_backward_hook
    register_buffer register_forward_hook register_forward_pre_hook register_full_backward_hook
    register_full_backward_pre_hook register_load_state_dict_post_hook
    register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state
    set_submodule share_memory state_dict to to_empty train training type xpu zero_grad""".split()
)  # public attributes of nn.Module and nn.Sequential; tests/test_errors.py keeps it current


def check_name(name: str) -> str | None:
    """Why `name` cannot be an identifier (a block, a parameter, a variant), or None if it can."""
    if not NAME_RE.match(name):
        return f"{name!r} is not a valid name (letters, digits and _, not starting with a digit)"
    if keyword.iskeyword(name):
        return f"{name!r} is a Python keyword and cannot name a module"
    if name in RESERVED_NAMES or name.startswith("_"):
        return f"{name!r} is reserved by torch.nn.Module"
    return None


def check_module_name(name: Any) -> str | None:
    """Why `name` cannot name a module, or None if it can: any name torch's `add_module`
    accepts (a non-empty string without dots, `block1-0` or `class` too) that is not one of
    nn.Module's own attributes; names starting with _ are left to torch's and archc's internals."""
    if not isinstance(name, str):
        return f"{name!r} is not a valid name (a layer name is a string)"
    if not name:
        return "a layer name cannot be empty"
    if "." in name:
        return f"{name!r} is not a valid name (a module name cannot contain '.', the state_dict separator)"
    if not name.isprintable() or any(c.isspace() for c in name):
        return f"{name!r} is not a valid name (no spaces or control characters)"
    if name in RESERVED_NAMES or name.startswith("_"):
        return f"{name!r} is reserved by torch.nn.Module"
    return None


Scalar = Union[Annotated[bool, Strict()], Annotated[int, Strict()], Annotated[float, Strict()], str]
ArgValue = Union[Scalar, list[Scalar]]


class InitRule(StrictModel):
    """How one parameter tensor of a layer kind is initialised."""

    kind: Literal[
        "default", "zeros", "ones", "constant", "normal", "trunc_normal", "uniform",
        "kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "uniform_fan", "normal_fan",
    ]  # fmt: skip
    """The initialiser (a torch.nn.init function)."""
    args: dict[str, Annotated[float, Strict(), Field(allow_inf_nan=False), Float32] | Literal["fan_in", "fan_out", "relu", "leaky_relu", "linear", "sigmoid"]] = {}
    """The initialiser's arguments (mean, std, a, b, val, gain, mode, nonlinearity, scale)."""

    @model_validator(mode="after")
    def _torch_accepts(self) -> InitRule:
        """Refuse arguments torch.nn.init would only reject when the model is built."""
        for key, value in self.args.items():
            choices = INIT_CHOICES.get(key)
            if choices is not None and value not in choices:
                raise PydanticCustomError("init_arg", f"{key} is one of {', '.join(choices)}, not {value!r}")
            if choices is None and isinstance(value, str):
                raise PydanticCustomError("init_arg", f"{key} is a number, not {value!r}")
        if self.args.get("std", 1.0) < 0 or (self.kind == "trunc_normal" and self.args.get("std") == 0):
            raise PydanticCustomError("init_arg", "std must be positive" if self.kind == "trunc_normal" else "std must be at least 0")
        bounds = {"uniform": (0.0, 1.0), "trunc_normal": (-2.0, 2.0)}.get(self.kind)  # defaults
        if bounds and self.args.get("a", bounds[0]) > self.args.get("b", bounds[1]):
            raise PydanticCustomError("init_arg", "a must be at most b")
        return self


INIT_CHOICES = {"mode": ("fan_in", "fan_out"), "nonlinearity": ("relu", "leaky_relu", "linear", "sigmoid")}
FAN_BASED = frozenset({"kaiming_normal", "kaiming_uniform", "xavier_normal", "xavier_uniform", "uniform_fan", "normal_fan"})


INIT_ARGS = {
    "default": set(),
    "zeros": set(),
    "ones": set(),
    "constant": {"val"},
    "normal": {"mean", "std"},
    "trunc_normal": {"mean", "std", "a", "b"},
    "uniform": {"a", "b"},
    "kaiming_normal": {"a", "mode", "nonlinearity"},
    "kaiming_uniform": {"a", "mode", "nonlinearity"},
    "xavier_normal": {"gain"},
    "xavier_uniform": {"gain"},
    "uniform_fan": {"mode"},  # uniform(±1/sqrt(fan)), EfficientNet's linear (mode: fan_out)
    "normal_fan": {"mode", "scale"},  # normal(0, sqrt(scale/fan)), RegNet's convs (fan_out, 2.0)
}


def _freeze_pattern(pattern: str) -> str:
    if not pattern or not pattern.isprintable() or any(c.isspace() for c in pattern):
        raise ValueError("a freeze pattern is a module path or glob pattern without spaces, e.g. layer1 or 'layer[1-3]'")
    return pattern


FreezePattern = Annotated[str, AfterValidator(_freeze_pattern)]


class SpecHeader(StrictModel):
    """The top level of a spec file; `blocks`, `init` and `body` are checked by their own code."""

    archc: int = Field(description="spec format version")
    name: str
    """The model's name (a Python identifier; the generated class is named after it)."""
    description: str = ""
    """What the model is."""
    input: list[Annotated[int, Strict(), Field(ge=1, le=MAX_SPATIAL)]]
    """Input shape without the batch: [channels, height, width] or [features]."""
    params: dict[str, ArgValue] = {}
    """Model parameters, usable in ${...} expressions."""
    let: dict[str, Any] = {}
    """Values derived from the params, in order (each a ${...} that may read the params and the
    lets before it; lists too), usable in ${...} expressions like params: a design space's
    parameters turned into stage widths and depths."""
    requires: list[str] = []
    """Conditions (${...} expressions over the params and lets) a variant or --set must meet."""
    init: dict[str, dict[str, Any]] = {}
    """Weight initialisation by layer kind: {conv: {weight: initialiser, bias: initialiser}}."""
    blocks: dict[str, Any] = {}
    """Block templates defined by this spec, usable as layers by name."""
    defaults: dict[str, dict[str, Any]] = {}
    """Settings every layer of a kind gets unless it sets them itself, inside blocks too: {batchnorm: {eps: 0.001}}."""
    outputs: list[str] = []
    """What the model returns, in order. Each entry is a layer's module path (a feature tap: its
    output; a top-level layer, or one inside sequences: layer3.2), a head's `output`, or (first,
    in a model with heads and no taps) the main output's name. With a tap the model returns a dict {entry: tensor} in train and eval mode
    (heads' entries in train mode only); without, in train mode the namedtuple of the main
    output and the heads' (heads switched off by `if` left out). Default: out, then the heads
    in body order."""
    include_top: Annotated[bool, Strict()] = True
    """false: leave out the top-level layers after the last tap in outputs (the classifier):
    a feature extractor, as timm's features_only."""
    freeze: list[FreezePattern] = []
    """Modules to freeze for fine-tuning, by path or glob pattern ([conv1, bn1, "layer[1-3]"]):
    their parameters get no gradients and they stay in eval mode when the model is put in train
    mode, so their batch norms keep their running statistics. A pattern must match a module."""
    body: dict[str, Any] | list[Any]
    """The network: named layers in order (a mapping) or a list of layers."""

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("outputs names each output once")
        return value

    @field_validator("archc", mode="before")
    @classmethod
    def _version(cls, value: Any) -> int:
        """Exactly the integer 1: YAML's `true` and `1.0` equal 1 in Python but are not versions."""
        if type(value) is not int or value != SPEC_VERSION:
            raise ValueError(f"archc is the spec format version; this archc reads version {SPEC_VERSION}")
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError("name must be letters, digits and _, not starting with a digit")
        return value

    @field_validator("input")
    @classmethod
    def _input(cls, value: list[int]) -> list[int]:
        if len(value) not in (1, 3):
            raise ValueError("input is [channels, height, width] or [features]")
        if value[0] > MAX_CHANNELS:
            raise ValueError(f"input channels must be at most {MAX_CHANNELS}")
        return value


class Template(StrictModel):
    """A block type: named parameters (null = required) and one node as its body."""

    doc: str = ""
    """What the block is."""
    params: dict[str, ArgValue | None] = {}
    """The block's parameters and their defaults (null: required)."""
    let: dict[str, str] = {}  # derived values, e.g. mid: ${width * base_width // 64}
    """Derived values, e.g. mid: ${width * base_width // 64}."""
    requires: list[str] = []
    """Conditions (expressions) the arguments must satisfy."""
    body: Any
    """The block's layer (one node)."""

    def reserved_name(self) -> tuple[str, str] | None:
        """('params' or 'let', name) of a name archc sets itself, which the template must not
        declare: its value would be silently replaced by (or replace) the real one."""
        for section in ("params", "let"):
            for name in getattr(self, section):
                if name in TEMPLATE_RESERVED:
                    return section, name
        return None


# set by archc: from the block's input shape; a stage block's place in the network
TEMPLATE_RESERVED = frozenset({"in_channels", "block_id", "total_blocks"})


class Repeat(StrictModel):
    """Shared fields of `stage` and `dense`: a block repeated `depth` times."""

    model_config = ConfigDict(extra="allow")  # the rest are the block's arguments

    block: str
    """The block template repeated."""
    depth: Annotated[int, Strict(), Field(ge=1, le=MAX_DEPTH_PER_STAGE)]
    """How many blocks."""
    names: str = "{i}"
    """Pattern naming each block, with one {i} (its number); {name} fills in a whole-number
    variable in scope (block{s}-{i} inside a for over s)."""
    start: Annotated[int, Strict(), Field(ge=0)] = 0
    """The first block's number."""

    @field_validator("names")
    @classmethod
    def _names(cls, value: str) -> str:
        if value.count("{i}") != 1 or check_module_name(value.replace("{i}", "0")) or "{" in value.replace("{i}", ""):
            raise ValueError("names is a pattern with one {i} making module names, e.g. '{i}', 'denselayer{i}' or 'block1-{i}'")
        return value

    def block_args(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Projection(StrictModel):
    """A residual's 1x1 convolution shortcut."""

    name: str = "downsample"
    """Name of the projection module."""
    batchnorm: Annotated[bool, Strict()] = True
    """Follow the convolution with a batch norm."""
    bias: Annotated[bool, Strict()] = False
    """Give the convolution a bias."""
    always: Annotated[bool, Strict()] = False
    """Project even when the shape does not change."""


class Head(StrictModel):
    """`head:` on a top-level layer: an auxiliary output (GoogLeNet's aux1, Inception v3's AuxLogits)."""

    source: str = Field(alias="from")
    """The earlier top-level layer whose output the head reads."""
    output: str | None = None
    """The output's name (a field of the train-mode output tuple); default the layer's name."""

    @field_validator("output")
    @classmethod
    def _output(cls, value: str | None) -> str | None:
        if value is not None and check_name(value):
            raise ValueError(f"output {value!r} is not a Python identifier (it names a field of the output tuple)")
        return value


class Residual(StrictModel):
    """A residual connection's settings."""

    body: dict[str, Any] | list[Any]
    """The residual branch's layers."""
    shortcut: Any = "auto"
    """auto, identity, if_shapes_match, {projection: {...}} or {custom: {name: layer}}."""
    post: str | None = "relu"
    """Activation after the sum, or none."""



class Parallel(StrictModel):
    """A parallel block's settings (the long form; the short one is just its branches)."""

    branches: dict[str, Any]
    """The branches by name, in order; an empty list is the identity (no parameters)."""
    split: Annotated[bool, Strict()] = False
    """Give each branch one equal chunk of the input channels, in order (torch.chunk), instead
    of the whole input; the channels must divide by the number of branches."""
    post: Any = None
    """Parameter-free layers after the concatenation, children of the block after the branches
    (e.g. {channel_shuffle: 2}), or none."""


class For(StrictModel):
    """`for`: one copy of `body` per item of a list, in sequence."""

    each: list[Any]
    """The items (usually a ${...} list: range(len(widths)))."""
    var: str = Field("item", alias="as")
    """The variable the body reads the item as."""
    names: str = "{i}"
    """Pattern naming each copy: {i} its number (from start), {var} any whole-number variable."""
    start: Annotated[int, Strict(), Field(ge=0)] = 0
    """The first copy's number."""
    body: Any
    """The layer repeated (one node; a stage, a block, a seq...)."""

    @field_validator("var")
    @classmethod
    def _var(cls, value: str) -> str:
        problem = check_name(value)
        if problem:
            raise ValueError(problem)
        return value

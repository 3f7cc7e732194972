"""Values in generated code, their Python literals, and the identifiers generated code uses.

`Var` marks a value that is a model-level parameter, `Progression` a value along a run of
repeated blocks (base + i * step), `MISSING` a value an instance does not have. `Namespace`
hands out identifiers (after torch.fx's `_Namespace.create_name`): one per scope (the module,
a forward method), so no generated name collides with a keyword, a builtin, a name the
generated code uses itself, or another generated name.
"""

from __future__ import annotations

import builtins
import json
import keyword
import re
from dataclasses import dataclass
from typing import Any

from archc.combinators import COMBINATORS
from archc.spec.schema import NAME_RE

# Names the generated code uses itself (with the helper classes combinators bring, `Dense`);
# spec names that collide get another spelling.
TAKEN = frozenset({"self", "m", "i", "_", "torch", "nn", "OrderedDict"}) | {
    c.codegen.base for c in COMBINATORS.values() if c.codegen.helper
}
LOCALS = frozenset({"x", "out", "identity"})  # forward's own variables
ARG_NAMES = {  # positional arguments of the nn layers archc emits, for naming constructor args
    "Conv2d": ("in_channels", "out_channels"),
    "Linear": ("in_features", "out_features"),
    "BatchNorm2d": ("num_features",),
    "BatchNorm1d": ("num_features",),
    "LocalResponseNorm": ("size",),
    "AdaptiveAvgPool2d": ("output_size",),
    "AdaptiveMaxPool2d": ("output_size",),
}
FAMILY_NAMES = {  # how architecture names are capitalised, for the model's class name
    "alexnet": "AlexNet", "densenet": "DenseNet", "googlenet": "GoogLeNet", "lenet": "LeNet",
    "mobilenet": "MobileNet", "nin": "NiN", "resnet": "ResNet", "resnext": "ResNeXt",
    "vgg": "VGG", "inception": "Inception", "efficientnet": "EfficientNet", "convnext": "ConvNeXt",
    "cnblock": "CNBlock",
}  # fmt: skip


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a value an instance does not have (optional layer, shorter run)


@dataclass(frozen=True)
class Var:
    """A value that is a model-level parameter of the spec: the generated code names it."""

    name: str
    value: Any


@dataclass(frozen=True)
class Progression:
    """A value along a run of repeated blocks: base + i * step (step MISSING in a run of one)."""

    base: Any
    step: Any


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type (True is not 1 here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, (Var, Progression)):
        return all(same(x, y) for x, y in zip(a.__dict__.values(), b.__dict__.values()))
    return a == b


def plain(value: Any) -> Any:
    return value.value if isinstance(value, Var) else value


def literal(value: Any) -> str:
    """Python source for a value, in ruff format's style (double quotes)."""
    if isinstance(value, Var):
        return value.name
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(literal, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(literal, value)) + "]"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    raise TypeError(f"no literal for {value!r}")  # pragma: no cover


def annotation(values: list) -> str:
    """A type annotation covering the values an argument takes."""

    def one(v: Any) -> str:
        v = v.value if isinstance(v, Var) else v
        if isinstance(v, (tuple, list)):
            inner = sorted({one(e) for e in v}) or ["int"]
            return (
                f"tuple[{', '.join(one(e) for e in v)}]"
                if isinstance(v, tuple)
                else f"list[{' | '.join(inner)}]"
            )
        return "None" if v is None else type(v).__name__

    names = list(dict.fromkeys(one(v) for v in values if v is not MISSING))
    return " | ".join(names) or "int"


def is_attribute(name: str) -> bool:
    """A child module name generated code can write as `self.name` (others, such as `block1-0`,
    `0` or `class`, go through `add_module` and `getattr`, or a numbered nn.Sequential)."""
    return bool(NAME_RE.match(name)) and not keyword.iskeyword(name)


def python_name(name: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """`name` if it can be a local name in generated code, else a close variant that can."""
    base = name if NAME_RE.match(name) else "arg_" + re.sub(r"\W", "_", name)
    candidate = base
    while (
        keyword.iskeyword(candidate)
        or candidate in TAKEN
        or hasattr(builtins, candidate)
        or candidate in taken
    ):
        candidate += "_"
    return candidate


class Namespace:
    """One scope of generated identifiers: `create_name` hands out each one, taking it."""

    def __init__(self, taken: set[str] | frozenset[str] = frozenset()):
        self.taken = set(taken)

    def create_name(self, candidate: str) -> str:
        """`candidate`, or a close variant no one in this scope has, now taken."""
        name = python_name(candidate, self.taken)
        self.taken.add(name)
        return name

    def reserve(self, name: str) -> None:
        """Take a name that is given, not chosen (a model parameter's, the spec's own)."""
        self.taken.add(name)


def camel(name: str) -> str:
    """`dense_layer` → `DenseLayer`, `resnet50` → `ResNet50`, `wide_resnet50_2` → `WideResNet50_2`."""
    out = ""
    for part in name.split("_"):
        if not part:
            continue
        head = re.match(r"[a-z]*", part).group()
        word = (
            FAMILY_NAMES.get(head, part[:1].upper() + head[1:]) + part[len(head) :]
            if head
            else part
        )
        out += ("_" if out and part[0].isdigit() else "") + word
    return out or "Model"


def shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))

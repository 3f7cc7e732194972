"""Inference-optimised models: batch norm folded into the convolution before it.

`fuse(model, spec)` returns an eval-mode copy of a built model in which

- every batch norm that directly follows a convolution is folded into that convolution's
  weight and bias (and replaced by `nn.Identity`, so module paths stay as they were);
- an activation oneDNN can apply in place (ReLU, ReLU6, SiLU, Hardswish, GELU; `EPILOGUES`)
  that directly follows such a convolution (or its folded batch norm), or a linear layer, runs
  in that layer's epilogue (and is replaced by `nn.Identity` too);
- convolutions become `FusedConv2d` and linear layers `FusedLinear`, which on x86 CPUs with
  oneDNN pack their weight once into the library's blocked layout at the first call, instead of
  reordering it on every call;
- optionally (`channels_last=True`) parameters and inputs use the channels-last memory format.

What to fuse is derived generically, never per model: `plan(spec)` reads the compiled IR
(a conv node followed by a batchnorm node, then optionally an activation node, or a linear node
followed by an activation node, in the execution order
that each combinator reports as running one after another (`Combinator.chains`: a sequence,
a residual's body/shortcut/post, a parallel branch, a gate's body), inline groups spliced in);
`plan_modules(model)` reads the same from a module tree (nn.Sequential, and archc's own
combinator modules, each of which says its chains). A plan is a list of module paths, so it also
applies to any model with the same paths (the generated code, or torchvision's own model for
the parity specs). The unfused model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends import torch_modules
from archc.compiler import Spec
from archc.ir import Node


@dataclass(frozen=True)
class Fusion:
    """One convolution or linear layer and what folds into it, by module path (`None`: nothing
    of that kind)."""

    layer: str
    batchnorm: str | None = None
    activation: str | None = None
    input_shape: tuple[int, ...] | None = None  # the shape the layer sees, when known statically


@dataclass(frozen=True)
class Epilogue:
    """An activation oneDNN applies to a layer's output in place: its module and function, and
    oneDNN's name and scalars for it (`EPILOGUES`)."""

    module: type[nn.Module]
    function: Callable[[torch.Tensor], torch.Tensor]
    onednn: str
    scalars: tuple[float, ...] = ()

    def algorithm(self, module: nn.Module | None) -> str:
        """oneDNN's algorithm argument: GELU's approximation ("none" or "tanh"), else empty."""
        return getattr(module, "approximate", "none") if self.onednn == "gelu" else ""

    def eager(self, x: torch.Tensor, algorithm: str) -> torch.Tensor:
        if self.onednn == "gelu":
            return F.gelu(x, approximate=algorithm)
        return self.function(x)


# The activations a convolution or linear layer can run in its epilogue, by archc kind. Each is
# exact in oneDNN up to float rounding (ReLU6 is oneDNN's hardtanh between 0 and 6).
EPILOGUES: dict[str, Epilogue] = {
    "relu": Epilogue(nn.ReLU, F.relu, "relu"),
    "relu6": Epilogue(nn.ReLU6, F.relu6, "hardtanh", (0.0, 6.0)),
    "silu": Epilogue(nn.SiLU, F.silu, "swish"),
    "hardswish": Epilogue(nn.Hardswish, F.hardswish, "hardswish"),
    "gelu": Epilogue(nn.GELU, F.gelu, "gelu"),
}
_EPILOGUE_KIND = {e.module: kind for kind, e in EPILOGUES.items()}

# What may follow each kind of layer that fuses: a folded batch norm (convolutions only), then
# one of the EPILOGUES.
_FOLDS_BATCHNORM = {"conv": True, "linear": False}


# ---- planning: which layer absorbs which batch norm / activation -----------------------------


def _ir_chains(node: Node) -> Iterator[list[Node]]:
    """Every run of nodes that execute one after another (each combinator says which)."""
    if not node.is_primitive:
        yield from node.combinator.chains(node)
    for child in node.children:
        yield from _ir_chains(child)


def _fusions(chain: list, kind_of, path_of, shape_of=lambda item: None) -> Iterator[Fusion]:
    for i, item in enumerate(chain):
        head = kind_of(item)
        if head not in _FOLDS_BATCHNORM:
            continue
        j, bn = i + 1, None
        if _FOLDS_BATCHNORM[head] and j < len(chain) and kind_of(chain[j]) == "batchnorm":
            bn, j = chain[j], j + 1
        act = chain[j] if j < len(chain) and kind_of(chain[j]) in EPILOGUES else None
        if head == "linear" and act is None:
            continue  # nothing to fuse (`apply` packs every linear layer's weight anyway)
        yield Fusion(
            path_of(item),
            path_of(bn) if bn is not None else None,
            path_of(act) if act is not None else None,
            shape_of(item),
        )


def plan(spec: Spec) -> list[Fusion]:
    """The fusions a spec allows, from its compiled tree (pure IR: nothing here runs torch)."""

    def kind(node: Node) -> str:
        if node.kind == "batchnorm" and len(node.in_shape) != 3:
            return "batchnorm1d"
        return node.kind

    out: dict[str, Fusion] = {}
    for chain in _ir_chains(spec.tree):
        for fusion in _fusions(chain, kind, lambda n: n.path, lambda n: tuple(n.in_shape)):
            out.setdefault(fusion.layer, fusion)
    return list(out.values())


def _module_kind(module: nn.Module) -> str:
    if type(module) in (nn.Conv2d, FusedConv2d):
        return "conv"
    if type(module) in (nn.Linear, FusedLinear):
        return "linear"
    if type(module) is nn.BatchNorm2d:
        return "batchnorm"
    return _EPILOGUE_KIND.get(type(module), "")


def plan_modules(model: nn.Module) -> list[Fusion]:
    """The fusions readable from a module tree alone, where the execution order is known."""
    out: dict[str, Fusion] = {}
    for prefix, module in model.named_modules():
        if isinstance(module, torch_modules._Children):
            chains = module.chains()
        elif isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            chains = [list(module._modules)]  # (a subclass with its own forward, e.g. a
            # generated Dense, runs its children in an order that is not ours to guess)
        else:
            continue  # an unknown forward: its order is not ours to guess
        for names in chains:
            # (a name that is no module, a learnable tensor such as a layer scale, fuses nothing)
            chain = [(f"{prefix}.{n}" if prefix else n, module._modules.get(n)) for n in names]
            for fusion in _fusions(chain, lambda item: _module_kind(item[1]), lambda item: item[0]):
                out.setdefault(fusion.layer, fusion)
    return list(out.values())


# ---- the fused layers -------------------------------------------------------------------------


def _has_ops(*ops: str) -> bool:
    try:
        return torch.backends.mkldnn.is_available() and all(
            hasattr(torch.ops.mkldnn, op) for op in ops
        )
    except Exception:  # pragma: no cover - an unusual build
        return False


_ONEDNN_CONV = _has_ops("_convolution_pointwise", "_reorder_convolution_weight")
_ONEDNN_LINEAR = _has_ops("_linear_pointwise", "_reorder_linear_weight")


class _Packed:
    """A layer whose weight oneDNN packs once, plus an optional activation epilogue.

    The packed weight is a cache: it is rebuilt when the weight changes (e.g. `load_state_dict`)
    and is never saved or copied; any input the packed kernel does not take (CUDA, float64,
    autograd through the layer) runs the plain layer and activation, with the same result.
    """

    weight: torch.Tensor

    def _setup(self, activation: str, algorithm: str, folded: bool, prepack: bool) -> None:
        if activation != "none" and activation not in EPILOGUES:
            raise ValueError(
                f"activation is 'none' or one of {sorted(EPILOGUES)}, not {activation!r}"
            )
        self.activation = activation
        if activation == "none":
            self.algorithm = ""
        else:
            self.algorithm = algorithm or EPILOGUES[activation].algorithm(None)
        self.folded = folded
        self.prepack = prepack
        self._packed: tuple | None = None  # (weight version key, packed weight)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None  # an opaque oneDNN tensor: neither picklable nor copyable
        return state

    def _onednn_args(self) -> tuple[str, list[float], str]:
        if self.activation == "none":
            return "none", [], ""
        epilogue = EPILOGUES[self.activation]
        return epilogue.onednn, list(epilogue.scalars), self.algorithm

    def _eager_epilogue(self, out: torch.Tensor) -> torch.Tensor:
        if self.activation == "none":
            return out
        return EPILOGUES[self.activation].eager(out, self.algorithm)

    def _takes_packed(self, x: torch.Tensor) -> bool:
        return (
            self.prepack
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and not torch.compiler.is_compiling()  # a compiler does its own packing
            and not torch.is_autocast_enabled("cpu")
        )

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        weight = self.weight
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if self._packed is not None and self._packed[0] == key:
            return self._packed[1]
        try:
            packed = self._pack(weight.detach(), x)
        except RuntimeError:  # pragma: no cover - a shape or format oneDNN does not take
            self.prepack = False
            return None
        self._packed = (key, packed)
        return packed

    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _extra(self) -> str:
        extra = f", {self.activation}" if self.activation != "none" else ""
        return extra + (", batchnorm folded" if self.folded else "")


class FusedConv2d(_Packed, nn.Conv2d):
    """A Conv2d with an optional activation epilogue and a weight packed once for oneDNN on CPU.

    `folded` says whether a batch norm was folded into it.
    """

    def __init__(
        self, *args, activation: str = "none", algorithm: str = "", folded: bool = False,
        prepack: bool = True, **kwargs,
    ):  # fmt: skip
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._setup(
            activation, algorithm, folded,
            prepack and _ONEDNN_CONV and self.padding_mode == "zeros" and not isinstance(self.padding, str),
        )  # fmt: skip

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        *,
        activation: str = "none",
        algorithm: str = "",
        folded: bool = False,
        prepack: bool = True,
    ) -> FusedConv2d:
        """A FusedConv2d like `conv`, with `weight`/`bias` in place of conv's when given."""
        weight = conv.weight if weight is None else weight
        bias = conv.bias if bias is None else bias
        fused = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
            padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
            bias=bias is not None, padding_mode=conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype,
            activation=activation, algorithm=algorithm, folded=folded, prepack=prepack,
        )  # fmt: skip
        return _copied(fused, conv, weight, bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._extra()

    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_convolution_weight(
            weight, list(self.padding), list(self.stride), list(self.dilation), self.groups,
            list(x.shape),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self._takes_packed(x)
            and x.dim() == 4
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
        ):
            packed = self._packed_weight(x)
            if packed is not None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, packed, self.bias, list(self.padding), list(self.stride),
                    list(self.dilation), self.groups, *self._onednn_args(),
                )  # fmt: skip
        return self._eager_epilogue(self._conv_forward(x, self.weight, self.bias))


class FusedLinear(_Packed, nn.Linear):
    """A Linear with an optional activation epilogue and a weight packed once for oneDNN on CPU
    (ConvNeXt's GELU between its two linear layers runs inside the first)."""

    def __init__(
        self, *args, activation: str = "none", algorithm: str = "", prepack: bool = True, **kwargs
    ):
        nn.Linear.__init__(self, *args, **kwargs)
        self._setup(activation, algorithm, False, prepack and _ONEDNN_LINEAR)

    @classmethod
    def from_linear(
        cls,
        linear: nn.Linear,
        *,
        activation: str = "none",
        algorithm: str = "",
        prepack: bool = True,
    ) -> FusedLinear:
        fused = cls(
            linear.in_features, linear.out_features, bias=linear.bias is not None,
            device=linear.weight.device, dtype=linear.weight.dtype,
            activation=activation, algorithm=algorithm, prepack=prepack,
        )  # fmt: skip
        return _copied(fused, linear, linear.weight, linear.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._extra()

    def _pack(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(weight, x.numel() // x.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._takes_packed(x) and x.dim() >= 2 and x.numel() > 0:
            packed = self._packed_weight(x)
            if packed is not None:
                return torch.ops.mkldnn._linear_pointwise(
                    x, packed, self.bias, *self._onednn_args()
                )
        return self._eager_epilogue(F.linear(x, self.weight, self.bias))


def _copied(fused: nn.Module, original: nn.Module, weight, bias) -> nn.Module:
    with torch.no_grad():
        fused.weight.copy_(weight)
        if bias is not None:
            fused.bias.copy_(bias)
    fused.requires_grad_(original.weight.requires_grad)
    fused.train(original.training)
    return fused


# ---- applying a plan --------------------------------------------------------------------------


def _get(model: nn.Module, path: str | None) -> nn.Module | None:
    if path is None:
        return None
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _set(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    owner._modules[name] = module


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of conv followed by bn (eval statistics), in float64 for accuracy."""
    w = conv.weight.detach().double()
    b = (
        conv.bias.detach().double()
        if conv.bias is not None
        else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
    )
    scale = torch.rsqrt(bn.running_var.detach().double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -bn.running_mean.detach().double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    weight = w * scale.reshape(-1, *([1] * (w.dim() - 1)))
    return weight.to(conv.weight.dtype), (b * scale + shift).to(conv.weight.dtype)


def _foldable(conv: nn.Module, bn: nn.Module | None) -> bool:
    return (
        type(bn) is nn.BatchNorm2d
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.num_features == conv.out_channels
    )


def _shared(model: nn.Module) -> set[int]:
    """Modules registered at more than one path (replacing one would change the others)."""
    seen: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        seen[id(module)] = seen.get(id(module), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def _epilogue_of(module: nn.Module | None) -> str | None:
    """The EPILOGUES kind of an activation module (`None`: not one a layer can absorb)."""
    return _EPILOGUE_KIND.get(type(module)) if module is not None else None


def apply(model: nn.Module, fusions: list[Fusion], *, prepack: bool = True) -> list[Fusion]:
    """Apply a plan to `model` in place (eval mode); returns the fusions that were applied.

    A fusion whose modules are missing or are not what the plan expects is left out (or applied
    in part: a conv still absorbs its batch norm when the activation after it is not there).
    """
    shared = _shared(model)
    applied = []
    for fusion in fusions:
        layer = _get(model, fusion.layer)
        if _module_kind(layer) not in _FOLDS_BATCHNORM or id(layer) in shared:
            continue
        current = getattr(layer, "activation", "none")
        bn = _get(model, fusion.batchnorm)
        if fusion.batchnorm is not None and (not _foldable(layer, bn) or id(bn) in shared):
            continue  # the planned order is not this model's: fold nothing here
        if bn is not None and current != "none":
            continue  # an activation already runs inside this conv: bn does not follow it directly
        act = _get(model, fusion.activation)
        kind = _epilogue_of(act)
        if kind is None or id(act) in shared or current != "none":
            act, kind = None, None
        activation = kind or current
        algorithm = EPILOGUES[kind].algorithm(act) if kind else getattr(layer, "algorithm", "")
        if isinstance(layer, nn.Conv2d):
            weight, bias = _fold(layer, bn) if bn is not None else (None, None)
            fused = FusedConv2d.from_conv(
                layer, weight, bias, activation=activation, algorithm=algorithm,
                folded=bn is not None or getattr(layer, "folded", False), prepack=prepack,
            )  # fmt: skip
        else:
            fused = FusedLinear.from_linear(
                layer, activation=activation, algorithm=algorithm, prepack=prepack
            )
        if bn is not None:
            _set(model, fusion.batchnorm, nn.Identity())
        if act is not None:
            _set(model, fusion.activation, nn.Identity())
        _set(model, fusion.layer, fused.eval())
        applied.append(Fusion(fusion.layer, fusion.batchnorm if bn is not None else None,
                              fusion.activation if act is not None else None, fusion.input_shape))  # fmt: skip
    if prepack:  # every other convolution and linear layer still gets its weight packed once
        for path, module in list(model.named_modules()):
            if id(module) in shared:
                continue
            if type(module) is nn.Conv2d:
                _set(model, path, FusedConv2d.from_conv(module, prepack=True).eval())
            elif type(module) is nn.Linear:
                _set(model, path, FusedLinear.from_linear(module, prepack=True).eval())
    return applied


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(
        a.contiguous(memory_format=torch.channels_last)
        if isinstance(a, torch.Tensor) and a.dim() == 4
        else a
        for a in args
    )


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put `model`'s parameters, and every 4-d input it is called with, in channels-last format."""
    model.to(memory_format=torch.channels_last)
    model.register_forward_pre_hook(_to_channels_last)
    return model


def fuse(
    model: nn.Module,
    spec: Spec | None = None,
    *,
    channels_last: bool = False,
    prepack: bool = True,
    inplace: bool = False,
) -> nn.Module:
    """An inference copy of `model`: batch norms folded, activations fused into the layer before.

    With `spec`, what to fuse comes from the compiled tree (`plan(spec)`), so it applies to any
    model with the spec's module paths; without it, from the module tree (`plan_modules`).
    The result is in eval mode with frozen parameters; `model` itself is left untouched unless
    `inplace`. Outputs equal the unfused model's in eval mode (to float rounding).
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    fused.requires_grad_(False)
    apply(fused, plan(spec) if spec is not None else plan_modules(fused), prepack=prepack)
    fused.requires_grad_(False)
    return to_channels_last(fused) if channels_last else fused


def summary(model: nn.Module) -> dict[str, int]:
    """How much of `model` is fused: convolutions and linear layers, folded batch norms, fused
    activations, batch norms left."""
    convs = [m for m in model.modules() if isinstance(m, FusedConv2d)]
    linears = [m for m in model.modules() if isinstance(m, FusedLinear)]
    return {
        "convs": len(convs),
        "linears": len(linears),
        "batchnorms_folded": sum(m.folded for m in convs),
        "activations_fused": sum(m.activation != "none" for m in convs + linears),
        "batchnorms_left": sum(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ),
    }


__all__ = [
    "Fusion",
    "FusedConv2d",
    "FusedLinear",
    "EPILOGUES",
    "plan",
    "plan_modules",
    "apply",
    "fuse",
    "to_channels_last",
    "summary",
]

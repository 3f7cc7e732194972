"""Inference-optimised models: batch norm folded into the convolution before it.

`fuse(model, spec)` returns an eval-mode copy of a built model in which

- every batch norm that directly follows a convolution is folded into that convolution's
  weight and bias (and replaced by `nn.Identity`, so module paths stay as they were);
- a ReLU that directly follows such a convolution (or its folded batch norm) runs in the
  convolution's epilogue (and is replaced by `nn.Identity` too);
- convolutions become `FusedConv2d`, which on x86 CPUs with oneDNN packs its weight once into
  the library's blocked layout at the first call, instead of reordering it on every call;
- optionally (`channels_last=True`) parameters and inputs use the channels-last memory format.

What to fuse is derived generically, never per model: `plan(spec)` reads the compiled IR
(a conv node followed by a batchnorm node, then optionally a relu node, in the execution order
that each combinator reports as running one after another (`Combinator.chains`: a sequence,
a residual's body/shortcut/post, a parallel branch, a gate's body), inline groups spliced in);
`plan_modules(model)` reads the same from a module tree (nn.Sequential, and archc's own
combinator modules, each of which says its chains). A plan is a list of module paths, so it also
applies to any model with the same paths (the generated code, or torchvision's own model for
the parity specs). The unfused model is never modified.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from archc.backends import torch_modules
from archc.compiler import Spec
from archc.ir import Node


@dataclass(frozen=True)
class Fusion:
    """One convolution and what folds into it, by module path (`None`: nothing of that kind)."""

    conv: str
    batchnorm: str | None = None
    activation: str | None = None
    input_shape: tuple[int, ...] | None = None  # (C, H, W) the conv sees, when known statically


# ---- planning: which convolution absorbs which batch norm / ReLU ----------------------------


def _ir_chains(node: Node) -> Iterator[list[Node]]:
    """Every run of nodes that execute one after another (each combinator says which)."""
    if not node.is_primitive:
        yield from node.combinator.chains(node)
    for child in node.children:
        yield from _ir_chains(child)


def _fusions(chain: list, kind_of, path_of, shape_of=lambda item: None) -> Iterator[Fusion]:
    for i, item in enumerate(chain):
        if kind_of(item) != "conv":
            continue
        j, bn = i + 1, None
        if j < len(chain) and kind_of(chain[j]) == "batchnorm":
            bn, j = chain[j], j + 1
        act = chain[j] if j < len(chain) and kind_of(chain[j]) == "relu" else None
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
            out.setdefault(fusion.conv, fusion)
    return list(out.values())


def _module_kind(module: nn.Module) -> str:
    if type(module) in (nn.Conv2d, FusedConv2d):
        return "conv"
    if type(module) is nn.BatchNorm2d:
        return "batchnorm"
    if type(module) is nn.ReLU:
        return "relu"
    return ""


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
                out.setdefault(fusion.conv, fusion)
    return list(out.values())


# ---- the fused convolution ------------------------------------------------------------------


def _onednn_ops() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and all(
            hasattr(torch.ops.mkldnn, op)
            for op in ("_convolution_pointwise", "_reorder_convolution_weight")
        )
    except Exception:  # pragma: no cover - an unusual build
        return False


_ONEDNN = _onednn_ops()


class FusedConv2d(nn.Conv2d):
    """A Conv2d with an optional ReLU epilogue and a weight packed once for oneDNN on CPU.

    `folded` says whether a batch norm was folded into it. The packed weight is a cache: it is
    rebuilt when the weight changes (e.g. `load_state_dict`) and is never saved or copied; any
    input the packed kernel does not take (CUDA, float64, autograd through the conv) uses the
    plain convolution, with the same result.
    """

    def __init__(
        self, *args, activation: str = "none", folded: bool = False, prepack: bool = True, **kwargs
    ):
        super().__init__(*args, **kwargs)
        if activation not in ("none", "relu"):
            raise ValueError(f"activation is 'none' or 'relu', not {activation!r}")
        self.activation = activation
        self.folded = folded
        self.prepack = (
            prepack
            and _ONEDNN
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        )
        self._packed: tuple | None = None  # (weight version key, packed weight)

    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        weight: torch.Tensor | None = None,
        bias: torch.Tensor | None = None,
        *,
        activation: str = "none",
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
            activation=activation, folded=folded, prepack=prepack,
        )  # fmt: skip
        with torch.no_grad():
            fused.weight.copy_(weight)
            if bias is not None:
                fused.bias.copy_(bias)
        fused.requires_grad_(conv.weight.requires_grad)
        fused.train(conv.training)
        return fused

    def extra_repr(self) -> str:
        extra = ", relu" if self.activation == "relu" else ""
        return super().extra_repr() + extra + (", batchnorm folded" if self.folded else "")

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None  # an opaque oneDNN tensor: neither picklable nor copyable
        return state

    def _packed_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        weight = self.weight
        key = (weight._version, weight.data_ptr(), weight.dtype, weight.device)
        if self._packed is not None and self._packed[0] == key:
            return self._packed[1]
        try:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                weight.detach(), list(self.padding), list(self.stride), list(self.dilation),
                self.groups, list(x.shape),
            )  # fmt: skip
        except RuntimeError:  # pragma: no cover - a shape or format oneDNN does not take
            self.prepack = False
            return None
        self._packed = (key, packed)
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.prepack
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and x.dim() == 4
            and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
            and not torch.compiler.is_compiling()  # a compiler does its own packing
            and not torch.is_autocast_enabled("cpu")
            and (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))
        ):  # fmt: skip
            packed = self._packed_weight(x)
            if packed is not None:
                return torch.ops.mkldnn._convolution_pointwise(
                    x, packed, self.bias, list(self.padding), list(self.stride),
                    list(self.dilation), self.groups, self.activation, [], "",
                )  # fmt: skip
        out = self._conv_forward(x, self.weight, self.bias)
        return F.relu(out) if self.activation == "relu" else out


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


def apply(model: nn.Module, fusions: list[Fusion], *, prepack: bool = True) -> list[Fusion]:
    """Apply a plan to `model` in place (eval mode); returns the fusions that were applied.

    A fusion whose modules are missing or are not what the plan expects is left out (or applied
    in part: a conv still absorbs its batch norm when the ReLU after it is not there).
    """
    shared = _shared(model)
    applied = []
    for fusion in fusions:
        conv = _get(model, fusion.conv)
        if type(conv) not in (nn.Conv2d, FusedConv2d) or id(conv) in shared:
            continue
        bn = _get(model, fusion.batchnorm)
        if fusion.batchnorm is not None and (not _foldable(conv, bn) or id(bn) in shared):
            continue  # the planned order is not this model's: fold nothing here
        if bn is not None and getattr(conv, "activation", "none") != "none":
            continue  # a ReLU already runs inside this conv: bn does not follow it directly
        act = _get(model, fusion.activation)
        if type(act) is not nn.ReLU or id(act) in shared:
            act = None
        weight, bias = _fold(conv, bn) if bn is not None else (None, None)
        fused = FusedConv2d.from_conv(
            conv, weight, bias,
            activation="relu" if act is not None or getattr(conv, "activation", "none") == "relu" else "none",
            folded=bn is not None or getattr(conv, "folded", False),
            prepack=prepack,
        )  # fmt: skip
        if bn is not None:
            _set(model, fusion.batchnorm, nn.Identity())
        if act is not None:
            _set(model, fusion.activation, nn.Identity())
        _set(model, fusion.conv, fused.eval())
        applied.append(Fusion(fusion.conv, fusion.batchnorm if bn is not None else None,
                              fusion.activation if act is not None else None, fusion.input_shape))  # fmt: skip
    if prepack:  # every other convolution still gets its weight packed once
        for path, module in list(model.named_modules()):
            if type(module) is nn.Conv2d and id(module) not in shared:
                _set(model, path, FusedConv2d.from_conv(module, prepack=True).eval())
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
    """An inference copy of `model` with batch norms folded and ReLUs fused into convolutions.

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
    """How much of `model` is fused: convolutions, folded batch norms, fused ReLUs, batch norms left."""
    convs = [m for m in model.modules() if isinstance(m, FusedConv2d)]
    return {
        "convs": len(convs),
        "batchnorms_folded": sum(m.folded for m in convs),
        "relus_fused": sum(m.activation == "relu" for m in convs),
        "batchnorms_left": sum(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ),
    }


__all__ = [
    "Fusion",
    "FusedConv2d",
    "plan",
    "plan_modules",
    "apply",
    "fuse",
    "to_channels_last",
    "summary",
]

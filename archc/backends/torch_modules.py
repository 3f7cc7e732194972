"""The torch modules that run archc's combinators and the primitives torch.nn has no class for.

Each combinator definition (archc.combinators) names its class here and imports it lazily, so
only building a live model imports torch. Every class registers the modules it is given as its
own children, in order, and says which of them run one after another (`chains`, read by
`archc.backends.fuse.plan_modules`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def run(owner: nn.Module, program: tuple, x: torch.Tensor) -> torch.Tensor:
    """Run a program (`archc.combinators.program`) of `owner`'s children: each named module in
    turn (a learnable tensor of owner's multiplies instead), an inline parallel (a `Concat`:
    branches, split, post) as its concatenation."""
    for step in program:
        if not isinstance(step, str):
            x = concat(owner, step, x)
        elif step in owner._parameters:
            x = owner._parameters[step] * x
        else:
            x = owner._modules[step](x)
    return x


def concat(owner: nn.Module, step, x: torch.Tensor) -> torch.Tensor:
    """Branches on x (split: each on its chunk of the channels), concatenated, then post."""
    count = len(step.branches)
    inputs = x.chunk(count, dim=1) if step.split else [x] * count
    out = torch.cat([run(owner, branch, i) for branch, i in zip(step.branches, inputs)], 1)
    return run(owner, step.post, out)


def chains(program: tuple) -> list[list[str]]:
    """Names of modules that run one after another in a program, each feeding only the next."""
    out: list[list[str]] = [[]]
    for step in program:
        if isinstance(step, str):
            out[-1].append(step)
            continue
        out += [chain for branch in (*step.branches, step.post) for chain in chains(branch)]
        out.append([])
    return out


class _Children(nn.Module):
    """Registers its children in order: modules, and learnable tensors (nn.Parameter, such as
    ConvNeXt's layer_scale) that its forward multiplies by (`run`)."""

    def __init__(self, modules: OrderedDict):
        super().__init__()
        for name, module in modules.items():
            if isinstance(module, nn.Parameter):
                self.register_parameter(name, module)
            else:
                self.add_module(name, module)

    def chains(self) -> list[list[str]]:
        """Names of children that run one after another, each feeding only the next."""
        return []


class Sequence(_Children):
    """Layers in order with inline parallels among them (SqueezeNet's Fire): every branch's
    layers are this module's own children."""

    def __init__(self, modules: OrderedDict, program: tuple):
        super().__init__(modules)
        self._program = program

    def chains(self) -> list[list[str]]:
        return chains(self._program)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return run(self, self._program, x)


class Residual(_Children):
    """post(body(x) + shortcut(x)); body, shortcut and post are this module's own children.
    With use_res_connect False (a conditional skip whose shapes differ) it is post(body(x))."""

    def __init__(
        self,
        modules: OrderedDict,
        body: tuple,
        shortcut: tuple,
        post: tuple,
        use_res_connect: bool = True,
    ):
        super().__init__(modules)
        self._body, self._shortcut, self._post = tuple(body), tuple(shortcut), tuple(post)
        self.use_res_connect = use_res_connect

    def chains(self) -> list[list[str]]:
        return chains(self._body) + chains(self._shortcut) + chains(self._post)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = run(self, self._body, x)
        if self.use_res_connect:
            out = out + run(self, self._shortcut, x)
        return run(self, self._post, out)


class Parallel(_Children):
    """Branches applied to the same input (or, split, each to its chunk of the channels),
    concatenated on channels, then the post layers (`step`: a Concat of their programs)."""

    def __init__(self, modules: OrderedDict, step):
        super().__init__(modules)
        self._step = step

    def chains(self) -> list[list[str]]:
        return chains((self._step,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return concat(self, self._step, x)


class Dense(_Children):
    """Each layer sees everything before it: x = cat(x, layer(x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self._modules.values():
            x = torch.cat([x, layer(x)], 1)
        return x


class Gate(_Children):
    """x * body(x): the body (this module's children, run by `program`) computes a scale for x."""

    def __init__(self, modules: OrderedDict, program: tuple | None = None):
        super().__init__(modules)
        self._program = tuple(modules) if program is None else program  # default: in order

    def chains(self) -> list[list[str]]:
        return chains(self._program)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * run(self, self._program, x)


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle, as torchvision's `channel_shuffle`: view the channels as
    groups × channels_per_group, transpose, and flatten back. No parameters."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def extra_repr(self) -> str:
        return f"groups={self.groups}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batchsize, num_channels, height, width = x.size()
        channels_per_group = num_channels // self.groups
        x = x.view(batchsize, self.groups, channels_per_group, height, width)
        x = torch.transpose(x, 1, 2).contiguous()
        return x.view(batchsize, num_channels, height, width)


class StochasticDepth(nn.Module):
    """Stochastic depth (torchvision.ops.StochasticDepth): in training, zero each sample's
    ("row") or the whole batch's ("batch") input with probability p and scale the rest by
    1 / (1 - p); the identity in eval."""

    def __init__(self, p: float, mode: str = "row") -> None:
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival_rate = 1.0 - self.p
        if self.mode == "row":
            size = [x.shape[0]] + [1] * (x.ndim - 1)
        else:
            size = [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival_rate)
        if survival_rate > 0.0:
            noise.div_(survival_rate)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels of an N×C×H×W map (torchvision's LayerNorm2d): channels
    last, layer norm, and back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = nn.functional.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        x = x.permute(0, 3, 1, 2)
        return x


class Permute(nn.Module):
    """The input's dimensions reordered (torchvision's Permute): a view."""

    def __init__(self, dims: list[int]):
        super().__init__()
        self.dims = dims

    def extra_repr(self) -> str:
        return f"dims={self.dims}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.permute(x, self.dims)

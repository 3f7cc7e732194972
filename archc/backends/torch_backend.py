"""Build a live `torch.nn.Module` from a compiled spec (torch is imported only under archc.backends)."""

from __future__ import annotations

import contextlib
import io
import math
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Dict, List, Tuple  # noqa: UP035 (TorchScript)

import torch
from torch import nn

from archc.backends import torch_modules
from archc.backends.torch_modules import Dense, Gate, Parallel, Residual  # noqa: F401 (API)
from archc.combinators import COMBINATORS
from archc.compiler import Spec
from archc.ir import Node, splice
from archc.outputs import MARKER, with_zip_comment
from archc.primitives import PRIMITIVES, Shape, fmt_shape


class Frozen:
    """What a model with frozen modules does in `train()`: it puts the frozen ones (`_frozen`,
    their paths) back in eval mode, so their batch norms normalise with, and keep, their running
    statistics and their dropout is off; DDP's `train()` reaches it too. Calling `train()` on a
    frozen module itself bypasses this, as it would in torchvision or MMDetection."""

    _frozen = ()  # the frozen modules' paths (no annotation: TorchScript would read it)

    def train(self, mode: bool = True):
        super().train(mode)
        for path in self._frozen:
            self.get_submodule(path).eval()
        return self


class Network(Frozen, nn.Sequential):
    """The model: its top-level layers in order, named as in the spec."""


_OUTPUT_TYPES: dict[tuple[str, tuple[str, ...]], type] = {}


def outputs_type(spec: Spec) -> type:
    """The namedtuple a model with heads returns in train mode (`GoogLeNetOutputs(logits,
    aux_logits2, aux_logits1)`), one class per name and fields."""
    from archc.backends.codegen.names import camel

    key = (f"{camel(spec.name)}Outputs", tuple(spec.outputs))
    if key not in _OUTPUT_TYPES:
        _OUTPUT_TYPES[key] = namedtuple(*key)  # noqa: PYI024 (the fields are the spec's)
    return _OUTPUT_TYPES[key]


class NetworkWithHeads(Frozen, nn.Module):
    """The model with auxiliary heads: its top-level layers registered in spec order; forward
    runs the main ones in turn and, in train mode only, each head on the output of the layer it
    reads, returning (main, *heads) as the spec's outputs namedtuple; in eval, the main output."""

    def __init__(self, modules: OrderedDict, sources: dict[str, str], order: list[str], outputs: type):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)
        self._main = tuple(name for name in modules if name not in sources)
        self._taps = {name: tuple(h for h, s in sources.items() if s == name) for name in set(sources.values())}
        self._order = tuple(order)
        self._outputs = outputs

    def chains(self) -> list[list[str]]:
        return [list(self._main)] + [[head] for head in self._order]

    def forward(self, x: torch.Tensor):
        extra: dict[str, torch.Tensor] = {}
        for name in self._main:
            x = self._modules[name](x)
            if self.training:
                for head in self._taps.get(name, ()):
                    extra[head] = self._modules[head](x)
        if not self.training:
            return x
        return self._outputs(x, *(extra[head] for head in self._order))


class NetworkWithTaps(nn.ModuleDict):
    """The model with feature taps (`outputs:` naming layers), as torchvision's
    IntermediateLayerGetter: its top-level layers registered in spec order; forward runs the
    main ones in turn and returns a dict of the outputs in the spec's order: each tapped layer's
    output, and (in train mode only) each head's, run on the output of the layer it reads. A
    sequence holding a tap deeper down runs its layers one by one. TorchScript compiles it (and
    runs it when every tap is a top-level layer)."""

    # heads: head layer -> the layer it reads; keep: the module paths whose outputs are kept
    # (the taps, what heads read); split: the sequences holding a tap deeper down; returns:
    # (key of the dict, the module giving it), in order. Typed objects, not strings, for
    # TorchScript (as torchvision's IntermediateLayerGetter does).
    __annotations__ = {"heads": Dict[str, str], "keep": List[str], "split": List[str], "returns": List[Tuple[str, str]]}  # noqa: UP006 (TorchScript)

    def __init__(self, modules: OrderedDict, heads: dict[str, str], returns: list[tuple[str, str]]):
        super().__init__(modules)
        self.heads = heads
        self.keep = sorted({*(path for _, path in returns if path not in heads), *heads.values()})
        self.split = sorted({path.rsplit(".", i)[0] for path in self.keep for i in range(1, path.count(".") + 1)})
        self.returns = returns

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        found: dict[str, torch.Tensor] = {}
        for name, module in self.items():
            if name in self.heads:
                if self.training:
                    found[name] = module(found[self.heads[name]])
            else:
                x = self._piecewise(name, x, found) if name in self.split else module(x)
                if name in self.keep:
                    found[name] = x
        out: dict[str, torch.Tensor] = {}
        for key, path in self.returns:
            if path in found:
                out[key] = found[path]
        return out

    @torch.jit.unused
    def _piecewise(self, path: str, x: torch.Tensor, found: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run the sequence at `path` layer by layer, keeping the outputs of those in `keep`."""
        for name, child in self.get_submodule(path).named_children():
            inner = f"{path}.{name}"
            x = self._piecewise(inner, x, found) if inner in self.split else child(x)
            if inner in self.keep:
                found[inner] = x
        return x

    # typed objects, not strings, for TorchScript, which compiles the signature of an unused method
    _piecewise.__annotations__ = {"path": str, "x": torch.Tensor, "found": Dict[str, torch.Tensor], "return": torch.Tensor}  # noqa: UP006


class _Builder:
    """One build's walk of the tree: each node's module made once, children before their
    parent (the order torchvision's constructors allocate, and draw random numbers, in).

    `layers` keeps every primitive's module with its kind and path, in that order (which is
    the order `named_modules` yields them: leaves, registration order), so `initialise` needs
    no second walk of the model. Identical primitives (the same settings on the same input
    shape: the repeated blocks of a stage share them) ask their `torch_layer` once.
    """

    def __init__(self) -> None:
        self.layers: list[tuple[nn.Module, str, str]] = []
        self._made: dict[tuple, tuple] = {}

    def children(self, node: Node) -> OrderedDict:
        modules = OrderedDict()
        for child in splice(node.children):
            modules[child.name] = self.module(child)
        return modules

    def module(self, node: Node):
        kind = node.kind
        prim = PRIMITIVES.get(kind)
        if prim is None:
            return COMBINATORS[kind].build(node, self.children(node))
        key = (kind, id(node.params), node.in_shape)
        made = self._made.get(key)
        if made is None:
            layer = prim.torch_layer(node.params, node.in_shape)
            if layer.parameter:
                made = (getattr(torch, layer.cls), list(layer.args), layer.kwargs, True)
            else:
                cls = getattr(torch_modules, layer.cls) if layer.own else getattr(nn, layer.cls)
                made = (cls, layer.args, layer.kwargs, False)
            self._made[key] = (made, node.params)  # (params kept alive: its id stays unique)
        else:
            made = made[0]
        make, args, kwargs, parameter = made
        if parameter:  # a tensor its parent registers (the combinators' modules do)
            return nn.Parameter(make(args, **kwargs))
        module = make(*args, **kwargs)
        self.layers.append((module, kind, node.path))
        return module


def uniform_fan_(tensor: torch.Tensor, mode: str = "fan_in") -> torch.Tensor:
    """uniform(-1/sqrt(fan), 1/sqrt(fan)): EfficientNet's linear layers (mode fan_out)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    bound = 1.0 / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    return nn.init.uniform_(tensor, -bound, bound)


def normal_fan_(tensor: torch.Tensor, mode: str = "fan_in", scale: float = 1.0) -> torch.Tensor:
    """normal(0, sqrt(scale / fan)): RegNet's convolutions (mode fan_out, scale 2.0), written as
    torchvision writes it (kaiming_normal_'s sqrt(2) / sqrt(fan) differs in the last bit)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    return nn.init.normal_(tensor, mean=0.0, std=math.sqrt(scale / (fan_in if mode == "fan_in" else fan_out)))


_INITIALISERS = {
    "zeros": nn.init.zeros_,
    "ones": nn.init.ones_,
    "constant": nn.init.constant_,
    "normal": nn.init.normal_,
    "trunc_normal": nn.init.trunc_normal_,
    "uniform": nn.init.uniform_,
    "kaiming_normal": nn.init.kaiming_normal_,
    "kaiming_uniform": nn.init.kaiming_uniform_,
    "xavier_normal": nn.init.xavier_normal_,
    "xavier_uniform": nn.init.xavier_uniform_,
    "uniform_fan": uniform_fan_,
    "normal_fan": normal_fan_,
}


def initialise(model: nn.Module, spec: Spec, layers: list[tuple[nn.Module, str, str]] | None = None) -> None:
    """Apply the spec's init rules, module by module in registration order (as torchvision does).

    `layers` (the build's primitives, in that order: `_Builder.layers`) suffices when every
    rule is by kind: only primitives have a kind. Rules by path may name any module, so they
    walk the model."""
    if not spec.init and not spec.init_paths:
        return
    if spec.init_paths or layers is None:
        kinds = {id(module): kind for module, kind, _ in layers or ()}
        for path, module in model.named_modules():
            initialise_module(module, spec, kinds.get(id(module), ""), path=path)
        return
    by_kind = spec.init
    with torch.no_grad():
        for module, kind, _ in layers:
            rules = by_kind.get(kind)
            if rules:
                _apply(module, rules, None)


def initialise_module(
    module: nn.Module, spec: Spec, kind: str, tensors: set[str] | None = None, path: str = ""
) -> None:
    """Apply the spec's init rules for a layer of `kind` at `path` to its tensors (only those
    in `tensors` when given); tensors without a rule keep what they have."""
    with torch.no_grad():
        _apply(module, spec.init_for(kind, path), tensors)


def _apply(module: nn.Module, rules: dict, tensors: set[str] | None) -> None:
    """Each rule (tensor name -> InitRule) on the module's tensor of that name, if it has one."""
    for tensor_name, rule in rules.items():
        tensor = getattr(module, tensor_name, None)
        if tensor is None or rule.kind == "default" or (tensors is not None and tensor_name not in tensors):
            continue
        _INITIALISERS[rule.kind](tensor, **rule.args)


def module_kinds(model: nn.Module, spec: Spec) -> dict[str, str]:
    """Module path -> the primitive kind whose init rules apply to it (as `build` records them)."""
    modules = dict(model.named_modules())
    return {n.path: n.kind for n in module_nodes(spec) if n.is_primitive and n.path in modules}


def build(spec: Spec, *, seed: int | None = None) -> nn.Module:
    """Construct the module tree and initialise it; with `seed`, weights are reproducible."""
    rng = torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext()
    with rng:
        if seed is not None:
            torch.manual_seed(seed)
        builder = _Builder()
        modules = builder.children(spec.tree)
        if spec.taps:
            returns = [(key, node.path) for key, node in spec.output_nodes().items()]
            model = NetworkWithTaps(modules, {n.name: n.head.source for n in spec.heads}, returns)
        elif spec.heads:
            sources = {n.name: n.head.source for n in spec.heads}
            model = NetworkWithHeads(modules, sources, [n.name for n in spec.head_order()], outputs_type(spec))
        else:
            model = Network(modules)
        initialise(model, spec, builder.layers)
    freeze(model, spec.frozen)
    return model


def freeze(model: nn.Module, paths: tuple[str, ...]) -> None:
    """Freeze the modules at `paths`: no gradients for their parameters, and eval mode in the
    model's train mode (see `Frozen`)."""
    if not paths:
        return
    for path in paths:
        model.get_submodule(path).requires_grad_(False)
    model._frozen = tuple(paths)
    model.train(model.training)


def module_nodes(spec: Spec) -> Iterator[Node]:
    """Nodes that own a module (inline groups and learnable tensors such as a scale have none)."""
    return (n for n in spec.tree.walk() if n.path and not n.inline and not (n.is_primitive and n.primitive.parameter))


def check_shapes(model: nn.Module, spec: Spec, batch: int = 2) -> list[str]:
    """Run a forward pass and compare every module's output shape with the static one."""
    expected: dict[str, Shape] = {n.path: n.out_shape for n in module_nodes(spec)}
    seen: dict[str, Shape] = {}
    taps: dict[str, torch.Tensor] = {}  # outputs the heads read (heads run in train mode only)
    sources = {n.head.source for n in spec.heads}
    handles = []

    def record(path: str):
        def hook(_module, _inputs, output) -> None:
            seen.setdefault(path, tuple(output.shape[1:]))
            if path in sources:
                taps.setdefault(path, output)

        return hook

    for path, module in model.named_modules():
        if path in expected:
            handles.append(module.register_forward_hook(record(path)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.randn(batch, *spec.input_shape))
            for head in spec.heads:  # on the output it reads, as train mode runs it
                if head.head.source in taps:
                    model.get_submodule(head.path)(taps[head.head.source])
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    for node in sorted(module_nodes(spec), key=lambda n: -n.path.count(".")):
        if node.path in getattr(model, "split", ()) and node.path not in seen:  # run layer by layer
            last = node.registered()[-1].path
            if last in seen:
                seen[node.path] = seen[last]
    problems = [
        f"{path}: static {fmt_shape(shape)}, runtime {fmt_shape(seen[path]) if path in seen else 'not run'}"
        for path, shape in expected.items()
        if seen.get(path) != shape
    ]
    if isinstance(out, dict):  # feature taps: each one's shape (heads, off in eval, are above)
        for key, node in spec.output_nodes().items():
            if node.tap and (key not in out or tuple(out[key].shape[1:]) != node.out_shape):
                runtime = fmt_shape(tuple(out[key].shape[1:])) if key in out else "missing"
                problems.append(f"output {key!r}: static {fmt_shape(node.out_shape)}, runtime {runtime}")
    elif tuple(out.shape[1:]) != spec.output_shape:
        problems.append(f"model output: static {fmt_shape(spec.output_shape)}, runtime {fmt_shape(tuple(out.shape[1:]))}")
    return problems


def state_dict_file(model: nn.Module, spec: Spec) -> bytes:
    """The bytes of `torch.save(model.state_dict())`, marked as archc's in the zip comment
    (so a later `--save` may replace it) and still loadable with plain `torch.load`."""
    buffer = io.BytesIO()  # all or nothing: a failed save leaves no half-written file
    torch.save(model.state_dict(), buffer)
    note = f"{MARKER} from {Path(spec.file).name}: the state_dict of {spec.name}; rerun `archc build --save` to update"
    return with_zip_comment(buffer.getvalue(), note)

"""Build a live `torch.nn.Module` from a compiled spec (torch is imported only under archc.backends)."""

from __future__ import annotations

import contextlib
import io
import math
from collections import OrderedDict, namedtuple
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from archc.backends import torch_modules
from archc.backends.torch_modules import Dense, Gate, Parallel, Residual  # noqa: F401 (API)
from archc.compiler import Spec
from archc.ir import Node
from archc.outputs import MARKER, with_zip_comment
from archc.primitives import Shape, fmt_shape


class Network(nn.Sequential):
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


class NetworkWithHeads(nn.Module):
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


def _build(node: Node, kinds: dict[int, str]) -> nn.Module:
    if node.is_primitive:
        layer = node.primitive.torch_layer(node.params, node.in_shape)
        cls = getattr(torch_modules, layer.cls) if layer.own else getattr(nn, layer.cls)
        module = cls(*layer.args, **layer.kwargs)
        kinds[id(module)] = node.kind
        return module
    modules = OrderedDict((c.name, _build(c, kinds)) for c in node.registered())
    return node.combinator.build(node, modules)


def uniform_fan_(tensor: torch.Tensor, mode: str = "fan_in") -> torch.Tensor:
    """uniform(-1/sqrt(fan), 1/sqrt(fan)): EfficientNet's linear layers (mode fan_out)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    bound = 1.0 / math.sqrt(fan_in if mode == "fan_in" else fan_out)
    return nn.init.uniform_(tensor, -bound, bound)


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
}


def initialise(model: nn.Module, spec: Spec, kinds: dict[int, str]) -> None:
    """Apply the spec's init rules, module by module in registration order (as torchvision does)."""
    if not spec.init:
        return
    for module in model.modules():
        kind = kinds.get(id(module), "")
        if kind in spec.init:  # containers and layers without rules: nothing to enter no_grad for
            initialise_module(module, spec, kind)


def initialise_module(module: nn.Module, spec: Spec, kind: str, tensors: set[str] | None = None) -> None:
    """Apply the spec's init rules for `kind` to one module's tensors (only those in `tensors`
    when given); tensors without a rule keep what they have."""
    with torch.no_grad():
        for tensor_name, rule in spec.init.get(kind, {}).items():
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
        kinds: dict[int, str] = {}
        modules = OrderedDict((c.name, _build(c, kinds)) for c in spec.tree.registered())
        if spec.heads:
            sources = {n.name: n.head.source for n in spec.heads}
            model = NetworkWithHeads(modules, sources, [n.name for n in spec.head_order()], outputs_type(spec))
        else:
            model = Network(modules)
        initialise(model, spec, kinds)
    return model


def module_nodes(spec: Spec) -> Iterator[Node]:
    """Nodes that own a module (inline groups have none)."""
    return (n for n in spec.tree.walk() if n.path and not n.inline)


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
    problems = [
        f"{path}: static {fmt_shape(shape)}, runtime {fmt_shape(seen[path]) if path in seen else 'not run'}"
        for path, shape in expected.items()
        if seen.get(path) != shape
    ]
    if tuple(out.shape[1:]) != spec.output_shape:
        problems.append(f"model output: static {fmt_shape(spec.output_shape)}, runtime {fmt_shape(tuple(out.shape[1:]))}")
    return problems


def state_dict_file(model: nn.Module, spec: Spec) -> bytes:
    """The bytes of `torch.save(model.state_dict())`, marked as archc's in the zip comment
    (so a later `--save` may replace it) and still loadable with plain `torch.load`."""
    buffer = io.BytesIO()  # all or nothing: a failed save leaves no half-written file
    torch.save(model.state_dict(), buffer)
    note = f"{MARKER} from {Path(spec.file).name}: the state_dict of {spec.name}; rerun `archc build --save` to update"
    return with_zip_comment(buffer.getvalue(), note)

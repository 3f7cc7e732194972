"""File assembly: class and model views, the header and factory, imports, jinja2 templates."""

from __future__ import annotations

import io
import json
import tokenize
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from archc import gcpause
from archc.backends.codegen.arguments import NO_DEFAULT, Param
from archc.backends.codegen.classes import ClassDef, build_classes, define, name_classes
from archc.backends.codegen.emit import Emitter, access, is_attribute
from archc.backends.codegen.layout import Atom, Call, Expr, Prefixed, docstring, layout
from archc.backends.codegen.lower import Lowering, weighted_layers
from archc.backends.codegen.names import (
    LOCALS,
    MISSING,
    Namespace,
    camel,
    literal,
    python_name,
    shape_text,
)
from archc.backends.codegen.probe import Probe, probe
from archc.backends.codegen.terms import INLINE, MODEL, SEP, Child, Container, Hole
from archc.combinators import COMBINATORS
from archc.compiler import Spec
from archc.outputs import MARKER
from archc.primitives import own_source
from archc.spec.schema import NAME_RE

TEMPLATES = Path(__file__).parent / "templates"


@dataclass
class ClassView:
    """What a class template needs, all code already laid out."""

    name: str
    base: str
    template: str
    doc: list[str]
    signature: list[str]
    init: list[str]
    forward: dict = field(default_factory=dict)


def signature_items(params: list[Param]) -> list[Expr]:
    items: list[Expr] = []
    for p in params:
        text = f"{p.name}: {p.annotation}"
        if p.default is not NO_DEFAULT:
            text += f" = {literal(p.default)}"
        items.append(Atom(text))
    return items


def signature(name: str, params: list[Param], ret: str, indent: int) -> list[str]:
    items: list[Expr] = [Atom("self")] if name == "__init__" else []
    return layout(Call(f"def {name}", items + signature_items(params)), indent, trail=f" -> {ret}:")


def class_doc(klass: ClassDef) -> str:
    if klass.doc:
        return klass.doc
    first = klass.instances[0]
    if first.key[0] == "block":
        return f"The `{first.key[1]}` block of the spec."
    return klass.form.doc


class ForwardWriter:
    """The body of a generated class's forward, written by its combinator's `CodegenForm.forward`
    (the `archc.combinators.ForwardWriter` protocol) from the class's grouped children."""

    def __init__(
        self,
        groups: list[tuple[str, list]],
        emitter: Emitter,
        indent: int = 8,
        settings: dict[str, Hole] | None = None,
    ):
        self.entries = dict(groups)  # every child of such a class is named: no runs
        # a structured group (`lower.structured`, an inline parallel in it) by its first part
        self.groups = list(dict.fromkeys(name.split(SEP)[0] for name in self.entries))
        self.source = "x"
        self.emitter, self.indent = emitter, indent
        self.settings = settings or {}
        self.names = Namespace(LOCALS)
        self.lines: list[str] = []
        self.init: list[str] = []  # `self.name = argument` for the settings forward reads
        # an inline parallel's result assigned: (its first line, its end, var, call)
        self.assigned: tuple[int, int, str, Call] | None = None

    def setting(self, name: str, default: Any) -> Any:
        hole = self.settings.get(name)
        if hole is None:
            return default
        if hole.const is not MISSING:
            return hole.const
        self.init.append(" " * self.indent + f"self.{name} = {hole.expr}")
        return f"self.{name}"

    def chain(self, group: str, source: str, var: str) -> None:
        parts = under(self.entries, group)
        if group in self.entries or not parts:
            lines = self.emitter.chain(self.entries.get(group, []), source, var)
            self.lines += indent_lines(lines, self.indent)
            return
        current = source  # a structured group: its runs in turn, an inline parallel's forward
        for part in parts:  # `i` (a run of layers) or `i:kind:name` (an inline parallel)
            if part.isdigit():
                self.chain(f"{group}{SEP}{part}", current, var)
            else:
                kind = part.split(":", 2)[1]
                COMBINATORS[kind].codegen.forward(Inline(self, f"{group}{SEP}{part}", current, var))
            current = var

    def identity(self, group: str) -> bool:
        entries = self.entries.get(group, [])  # (a structured group has none of its own)
        return bool(entries) and all(
            isinstance(e, Child) and e.flag is None and isinstance(e.term, Container)
            and not e.term.entries
            for e in entries
        )  # fmt: skip

    def local(self, name: str) -> str:
        return self.names.create_name(name)

    def line(self, statement: str) -> None:
        if self.assigned is not None:
            start, end, var, call = self.assigned
            if end == len(self.lines) and statement == f"return {var}":
                self.lines[start:] = layout(call, self.indent, lead="return ")  # return cat(...)
                return
        self.assigned = None
        self.lines.append(" " * self.indent + statement)

    def assign(self, var: str, call: Call) -> None:
        """`var = call`, the result of an inline parallel (returned directly if forward then
        returns var)."""
        start = len(self.lines)
        self.lines += layout(call, self.indent, lead=f"{var} = ")
        self.assigned = (start, len(self.lines), var, call)

    def returns(self, function: str, args: list[str | list[str]]) -> None:
        self.lines += layout(Call(function, call_items(args)), self.indent, lead="return ")


def under(entries: dict, group: str) -> list[str]:
    """The next parts of the structured groups under `group`, in order."""
    prefix = group + SEP
    return list(dict.fromkeys(n[len(prefix) :].split(SEP)[0] for n in entries if n.startswith(prefix)))


class Inline:
    """The ForwardWriter an inline parallel's forward writes with, inside its parent's forward:
    its groups are those under `prefix`, its input is `source`, and what it would return is
    assigned to `var` instead."""

    def __init__(self, parent: ForwardWriter, prefix: str, source: str, var: str):
        self.parent, self.prefix, self.source, self.var = parent, prefix, source, var
        self.groups = under(parent.entries, prefix)

    def chain(self, group: str, source: str, var: str) -> None:
        self.parent.chain(f"{self.prefix}{SEP}{group}", source, var)

    def identity(self, group: str) -> bool:
        return self.parent.identity(f"{self.prefix}{SEP}{group}")

    def local(self, name: str) -> str:
        return self.parent.local(name)

    def setting(self, name: str, default: Any) -> Any:
        return self.parent.setting(name, default)

    def line(self, statement: str) -> None:
        if statement.startswith("return "):
            value = statement.removeprefix("return ")
            if value == self.var:
                return
            statement = f"{self.var} = {value}"
        self.parent.line(statement)

    def returns(self, function: str, args: list[str | list[str]]) -> None:
        self.parent.assign(self.var, Call(function, call_items(args)))


def call_items(args: list[str | list[str]]) -> list[Expr]:
    return [
        Call("", [Atom(a) for a in arg], "[", "]", collection=True) if isinstance(arg, list) else Atom(arg)
        for arg in args
    ]


def class_view(klass: ClassDef, emitter: Emitter) -> ClassView:
    view = ClassView(
        klass.name, klass.form.base, "class.py.j2", docstring(class_doc(klass), 4),
        signature("__init__", klass.params, "None", 4), [],
    )  # fmt: skip
    if klass.kind == INLINE:
        view.template = "function.py.j2"
        view.signature = layout(
            Call(f"def {klass.name}", signature_items(klass.params)),
            0,
            trail=" -> list[nn.Module]:",
        )
        view.init = [" " * 4 + line for line in klass.locals] + emitter.sequence_init(klass, 4)
        view.doc = docstring(class_doc(klass), 4)
        return view
    if klass.form.forward is None:  # the base class runs the children
        view.init = [" " * 8 + line for line in klass.locals] + emitter.sequence_init(klass)
        return view
    view.init = ["        super().__init__()"] + [" " * 8 + line for line in klass.locals]
    taken = {p.name for p in klass.params} | {line.split(" = ")[0] for line in klass.locals}
    var = "layers" if "layers" not in taken else "modules"
    for _, entries in klass.groups:
        view.init += emitter.attributes(entries, 8, none_first=True, var=var)
    writer = ForwardWriter(klass.groups, emitter, settings=klass.settings)
    klass.form.forward(writer)
    start = 1 + len(klass.locals)
    view.init[start:start] = writer.init  # settings first, as torchvision sets use_res_connect
    view.forward = {"lines": writer.lines}
    return view


def indent_lines(lines: list[str], indent: int) -> list[str]:
    return [" " * indent + line for line in lines]


def init_lines(spec: Spec, indent: int) -> list[str]:
    """The spec's init rules as torchvision writes them: one pass over self.modules() (with
    rules by path, self.named_modules(), the layers they select tested by name)."""
    by_path = {p for rule in spec.init_paths for p in rule.paths}
    order = [*spec.init, *(n.kind for n in spec.tree.walk() if n.path in by_path and n.is_primitive)]
    kinds = weighted_layers(spec.tree, set(order))
    lines: list[str] = []
    pad = " " * indent
    for kind in dict.fromkeys(order):
        nodes = kinds.get(kind)
        if not nodes:
            continue
        classes = list(dict.fromkeys(n.ref for n in nodes))
        test = classes[0] if len(classes) == 1 else "(" + ", ".join(classes) + ")"
        effective = [
            {t: r for t, r in spec.init_for(kind, n.path).items() if r.kind != "default"}
            for n in nodes
        ]
        body = []
        for tensor in dict.fromkeys(t for rules in effective for t in rules):
            default = spec.init.get(kind, {}).get(tensor)
            default = default if default is not None and default.kind != "default" else None
            cases: list[tuple] = []  # (rule, layers), the kind's own rule last
            for node, rules in zip(nodes, effective):
                rule = rules.get(tensor)
                case = next((c for c in cases if c[0] == rule), None)
                if case is None:
                    cases.append(case := (rule, []))
                case[1].append(node)
            cases.sort(key=lambda c: c[0] == default)
            branches = 0  # `if name ...` cases written so far
            for rule, members in cases:
                calls = tensor_calls(rule, tensor, members, classes) if rule is not None else []
                if not calls:
                    continue
                if rule == default:
                    body += ["else:", *("    " + c for c in calls)] if branches else calls
                    continue
                names = [json.dumps(n.path) for n in members]
                which = f"name == {names[0]}" if len(names) == 1 else f"name in ({', '.join(names)})"
                body += [f"{'elif' if branches else 'if'} {which}:", *("    " + c for c in calls)]
                branches += 1
        if body:
            lines.append(pad + f"    {'elif' if lines else 'if'} isinstance(m, {test}):")
            lines += [pad + "        " + line for line in body]
    loop = "for name, m in self.named_modules():" if by_path else "for m in self.modules():"
    return [pad + loop, *lines] if lines else []


def tensor_calls(rule, tensor: str, layers: list, classes: list[str]) -> list[str]:
    """One rule's statements for `m.<tensor>` of `layers`, tested for None where some lack it."""
    has = [n.has_bias if tensor == "bias" else n.has_weight for n in layers]
    if not any(has):
        return []
    calls = initialiser_calls(rule, tensor, classes)
    return calls if all(has) else [f"if m.{tensor} is not None:", *("    " + c for c in calls)]


def initialiser_calls(rule, tensor: str, classes: list[str]) -> list[str]:
    """The statements applying one init rule to `m.<tensor>` (`classes`: the layers' classes)."""
    if rule.kind not in ("uniform_fan", "normal_fan"):
        args = "".join(f", {k}={literal(v)}" for k, v in rule.args.items())
        return [f"nn.init.{rule.kind}_(m.{tensor}{args})"]
    fan_out = rule.args.get("mode", "fan_in") == "fan_out"
    if classes == ["nn.Linear"]:  # as torchvision's EfficientNet writes it
        fan = "m.out_features" if fan_out else "m.in_features"
    else:  # a weight's fans as torch.nn.init computes them
        fan = f"m.{tensor}.shape[0] * m.{tensor}[0][0].numel()" if fan_out else f"m.{tensor}[0].numel()"
    if rule.kind == "normal_fan":  # as torchvision's RegNet writes it
        scale = literal(float(rule.args.get("scale", 1.0)))
        return [f"fan = {fan}", f"nn.init.normal_(m.{tensor}, mean=0.0, std=math.sqrt({scale} / fan))"]
    return [f"init_range = 1.0 / math.sqrt({fan})", f"nn.init.uniform_(m.{tensor}, -init_range, init_range)"]


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def display_path(file: str) -> str:
    path = Path(file)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return path.name


def generate(spec: Spec, source: str | None = None) -> str:
    """The standalone PyTorch source for a compiled spec (deterministic, ruff-formatted)."""
    with gcpause.paused():  # many live objects, no cycles: linear time (see archc.gcpause)
        return _generate(spec, source)


def _generate(spec: Spec, source: str | None) -> str:
    found = probe(spec)
    lowering = Lowering(found.tags)
    root = lowering.instance(spec.tree, ("model",), MODEL)
    blocks = [i for i in lowering.instances if i is not root]
    classes = build_classes(blocks, spec.templates)
    model = define([root], None, {n: spec.params[n] for n in found.exposed})
    module = Namespace()
    for cls in lowering.own:  # archc's own module classes keep their names
        module.reserve(cls)
    model.name = module.create_name(camel(spec.name))
    outputs = module.create_name(f"{camel(spec.name)}Outputs") if spec.heads and not spec.taps else ""
    # the function is named after the file, a family's after the model it builds (the variant,
    # or the spec's own name for its base values), as torchvision's are
    stem = spec.variant or (spec.name if spec.variants else Path(spec.file).stem)
    factory = module.create_name(
        stem if NAME_RE.match(stem) and python_name(stem) == stem else spec.name
    )
    name_classes(classes, module)

    emitter = Emitter()
    body = (
        environment()
        .get_template("body.py.j2")
        .render(
            classes=[class_view(k, emitter) for k in classes],
            model=model_class(spec, model, emitter, found, outputs),
            factory=factory_lines(factory, model, found, spec),
        )
    )
    used = names(body)
    helpers = list(  # the classes the file's containers need, once each
        dict.fromkeys(
            c.codegen.helper
            for c in COMBINATORS.values()
            if c.codegen.helper and c.codegen.base in used
        )
    )
    # archc's own module classes the layers construct (TorchLayer(own=True)), their source
    # copied from archc/backends/torch_modules.py once each: the file needs no archc.
    helpers += [own_source(cls) + "\n" for cls in lowering.own if cls in used]
    if outputs:
        helpers.append(outputs_class(spec, outputs))
    return (
        environment()
        .get_template("module.py.j2")
        .render(
            header=header(spec, source, found),
            imports=imports(used | names("".join(helpers))),  # each helper is whole lines of code
            helpers=helpers,
            body=body,
        )
    )


def names(code: str) -> set[str]:
    """The identifiers Python code uses (not the words inside its strings and comments)."""
    tokens = tokenize.generate_tokens(io.StringIO(code).readline)
    return {token.string for token in tokens if token.type == tokenize.NAME}


def imports(used: set[str]) -> list[list[str]]:
    """The import groups, as isort orders them, for the names a generated file uses: the
    one place that decides what a file imports."""
    stdlib = ["import math"] if "math" in used else []
    stdlib += ["from collections import OrderedDict"] if "OrderedDict" in used else []
    stdlib += ["from typing import NamedTuple"] if "NamedTuple" in used else []
    torch = ["import torch"] if "torch" in used else []
    return [group for group in (stdlib, [*torch, "from torch import nn"]) if group]


def header(spec: Spec, source: str | None, found: Probe) -> list[str]:
    where = source or display_path(spec.file)
    parts = [f"{MARKER} from {where}: edit the spec, not this file."]
    description = spec.description or "\n".join(spec.comments)
    if description:
        parts.append(description)
    macs = (
        f"{spec.macs:,} MACs ({spec.macs / 1e9:.2f} G)"
        if spec.macs >= 1e8
        else f"{spec.macs:,} MACs"
    )
    parts.append(
        f"Model {spec.name}: input {shape_text(spec.input_shape)}, output {outputs_text(spec)}; "
        f"{spec.param_count:,} parameters, {macs}."
    )
    return docstring("\n\n".join(parts), 0)


def outputs_text(spec: Spec) -> str:
    """The model's output shape; with taps, the dict's keys and shapes (`{layer2: 512x28x28,
    ...}`, heads marked as train mode only)."""
    if not spec.taps:
        return shape_text(spec.output_shape)
    items = [
        f"{key}: {shape_text(node.out_shape)}" + (" (train)" if node.head else "")
        for key, node in spec.output_nodes().items()
    ]
    return "{" + ", ".join(items) + "}"


def outputs_class(spec: Spec, name: str) -> str:
    """The NamedTuple a model with heads returns in train mode (TorchScript: always)."""
    doc = f"The outputs of {spec.name} in train mode: the main output, then its auxiliary heads'."
    fields = [f"    {spec.outputs[0]}: torch.Tensor"]
    fields += [f"    {field}: torch.Tensor | None" for field in spec.outputs[1:]]
    return "\n".join([f"class {name}(NamedTuple):", *docstring(doc, 4), "", *fields]) + "\n"


def head_forward(spec: Spec, entries: list, outputs: str) -> dict:
    """forward of a model with heads: the main layers in turn, each head (in train mode) on the
    output of the layer it reads, then the outputs tuple (as torchvision's GoogLeNet does it:
    TorchScript always returns the tuple, eager Python the main output alone in eval)."""
    nodes = {n.name: n for n in spec.tree.registered()}
    local = Namespace(set(LOCALS) | {"x", outputs})
    var = {n.name: local.create_name(n.head.output) for n in spec.head_order()}
    lines = [f"        {var[n.name]}: torch.Tensor | None = None" for n in spec.head_order()]
    for e in entries:
        if nodes[e.name].head is not None:
            continue
        call = Call(access(e.name), [Atom("x")], comment=shape_text(e.out_shape))
        lines += layout(call, 8, lead="x = ")
        for head in spec.heads:
            if head.head.source == e.name:
                lines.append("        if self.training:")
                call = Call(access(head.name), [Atom("x")], comment=shape_text(head.out_shape))
                lines += layout(call, 12, lead=f"{var[head.name]} = ")
    args = ", ".join(["x", *(var[n.name] for n in spec.head_order())])
    lines += [
        "        if torch.jit.is_scripting():",
        f"            return {outputs}({args})",
        f"        return self.outputs({args})",
    ]
    params = ", ".join(["self", "x: torch.Tensor", *(f"{var[n.name]}: torch.Tensor | None" for n in spec.head_order())])
    method = [
        "",
        "    @torch.jit.unused",
        *layout(Call("def outputs", [Atom(p) for p in params.split(", ")]), 4, trail=f" -> {outputs}:"),
        *docstring("The outputs tuple in train mode, the main output alone in eval.", 8),
        "        if self.training:",
        f"            return {outputs}({args})",
        "        return x",
    ]
    return {"lines": lines, "returns": outputs, "tail": [], "methods": method}


def tap_forward(spec: Spec) -> dict:
    """forward of a model with feature taps: the layers in turn, a tapped layer's output kept in
    a variable named after it (a sequence holding a tap deeper down written out layer by layer;
    heads, in train mode, on the output they read), then the dict of the outputs in the spec's
    order (heads' only when they ran), as the live build returns it."""
    outputs = spec.output_nodes()
    local = Namespace(set(LOCALS))
    var = {node.path: local.create_name(key.replace(".", "_")) for key, node in outputs.items()}
    holders = {n.path.rsplit(".", i)[0] for n in outputs.values() for i in range(1, n.path.count(".") + 1)}
    lines = [f"        {var[n.path]}: torch.Tensor | None = None" for n in spec.head_order()]

    def run(node, reach: str, current: str) -> str:
        if node.path in holders:
            for i, child in enumerate(node.registered()):
                step = f"{reach}.{child.name}" if is_attribute(child.name) else f"{reach}[{i}]"
                current = run(child, step, current)
            return current
        target = var[node.path] if node.tap else "x"
        nonlocal lines
        lines += layout(Call(reach, [Atom(current)], comment=shape_text(node.out_shape)), 8, lead=f"{target} = ")
        return target

    current = "x"
    for node in spec.tree.registered():
        if node.head is not None:
            continue
        current = run(node, access(node.name), current)
        for head in spec.heads:
            if head.head.source == node.name:
                lines.append("        if self.training:")
                call = Call(access(head.name), [Atom(current)], comment=shape_text(head.out_shape))
                lines += layout(call, 12, lead=f"{var[head.path]} = ")
    if not spec.heads:
        items = [Atom(f"{literal(key)}: {var[node.path]}") for key, node in outputs.items()]
        lines += layout(Call("", items, "{", "}", collection=True), 8, lead="return ")
        return {"lines": lines, "returns": "dict[str, torch.Tensor]", "tail": []}
    result = local.create_name("outputs")
    lines.append(f"        {result}: dict[str, torch.Tensor] = {{}}")
    for key, node in outputs.items():
        if node.head is None:
            lines.append(f"        {result}[{literal(key)}] = {var[node.path]}")
        else:
            lines += [f"        if {var[node.path]} is not None:", f"            {result}[{literal(key)}] = {var[node.path]}"]
    return {"lines": lines, "returns": "dict[str, torch.Tensor]", "tail": [f"        return {result}"]}


def model_class(spec: Spec, model: ClassDef, emitter: Emitter, found: Probe, outputs: str = "") -> ClassView:
    entries = model.groups[0][1]
    explicit = (
        all(isinstance(e, Child) and is_attribute(e.name) for e in entries) and not model.positional
    )
    if outputs and (model.positional or not all(isinstance(e, Child) for e in entries)):
        raise ValueError("a model with heads has named top-level layers")  # the body is a mapping
    explicit = explicit or bool(outputs) or bool(spec.taps)
    doc = f"The {spec.name} network: {shape_text(spec.input_shape)} in, {outputs_text(spec)} out."
    view = ClassView(
        model.name, "nn.Module" if explicit else "nn.Sequential", "model.py.j2",
        docstring(doc, 4), signature("__init__", model.params, "None", 4), [],
    )  # fmt: skip
    if spec.taps:
        view.init = ["        super().__init__()"] + emitter.attributes(entries, 8, none_first=False)
        view.forward = tap_forward(spec)
    elif outputs:
        view.init = ["        super().__init__()"] + emitter.attributes(entries, 8, none_first=False)
        view.forward = head_forward(spec, entries, outputs)
    elif explicit:
        view.init = ["        super().__init__()"] + emitter.attributes(
            entries, 8, none_first=False
        )
        view.forward = {
            "lines": [
                line
                for e in entries
                for line in layout(
                    Call(f"self.{e.name}", [Atom("x")], comment=shape_text(e.out_shape)),
                    8,
                    lead="x = ",
                )
            ]
        }
    else:
        view.init = emitter.sequence_init(model, comments=True)
    view.forward["init"] = init_lines(spec, 8) + freeze_lines(spec)
    if spec.frozen:
        view.forward["methods"] = view.forward.get("methods", []) + train_method(model.name)
    return view


def freeze_lines(spec: Spec) -> list[str]:
    """The spec's frozen modules, as MMDetection's backbones freeze stages: no gradients here,
    eval mode in `train` (see `train_method`); the same as the live build's `Frozen`."""
    if not spec.frozen:
        return []
    paths = Call("", [Atom(literal(p)) for p in spec.frozen], "(", ")", collection=True)
    if len(spec.frozen) == 1:
        paths = Atom(literal(tuple(spec.frozen)))
    lines = [
        "        # frozen by the spec (freeze:): no gradients, and eval mode in train mode",
        *layout(paths, 8, lead="self._frozen = "),
        "        for name in self._frozen:",
        "            self.get_submodule(name).requires_grad_(False)",
    ]
    return ([""] if init_lines(spec, 8) else []) + lines


def train_method(cls: str) -> list[str]:
    """`train` keeping the frozen modules in eval mode: their batch norms keep their running
    statistics (and use them), their dropout is off."""
    return [
        "",
        f'    def train(self, mode: bool = True) -> "{cls}":',
        *docstring("Train or eval mode; frozen layers stay in eval, keeping their batch norm statistics.", 8),
        "        super().train(mode)",
        "        for name in self._frozen:",
        "            self.get_submodule(name).eval()",
        "        return self",
    ]


def factory_lines(name: str, model: ClassDef, found: Probe, spec: Spec) -> list[str]:
    lines = signature(name, model.params, model.name, 0)
    doc = f"{spec.name} with freshly initialised weights."
    if found.fixed:
        settings = ", ".join(f"{n}={literal(spec.params[n])}" for n in found.fixed)
        doc += f"\n\nFixed in this file: {settings} (change the spec and regenerate)."
    lines += docstring(doc, 4)
    call = Call(model.name, [Prefixed(f"{p.name}=", Atom(p.name)) for p in model.params])
    return lines + layout(call, 4, lead="return ")

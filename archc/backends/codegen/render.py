"""File assembly: class and model views, the header and factory, imports, jinja2 templates."""

from __future__ import annotations

import io
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
from archc.backends.codegen.terms import INLINE, MODEL, Child, Hole
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
        self.groups = list(self.entries)
        self.emitter, self.indent = emitter, indent
        self.settings = settings or {}
        self.names = Namespace(LOCALS)
        self.lines: list[str] = []
        self.init: list[str] = []  # `self.name = argument` for the settings forward reads

    def setting(self, name: str, default: Any) -> Any:
        hole = self.settings.get(name)
        if hole is None:
            return default
        if hole.const is not MISSING:
            return hole.const
        self.init.append(" " * self.indent + f"self.{name} = {hole.expr}")
        return f"self.{name}"

    def chain(self, group: str, source: str, var: str) -> None:
        lines = self.emitter.chain(self.entries.get(group, []), source, var)
        self.lines += indent_lines(lines, self.indent)

    def local(self, name: str) -> str:
        return self.names.create_name(name)

    def line(self, statement: str) -> None:
        self.lines.append(" " * self.indent + statement)

    def returns(self, function: str, args: list[str | list[str]]) -> None:
        items: list[Expr] = [
            Call("", [Atom(a) for a in arg], "[", "]", collection=True)
            if isinstance(arg, list)
            else Atom(arg)
            for arg in args
        ]
        self.lines += layout(Call(function, items), self.indent, lead="return ")


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
        view.init = emitter.sequence_init(klass, 4)
        view.doc = docstring(class_doc(klass), 4)
        return view
    if klass.form.forward is None:  # the base class runs the children
        view.init = emitter.sequence_init(klass)
        return view
    view.init = ["        super().__init__()"]
    for _, entries in klass.groups:
        view.init += emitter.attributes(entries, 8, none_first=True)
    writer = ForwardWriter(klass.groups, emitter, settings=klass.settings)
    klass.form.forward(writer)
    view.init[1:1] = writer.init  # settings first, as torchvision sets use_res_connect
    view.forward = {"lines": writer.lines}
    return view


def indent_lines(lines: list[str], indent: int) -> list[str]:
    return [" " * indent + line for line in lines]


def init_lines(spec: Spec, indent: int) -> list[str]:
    """The spec's init rules as torchvision writes them: one pass over self.modules()."""
    kinds = weighted_layers(spec.tree, set(spec.init))
    lines: list[str] = []
    pad = " " * indent
    for kind, rules in spec.init.items():
        nodes = kinds.get(kind)
        active = {t: r for t, r in rules.items() if r.kind != "default"}
        if not nodes or not active:
            continue
        classes = list(dict.fromkeys(n.ref for n in nodes))
        test = classes[0] if len(classes) == 1 else "(" + ", ".join(classes) + ")"
        body = []
        for tensor, rule in active.items():
            has = [n.has_bias if tensor == "bias" else n.has_weight for n in nodes]
            if not any(has):
                continue
            calls = initialiser_calls(rule, tensor, classes)
            body += [f"if m.{tensor} is not None:", *("    " + c for c in calls)] if not all(has) else calls
        if body:
            lines.append(pad + f"    {'elif' if lines else 'if'} isinstance(m, {test}):")
            lines += [pad + "        " + line for line in body]
    return [pad + "for m in self.modules():", *lines] if lines else []


def initialiser_calls(rule, tensor: str, classes: list[str]) -> list[str]:
    """The statements applying one init rule to `m.<tensor>` (`classes`: the layers' classes)."""
    if rule.kind != "uniform_fan":
        args = "".join(f", {k}={literal(v)}" for k, v in rule.args.items())
        return [f"nn.init.{rule.kind}_(m.{tensor}{args})"]
    fan_out = rule.args.get("mode", "fan_in") == "fan_out"
    if classes == ["nn.Linear"]:  # as torchvision's EfficientNet writes it
        fan = "m.out_features" if fan_out else "m.in_features"
    else:  # a weight's fans as torch.nn.init computes them
        fan = f"m.{tensor}.shape[0] * m.{tensor}[0][0].numel()" if fan_out else f"m.{tensor}[0].numel()"
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
    outputs = module.create_name(f"{camel(spec.name)}Outputs") if spec.heads else ""
    # the function is named after the file (a family's after the variant), as torchvision's are
    stem = spec.variant or Path(spec.file).stem
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
            imports=imports(names("".join([*helpers, body]))),
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
        f"Model {spec.name}: input {shape_text(spec.input_shape)}, output {shape_text(spec.output_shape)}; "
        f"{spec.param_count:,} parameters, {macs}."
    )
    return docstring("\n\n".join(parts), 0)


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


def model_class(spec: Spec, model: ClassDef, emitter: Emitter, found: Probe, outputs: str = "") -> ClassView:
    entries = model.groups[0][1]
    explicit = (
        all(isinstance(e, Child) and is_attribute(e.name) for e in entries) and not model.positional
    )
    if outputs and (model.positional or not all(isinstance(e, Child) for e in entries)):
        raise ValueError("a model with heads has named top-level layers")  # the body is a mapping
    explicit = explicit or bool(outputs)
    doc = f"The {spec.name} network: {shape_text(spec.input_shape)} in, {shape_text(spec.output_shape)} out."
    view = ClassView(
        model.name, "nn.Module" if explicit else "nn.Sequential", "model.py.j2",
        docstring(doc, 4), signature("__init__", model.params, "None", 4), [],
    )  # fmt: skip
    if outputs:
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
    view.forward["init"] = init_lines(spec, 8)
    return view


def factory_lines(name: str, model: ClassDef, found: Probe, spec: Spec) -> list[str]:
    lines = signature(name, model.params, model.name, 0)
    doc = f"{spec.name} with freshly initialised weights."
    if found.fixed:
        settings = ", ".join(f"{n}={literal(spec.params[n])}" for n in found.fixed)
        doc += f"\n\nFixed in this file: {settings} (change the spec and regenerate)."
    lines += docstring(doc, 4)
    call = Call(model.name, [Prefixed(f"{p.name}=", Atom(p.name)) for p in model.params])
    return lines + layout(call, 4, lead="return ")

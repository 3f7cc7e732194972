"""From a spec file to the compiled tree: load → validate → expand → infer."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archc import freeze
from archc.combinators import COMBINATORS
from archc.errors import SpecError, UsageError, format_path
from archc.expand import BlockDef, Origin, Scope, expand, expression_error, pydantic_error
from archc.ir import Node
from archc.primitives import PRIMITIVES
from archc.spec import expr
from archc.spec.compose import annotate, compose
from archc.spec.defaults import kind_defaults
from archc.spec.loader import Document, SourceMap, load_file, load_text
from archc.spec.schema import (
    FAN_BASED,
    INIT_ARGS,
    NAME_RE,
    InitRule,
    SpecHeader,
    Template,
    check_name,
)

LIBRARY_DIR = Path(__file__).parent / "blocks"


@dataclass(frozen=True)
class PathInit:
    """An init rule for the layers whose module path matches `selector` (`classifier.1`,
    `AuxLogits.fc`, `features.*.expand3x3`): its tensors' initialisers replace those of the
    layers' kind rule. `paths`: the layers it matches, in tree order."""

    selector: str
    tensors: dict[str, InitRule]
    paths: tuple[str, ...]


@dataclass
class Spec:
    """A compiled spec: the header fields and the inferred module tree."""

    name: str
    file: str
    input_shape: tuple[int, ...]
    tree: Node
    init: dict[str, dict[str, InitRule]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    comments: list[str] = field(default_factory=list)  # the file's leading comment block
    templates: dict[str, Template] = field(default_factory=dict, repr=False)  # blocks it can use
    document: Document | None = field(default=None, repr=False, compare=False)  # what it compiled
    variants: tuple[str, ...] = ()  # the names under the file's `variants:`
    variant: str | None = None  # the one compiled (None: the base values)
    # the train-mode outputs in order: the main output's name, then (name, head layer) pairs
    outputs: tuple[str, ...] = ("out",)
    lets: dict[str, Any] = field(default_factory=dict)  # the values `let:` derived, in order
    init_paths: tuple[PathInit, ...] = ()  # init rules by module path, in the order written
    # the outermost frozen modules' paths, in module order (`freeze:`, `--freeze`: archc.freeze)
    frozen: tuple[str, ...] = ()

    def init_for(self, kind: str, path: str) -> dict[str, InitRule]:
        """The init rules of one layer, by tensor: its kind's, each replaced by the last rule
        whose selector matches its path (tensors in the order the rules name them)."""
        rules = dict(self.init.get(kind, {}))
        for rule in self.init_paths:
            if path in rule.paths:
                rules.update(rule.tensors)
        return rules

    @property
    def heads(self) -> list[Node]:
        """The model's auxiliary heads (extra outputs, train mode only), in body order."""
        return [n for n in self.tree.children if n.head is not None]

    def head_order(self) -> list[Node]:
        """The heads in the order of the train-mode outputs (after the main one)."""
        by_output = {n.head.output: n for n in self.heads}
        return [by_output[name] for name in self.outputs[1:]]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.tree.out_shape

    @property
    def param_count(self) -> int:
        return self.tree.param_count

    @property
    def macs(self) -> int:
        return self.tree.macs


def _templates(doc_blocks: dict, source: SourceMap, base: tuple, builtin: bool) -> dict[str, BlockDef]:
    scope = Scope({}, source, {})
    out = {}
    for name, raw in doc_blocks.items():
        path = base + (name,)
        if name in PRIMITIVES or name in COMBINATORS:
            raise source.error(f"block {name!r} would hide the built-in layer type of that name", path, key=True)
        problem = check_name(name)
        if problem:
            raise source.error(problem, path, key=True)
        try:
            template = Template.model_validate(raw)
        except ValidationError as exc:
            raise pydantic_error(scope, exc, path, f"block {name!r}") from None
        reserved = template.reserved_name()
        if reserved is not None:
            key = reserved[1]
            raise source.error(
                f"{key!r} is reserved: archc sets it to the block's input channels", path + reserved, key=True
            )
        for i, requirement in enumerate(template.requires):
            try:
                expr.parse(requirement)
            except expr.ExprError as exc:
                raise source.error(str(exc), path + ("requires", i)) from None
        out[name] = BlockDef(name, template, source, path, builtin)
    return out


@lru_cache(maxsize=1)
def library() -> dict[str, BlockDef]:
    """The built-in block library, written in the spec language (archc/blocks/*.yaml)."""
    blocks: dict[str, BlockDef] = {}
    for file in sorted(LIBRARY_DIR.glob("*.yaml")):
        doc = load_file(file)
        blocks.update(_templates(doc.data["blocks"], doc.source, ("blocks",), builtin=True))
    return blocks


def is_selector(key: str) -> bool:
    """Whether an `init:` key selects layers by path (anything not a layer kind)."""
    return key not in PRIMITIVES


def selector_pattern(selector: str) -> re.Pattern:
    """A module-path glob as a regular expression: `*` is any part of one name, `**` any
    run of names and dots, `?` one character of a name; the rest is literal."""
    wild = {"**": ".*", "*": "[^.]*", "?": "[^.]"}
    parts = re.split(r"(\*\*|\*|\?)", selector)
    return re.compile("".join(wild.get(part, re.escape(part)) for part in parts))


def _path_rules(raw: dict, source: SourceMap, tree: Node, params: dict) -> tuple[PathInit, ...]:
    """The `init:` rules keyed by a module path (or glob), each matched against the layers
    with weights; a selector matching none of them is an error at the selector. A rule with
    `if: false` (a layer it selects switched off by the same parameter) is left out."""
    layers = [n for n in tree.walk() if n.is_primitive and n.primitive.has_weights and n.path]
    out = []
    for key, tensors in raw.items():
        if not is_selector(key):
            continue
        path = ("init", key)
        if isinstance(tensors, dict) and "if" in tensors:
            tensors = dict(tensors)
            if not _condition(tensors.pop("if"), source, path + ("if",), params):
                continue
        pattern = selector_pattern(key)
        matched = [n for n in layers if pattern.fullmatch(n.path)]
        if not matched:
            weighted = ", ".join(k for k, p in PRIMITIVES.items() if p.has_weights)
            close = difflib.get_close_matches(key, [n.path for n in layers], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise source.error(
                f"init: {key!r} is neither a layer kind with weights ({weighted}) nor the path "
                f"of a layer with weights (a module path, * and ** match names){hint}",
                path,
                key=True,
            )
        rules = _tensor_rules(tensors, source, path, {n.kind for n in matched})
        out.append(PathInit(key, rules, tuple(n.path for n in matched)))
    return tuple(out)


def _condition(value: Any, source: SourceMap, path: tuple, params: dict) -> bool:
    """An init rule's `if`: true, false or an expression over the model's parameters."""
    if expr.is_expression(value):
        try:
            value = expr.evaluate(value[2:-1], params)
        except expr.ExprError as exc:
            raise source.error(f"in {value}: {exc}", path) from None
    if not isinstance(value, bool):
        raise source.error(f"'if' must be true or false, got {value!r}", path)
    return value


def _tensor_rules(tensors: Any, source: SourceMap, path: tuple, kinds: set[str]) -> dict[str, InitRule]:
    """One init rule's {weight, bias} initialisers, for layers of the given kinds."""
    if not isinstance(tensors, dict):
        raise source.error("init rules map weight/bias to an initialiser", path)
    rules: dict[str, InitRule] = {}
    for tensor, rule in tensors.items():
        if tensor not in ("weight", "bias"):
            raise source.error(f"init names 'weight' or 'bias', not {tensor!r}", path + (tensor,), key=True)
        rules[tensor] = _init_rule(rule, source, path + (tensor,))
        for kind in sorted(kinds):
            if rules[tensor].kind in FAN_BASED and (tensor == "bias" or kind == "batchnorm"):
                raise source.error(f"{rules[tensor].kind} needs a weight with fan-in and fan-out (a conv or linear weight), not a {kind} {tensor}", path + (tensor,))
    return rules


def _init_rules(raw: dict, source: SourceMap) -> dict[str, dict[str, InitRule]]:
    rules: dict[str, dict[str, InitRule]] = {}
    for kind, tensors in raw.items():
        path = ("init", kind)
        if is_selector(kind):
            continue  # a path: matched once the tree is known (_path_rules)
        prim = PRIMITIVES.get(kind)
        if prim is None or not prim.has_weights:
            weighted = ", ".join(k for k, p in PRIMITIVES.items() if p.has_weights)
            raise source.error(f"init applies to layers with weights ({weighted}), not {kind!r}", path, key=True)
        rules[kind] = _tensor_rules(tensors, source, path, {kind})
    return rules


def _init_rule(raw: Any, source: SourceMap, path: tuple) -> InitRule:
    if isinstance(raw, str):
        kind, args = raw, {}
    elif isinstance(raw, dict) and len(raw) == 1:
        (kind, args), = raw.items()
        args = args if args is not None else {}
        if not isinstance(args, dict):
            args = {"val": args} if kind == "constant" else args
    else:
        raise source.error("an initialiser is a name (zeros) or {name: {args}}", path)
    if kind not in INIT_ARGS:
        raise source.error(f"unknown initialiser {kind!r}; known: {', '.join(INIT_ARGS)}", path)
    if not isinstance(args, dict):
        raise source.error(f"{kind} takes a mapping of arguments", path + (kind,))
    for key in args:
        if key not in INIT_ARGS[kind]:
            allowed = ", ".join(sorted(INIT_ARGS[kind])) or "none"
            raise source.error(f"{kind} has no argument {key!r} (arguments: {allowed})", path + (kind, key), key=True)
    try:
        return InitRule(kind=kind, args=args)
    except ValidationError as exc:
        err = exc.errors()[0]
        # pydantic adds validator tags ('function-after[...]') to locations; keep the names
        loc = tuple(p for p in err["loc"][1:] if isinstance(p, int) or NAME_RE.match(p))
        message = err["msg"]
        if message.startswith("Input ") and loc:
            message = f"{loc[-1]} {message[6:]} (got {err['input']!r})"
        raise source.error(f"{kind}: {message}", path + (kind,) + loc) from None


def compile_document(doc: Document, *, variant: str | None = None, overrides: Sequence[str] = ()) -> Spec:
    """Compile `doc` after `extends:`, the variant and the KEY=VALUE overrides are applied."""
    doc = compose(doc, variant=variant, overrides=overrides)
    try:
        return _compile(doc)
    except SpecError as exc:
        raise annotate(exc, doc.source) from None


def _compile(doc: Document) -> Spec:
    source = doc.source
    scope = Scope({}, source, {})
    if not isinstance(doc.data, dict):
        raise source.error("a spec is a mapping with archc, name, input and body", ())
    try:
        header = SpecHeader.model_validate(doc.data)
    except ValidationError as exc:
        raise pydantic_error(scope, exc, (), "spec") from None
    blocks = dict(library())
    for name, block in _templates(header.blocks, source, ("blocks",), builtin=False).items():
        if name in blocks:
            raise source.error(f"block {name!r} is already defined in the built-in library", ("blocks", name), key=True)
        blocks[name] = block
    init = _init_rules(header.init, source)
    for key in header.params:
        problem = check_name(key)
        if problem:
            raise source.error(problem, ("params", key), key=True)
    origins = {key: (Origin(key, source, ("params", key)),) for key in header.params}
    env = _lets(header, Scope(dict(header.params), source, blocks, origins=origins))
    defaults = kind_defaults(header.defaults, source, dict(env))
    shape = tuple(header.input)
    tree = expand(header.body, ("body",), Scope(env, source, blocks, origins=origins), shape, defaults)
    templates = {name: block.template for name, block in blocks.items()}
    lets = {key: env[key] for key in header.let}
    outputs = _outputs(header, tree, source)
    # after the outputs are settled (what the model returns decides which modules it has)
    frozen = freeze.resolve(tree, header.freeze, lambda i, message: source.error(message, ("freeze", i)))
    return Spec(
        header.name, source.file, shape, tree, init, dict(header.params), header.description,
        doc.leading_comments, templates, doc, doc.variants, doc.variant, outputs,
        lets, _path_rules(header.init, source, tree, dict(env)), frozen,
    )  # fmt: skip


def _lets(header: SpecHeader, scope: Scope) -> dict[str, Any]:
    """The params and, in order, the values `let:` derives from them (each may read the ones
    before it), `requires:` checked as soon as the values a condition reads are known (those
    over params alone before any let, so a bad param is named rather than a let it breaks). An
    error is at the let or condition, or at the params it read when they caused it;
    `scope.origins` learns where each let's inputs were written."""
    env, source = scope.env, scope.source
    pending = list(enumerate(header.requires))
    pending = _check_requires(pending, scope)
    for key, value in header.let.items():
        path = ("let", key)
        problem = check_name(key)
        if problem:
            raise source.error(problem, path, key=True)
        if key in header.params:
            raise source.error(f"let {key!r} would hide the param of that name", path, key=True)
        if not expr.is_expression(value):
            env[key] = value
        else:
            try:
                env[key] = expr.evaluate(value[2:-1], env)
            except expr.ExprError as exc:
                raise expression_error(scope, exc, f"let {key} = {value}: {exc}", path, value[2:-1]) from None
            scope.origins[key] = tuple(o for n in expr.names(value[2:-1]) for o in scope.origins.get(n, ()))
        pending = _check_requires(pending, scope)
    _check_requires(pending, scope, last=True)
    return env


def _check_requires(pending: list[tuple[int, str]], scope: Scope, *, last: bool = False) -> list[tuple[int, str]]:
    """Check the conditions whose names are all known now (all of them when `last`); return the rest."""
    env, waiting = scope.env, []
    for i, requirement in pending:
        path = ("requires", i)
        text = requirement[2:-1] if expr.is_expression(requirement) else requirement
        try:
            needed = expr.names(text)
        except expr.ExprError as exc:
            raise scope.source.error(str(exc), path) from None
        if not last and not needed <= set(env):
            waiting.append((i, requirement))
            continue
        try:
            ok = expr.evaluate(text, env)
        except expr.ExprError as exc:
            raise expression_error(scope, exc, f"in requirement {requirement}: {exc}", path, text) from None
        if ok is not True:
            used = ", ".join(f"{k}={env[k]!r}" for k in sorted(needed) if k in env)
            raise scope.blame(f"the spec requires {text} (got {used})", path, expr.culprits(text, env))
    return waiting


def _outputs(header: SpecHeader, tree: Node, source: SourceMap) -> tuple[str, ...]:
    """The train-mode outputs: `outputs:` (heads an `if` switched off left out), checked against
    the heads, or `out` and the heads in body order."""
    heads = [n for n in tree.children if n.head is not None]
    names = [n.head.output for n in heads]
    for i, node in enumerate(heads):
        if node.head.output in names[:i]:
            raise SpecError(f"two heads give the output {node.head.output!r}", node.location, node.field_path)
    if not header.outputs:
        if "out" in names:
            raise SpecError("a head's output is named 'out', the main output's default name: name it in outputs:", source.locate(("body",)))
        return ("out", *names)
    main, *rest = header.outputs
    if main in names:
        raise source.error(f"outputs starts with the main output's name, not the head output {main!r}", ("outputs", 0))
    body = header.body if isinstance(header.body, dict) else {}
    declared = {  # every head the body writes, those an `if` switched off too
        (v["head"].get("output") or key) if isinstance(v.get("head"), dict) else key
        for key, v in body.items()
        if isinstance(v, dict) and "head" in v
    }
    for i, name in enumerate(rest, 1):
        if name not in declared:
            raise source.error(f"outputs names {name!r}, which no head gives (heads: {', '.join(sorted(declared)) or 'none'})", ("outputs", i))
    for name in names:
        if name not in rest:
            node = heads[names.index(name)]
            raise SpecError(f"head output {name!r} is missing from outputs: ({', '.join(header.outputs)})", node.location, node.field_path)
    return (main, *[n for n in rest if n in names])


def load(path: str | Path, *, variant: str | None = None, overrides: Sequence[str] = ()) -> Spec:
    """Load, validate, expand and infer a spec file; `variant` names one of its `variants:`,
    `overrides` is a list of "KEY=VALUE" strings like `--set` takes."""
    from archc.registry import find  # a shipped model's name works where a path does

    path, implied = find(path)
    if implied is not None and variant is not None and variant != implied:
        raise UsageError(
            f"{implied!r} is itself a variant of {Path(path).name}; give the file with "
            f"--variant {variant}, or the model's name alone"
        )
    return compile_document(load_file(path), variant=variant or implied, overrides=overrides)


def loads(
    text: str, file: str = "<string>", *, variant: str | None = None, overrides: Sequence[str] = ()
) -> Spec:
    return compile_document(load_text(text, file), variant=variant, overrides=overrides)


__all__ = ["Spec", "load", "loads", "library", "format_path", "SpecError"]

"""From a spec file to the compiled tree: load → validate → expand → infer."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from archc import freeze, infer
from archc.combinators import COMBINATORS, shares_input
from archc.errors import SpecError, UsageError, format_path
from archc.expand import BlockDef, Origin, Scope, expand, expression_error, pydantic_error
from archc.ir import Node, path_glob, splice
from archc.primitives import PRIMITIVES
from archc.spec import expr
from archc.spec.compose import annotate, compose
from archc.spec.defaults import kind_defaults
from archc.spec.loader import Document, SourceMap, load_file, load_shipped, load_text
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
    # what the model returns, in order: with taps the keys of its dict (tapped layers' names and
    # heads' outputs); else the train-mode tuple's fields, the main output's name first
    outputs: tuple[str, ...] = ("out",)
    lets: dict[str, Any] = field(default_factory=dict)  # the values `let:` derived, in order
    init_paths: tuple[PathInit, ...] = ()  # init rules by module path, in the order written
    # the outermost frozen modules' paths, in module order (`freeze:`, `--freeze`: archc.freeze)
    frozen: tuple[str, ...] = ()
    taps: tuple[str, ...] = ()  # the layers (module paths) whose outputs the model returns (a dict)
    dropped: tuple[str, ...] = ()  # module paths `include_top: false` left out (after the last tap)

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
        """The heads in the order of the outputs."""
        by_output = {n.head.output: n for n in self.heads}
        return [by_output[name] for name in self.outputs if name in by_output]

    def output_nodes(self) -> dict[str, Node]:
        """With taps, each key of the model's dict and the node giving it (a tapped layer, a
        head: train mode only), in order; without, {}."""
        if not self.taps:
            return {}
        nodes = {n.path: n for n in self.tree.walk() if n.tap}
        nodes.update({n.head.output: n for n in self.heads})
        return {name: nodes[name] for name in self.outputs}

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
    for doc in load_shipped(sorted(LIBRARY_DIR.glob("*.yaml")), "blocks"):
        blocks.update(_templates(doc.data["blocks"], doc.source, ("blocks",), builtin=True))
    return blocks


def is_selector(key: str) -> bool:
    """Whether an `init:` key selects layers by path (anything not a layer kind)."""
    return key not in PRIMITIVES


def _path_rules(raw: dict, source: SourceMap, tree: Node, params: dict) -> tuple[PathInit, ...]:
    """The `init:` rules keyed by a module path (or glob), each matched against the layers
    with weights; a selector matching none of them is an error at the selector. A rule with
    `if: false` (a layer it selects switched off by the same parameter) is left out."""
    selectors = [key for key in raw if is_selector(key)]
    if not selectors:  # the common case: no walk over the tree
        return ()
    layers = [n for n in tree.walk() if n.is_primitive and n.primitive.has_weights and n.path]
    out = []
    for key in selectors:
        tensors = raw[key]
        path = ("init", key)
        if isinstance(tensors, dict) and "if" in tensors:
            tensors = dict(tensors)
            if not _condition(tensors.pop("if"), source, path + ("if",), params):
                continue
        pattern = path_glob(key)
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
    init_paths = _path_rules(header.init, source, tree, dict(env))  # before include_top drops any
    outputs, taps, dropped = _outputs(header, tree, source)
    # after the outputs are settled (what the model returns decides which modules it has)
    frozen = (
        freeze.resolve(tree, header.freeze, lambda i, message: source.error(message, ("freeze", i)))
        if header.freeze
        else ()  # no walk over the tree for nothing to freeze
    )
    return Spec(
        header.name, source.file, shape, tree, init, dict(header.params), header.description,
        doc.leading_comments, templates, doc, doc.variants, doc.variant, outputs,
        lets=lets, init_paths=init_paths, frozen=frozen,
        taps=taps, dropped=dropped,
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


def _outputs(header: SpecHeader, tree: Node, source: SourceMap) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """What the model returns: (outputs, taps, the module paths `include_top: false` dropped).

    `outputs:` entries naming layers (a top-level layer, or a path into sequences: `layer3.5`)
    are feature taps (the model then returns a dict); the others are heads' outputs (those an
    `if` switched off left out) and, with heads but no taps, the main output's name first.
    Without `outputs:`, `out` and the heads in body order. `include_top: false` drops from
    `tree` the layers after the last tap (top-level ones, heads placed after it too, and the
    rest of each sequence holding it)."""
    declared = _declared_heads(header)
    layers = {n.name: n for n in tree.registered() if n.head is None}
    dropped: tuple[str, ...] = ()
    lineages: dict[str, list[Node]] = {}  # tap -> the nodes from the model down to it
    for i, name in enumerate(header.outputs):
        lineage = None if name in declared else _lineage(tree, name)
        if lineage is not None:
            problem = _untappable(lineage)
            if problem:
                raise source.error(f"outputs names {name!r}: {problem}", ("outputs", i))
            lineages[name] = lineage
    taps = tuple(lineages)
    if taps:
        for i, name in enumerate(header.outputs):
            if name not in lineages and name not in declared:
                raise _no_output(source, i, name, layers, declared)
        if not header.include_top:
            order = {id(n): k for k, n in enumerate(tree.walk())}
            dropped = _drop_after(lineages[max(taps, key=lambda t: order[id(lineages[t][-1])])])
        for name, lineage in lineages.items():
            lineage[-1].tap = True
            following = _following(lineage)
            if following is not None:  # it must not overwrite the tensor the model returns
                shares_input(Scope({}, source, {}), following, f"the model's output {name!r} (a feature tap)")
    elif not header.include_top:
        raise source.error(
            "include_top: false keeps the layers up to the last feature tap, and outputs: names "
            "no layer to tap (outputs: [layer2, layer3, layer4])",
            ("include_top",),
        )
    heads = [n for n in tree.children if n.head is not None]
    names = [n.head.output for n in heads]
    for i, node in enumerate(heads):
        if node.head.output in names[:i]:
            raise SpecError(f"two heads give the output {node.head.output!r}", node.location, node.field_path)
    if not header.outputs:
        if "out" in names:
            raise SpecError("a head's output is named 'out', the main output's default name: name it in outputs:", source.locate(("body",)))
        return ("out", *names), (), ()
    if taps:
        main, rest = None, list(header.outputs)
    else:
        main, *rest = header.outputs
        if main in names:
            raise source.error(f"outputs starts with the main output's name, not the head output {main!r}", ("outputs", 0))
        if not declared:  # no heads: the entry can only be a tap, and names no layer
            raise _no_output(source, 0, main, layers, declared)
        if check_name(main):
            raise source.error(f"{main!r}: the main output's name is a Python identifier (a field of the output tuple)", ("outputs", 0))
        for i, name in enumerate(rest, 1):
            if name not in declared:
                raise _no_output(source, i, name, layers, declared)
    for name in names:
        if name not in rest:
            node = heads[names.index(name)]
            raise SpecError(f"head output {name!r} is missing from outputs: ({', '.join(header.outputs)})", node.location, node.field_path)
    kept = [n for n in header.outputs if n in names or n in taps]
    return ((main, *kept) if main is not None else tuple(kept)), taps, dropped


def _declared_heads(header: SpecHeader) -> set[str]:
    """Every head output the body writes, those an `if` switched off too."""
    body = header.body if isinstance(header.body, dict) else {}
    return {
        (v["head"].get("output") or key) if isinstance(v.get("head"), dict) else key
        for key, v in body.items()
        if isinstance(v, dict) and "head" in v
    }


def _lineage(node: Node, path: str) -> list[Node] | None:
    """`node` and its descendants down to the module at `path` (inline groups included)."""
    for child in node.children:
        if not child.inline and child.path == path:
            return [node, child]
        if child.inline or path.startswith(child.path + "."):
            found = _lineage(child, path)
            if found is not None:
                return [node, *found]
    return None


def _untappable(lineage: list[Node]) -> str | None:
    """Why the last node of `lineage` cannot be a feature tap, or None: a tap is a layer the
    model's main chain runs, inside sequences only (where its output is what the next reads)."""
    if lineage[1].head is not None:
        return f"{lineage[1].path!r} is a head: outputs names it by its output, {lineage[1].head.output!r}"
    for node in lineage[1:-1]:
        if node.is_primitive or not node.combinator.inlinable:
            return (
                f"it is inside {node.path!r} ({node.spec_kind}), whose layers do not simply run one "
                f"after another: a feature tap is a layer of a sequence (seq, stage); tap {node.path!r}"
            )
    return None


def _following(lineage: list[Node]) -> Node | None:
    """The layer that reads the output of the last node of `lineage` next, or None (the last)."""
    for parent, child in zip(reversed(lineage[:-1]), reversed(lineage[1:])):
        main = [c for c in parent.children if c.head is None]
        at = next(i for i, c in enumerate(main) if c is child)
        if at + 1 < len(main):
            return main[at + 1]
    return None


def _no_output(source: SourceMap, i: int, name: str, layers: dict[str, Node], declared: set[str]) -> SpecError:
    """The error for an `outputs:` entry that names no layer and no head's output."""
    known = [*layers, *sorted(declared)]
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(layers) if len(layers) <= 12 else ", ".join([*list(layers)[:12], "..."])
    heads = f"; heads' outputs: {', '.join(sorted(declared))}" if declared else ""
    what = "no head gives that output and no layer has that path (a feature tap)" if declared else "no layer has that path (a feature tap names one)"
    return source.error(f"outputs names {name!r}: {what}{hint} (top-level layers: {listing}{heads})", ("outputs", i))


def _drop_after(lineage: list[Node]) -> tuple[str, ...]:
    """Remove what runs after the last node of `lineage`: the later layers (and heads) of each
    node holding it, up to the model; update their totals and output shapes (`include_top:
    false`). Returns the module paths removed."""
    dropped: list[str] = []
    for parent, child in zip(lineage, lineage[1:]):
        at = next(i for i, c in enumerate(parent.children) if c is child) + 1
        dropped += [n.path for n in splice(parent.children[at:])]
        parent.children = parent.children[:at]
    for node in reversed(lineage[:-1]):
        node.out_shape = [c for c in node.children if c.head is None][-1].out_shape
        infer.total(node)
    return tuple(sorted(dropped))


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

"""Expand a validated spec into the concrete module tree, inferring shapes on the way.

Block templates are instantiated, stages unrolled, `${...}` values evaluated and every
module name fixed. Shapes are inferred as the tree is built because later choices depend
on them (a residual's automatic projection, a template's `in_channels`). This module holds
the generic machinery (scopes, values, primitives, children, block templates); each
combinator's own expansion lives with its definition in archc.combinators.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import BaseModel, ValidationError

from archc import gcpause
from archc.combinators import COMBINATORS, shares_input
from archc.errors import Location, Note, SpecError, format_path
from archc.ir import Head as HeadUse
from archc.ir import Node, TemplateUse, steps
from archc.primitives import PRIMITIVES, Shape, ShapeError
from archc.spec import expr
from archc.spec.loader import SourceMap
from archc.spec.schema import NAME_RE, Head, Template, check_module_name

_FIELD = re.compile(r"\{((?!\d)\w+)\}")  # a {name} field of a names pattern
_WORD = re.compile(r"(?!\d)\w+")  # identifiers (and a few harmless extras such as e5 in 1e5)
MAX_NODES = 100_000  # >100x any shipped model (DenseNet-201: ~700); refused in about a second
MAX_NESTING = 100  # combinators and blocks inside each other (real models: under 10)
META_KEYS = ("if", "inline", "head")
POSITION = ("block_id", "total_blocks")  # a stage block's place in the network (Expander.position)


@dataclass(frozen=True)
class BlockDef:
    """A block template and where it was written."""

    name: str
    template: Template
    source: SourceMap
    path: tuple
    builtin: bool


@dataclass(frozen=True, eq=False)
class Origin:
    """Where the user wrote a value a variable holds (a model param, a block argument), so an
    error the value causes far away can point back at it. Resolved only when one is reported."""

    name: str  # the variable as the user wrote it
    source: SourceMap
    path: tuple

    @property
    def location(self) -> Location | None:
        return self.source.locate(self.path)


@dataclass(frozen=True)
class Scope:
    """What a node being expanded can see: variables, blocks, and where errors should point."""

    env: dict[str, Any]
    source: SourceMap
    blocks: dict[str, BlockDef]
    anchor: tuple[Location | None, str] | None = None  # user-file spot for errors in builtins
    trail: tuple[str, ...] = ()  # block templates being expanded, outermost first
    origins: Mapping[str, tuple[Origin, ...]] = field(default_factory=dict)  # variable -> the user's values it holds
    uses: tuple[Note, ...] = ()  # where the user's blocks being expanded are used, innermost first

    def error(self, message: str, path: tuple, *, key: bool = False) -> SpecError:
        if self.trail:
            message += f" (in block '{self.trail[-1]}')"
        if self.anchor is not None:
            location, field = self.anchor
            error = SpecError(message, location, field)
        else:
            error = self.source.error(message, path, key=key)
        return with_notes(error, self.uses)

    def blame(self, message: str, path: tuple, names: Iterable[str]) -> SpecError:
        """An error the values of `names` caused: at the value the user wrote, with where it
        is used as a note, when they all came from one place; otherwise at the use, with a
        note at each value."""
        error = self.error(message, path)
        origins = self.origins_of(names)
        if not origins:
            return error
        used = Note(f"{origins[0].name} is used here (at {error.field})", error.location)
        if len(origins) > 1:
            written = [Note(f"{o.name} is written here (at {format_path(o.path)})", o.location) for o in origins]
            return with_notes(error, [*written, *error.notes], replace=True)
        (origin,) = origins
        error.location, error.field = origin.location, format_path(origin.path)
        return with_notes(error, [used, *error.notes], replace=True)

    def origins_of(self, names: Iterable[str]) -> list[Origin]:
        """The user-written values the variables `names` hold, in file order, each once."""
        found = {(o.name, o.path, id(o.source)): o for n in names if n in self.env for o in self.origins.get(n, ())}
        return sorted(found.values(), key=lambda o: _order(o.location))

    def here(self, path: tuple) -> tuple[Location | None, str]:
        if self.anchor is not None:
            return self.anchor
        return self.source.locate(path), format_path(path)


def with_notes(error: SpecError, notes: Iterable[Note], *, replace: bool = False) -> SpecError:
    """Add notes to an error, leaving out those on the error's own line: they add nothing."""
    line = error.location and (error.location.file, error.location.line)
    kept = [n for n in notes if n.location is None or (n.location.file, n.location.line) != line]
    error.notes = kept if replace else [*error.notes, *kept]
    return error


def _order(location: Location | None) -> tuple:
    return (location.file, location.line, location.col) if location else ("", 0, 0)


def expression_error(scope: Scope, exc: expr.ExprError, message: str, path: tuple, source: str) -> SpecError:
    """A `${}` that failed: blamed on the user's values it read when they were the problem."""
    if isinstance(exc, expr.ExprValueError):
        return scope.blame(message, path, exc.names if exc.names is not None else expr.names(source))
    return scope.error(message, path)


def _raw_at(raw: Any, keys: tuple) -> Any:
    """The part of an unresolved value that a resolved value's `keys` lead to, or None."""
    for key in keys:
        if isinstance(raw, dict) and key in raw:
            raw = raw[key]
        elif isinstance(raw, list) and isinstance(key, int) and 0 <= key < len(raw):
            raw = raw[key]
        else:
            return None
    return raw


def pydantic_error(scope: Scope, exc: ValidationError, path: tuple, what: str, raw: Any = None) -> SpecError:
    """Turn the first pydantic error into a SpecError at the offending YAML node (at the
    user's value when an expression in `raw`, the unresolved data, carried it there)."""
    err = exc.errors()[0]
    # pydantic adds union-member tags ('constrained-int', 'tuple[...]') to locations; drop them
    loc = path + tuple(p for p in err["loc"] if isinstance(p, int) or NAME_RE.match(p))
    if err["type"] == "extra_forbidden":
        return scope.error(f"unknown field {err['loc'][-1]!r} in {what}", loc, key=True)
    if err["type"] == "missing":
        return scope.error(f"{what} needs field {err['loc'][-1]!r}", path)
    got = err.get("input")
    shown = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
    message = err["msg"]
    field = next((p for p in reversed(loc) if isinstance(p, str)), None)
    if message.startswith("Input ") and field and len(loc) > len(path):
        message = f"{field} {message[6:]}"
    elif message.startswith("Value error, "):
        message = message[len("Value error, "):]
    source = _raw_at(raw, loc[len(path):])
    if expr.is_expression(source):
        return scope.blame(f"{what}: {message}{shown}", loc, expr.names(source[2:-1]))
    return scope.error(f"{what}: {message}{shown}", loc)


class Expander:
    reuse_repeats = True  # copy identical repeated stage blocks instead of re-expanding them

    def __init__(self, defaults: dict[str, dict[str, Any]] | None = None, total_blocks: int | None = None) -> None:
        self.defaults = defaults or {}  # per layer kind, already checked (archc.spec.defaults.Defaults)
        # Stage blocks across the network (the `block_id` of the next one), and their total
        # (`total_blocks`): known from a first expansion; None in that first one (see expand()).
        self.stage_blocks = 0
        self.total_blocks = total_blocks
        self.position_reads = 0  # expressions evaluated that read block_id or total_blocks
        self.provisional_copies = 0  # first pass: blocks that read their position, copied (Stage.expand)
        self.count = 0
        self.heads_at: tuple | None = None  # the path of the model's body: where heads may be
        self.depth = 0  # layers being expanded, outermost first
        self._params_cache: dict[tuple, BaseModel] = {}
        self._reads: dict[str, tuple[str, ...]] = {}  # expression -> the names it reads
        self._values: dict[tuple, Any] = {}  # (expression, values it reads) -> result

    # ---- values -------------------------------------------------------------------------

    def resolve(self, value: Any, path: tuple, scope: Scope) -> Any:
        """Evaluate every `${...}` in a value, reporting errors at the expression's node."""
        if expr.is_expression(value):
            try:
                return self.evaluate(value[2:-1], scope.env)
            except expr.ExprError as exc:
                raise expression_error(scope, exc, f"in {value}: {exc}", path, value[2:-1]) from None
        if isinstance(value, dict):
            return {k: self.resolve(v, path + (k,), scope) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v, path + (i,), scope) for i, v in enumerate(value)]
        return value

    def evaluate(self, source: str, env: dict[str, Any]) -> Any:
        """`expr.evaluate`, memoised on the expression and the values of the names it can read.

        Evaluation is a pure function of those, so an expression a block uses again with the
        same values is not parsed again (parsing is most of the cost). The names are every
        identifier-like word of the source, a superset of the variables it reads; errors are
        not memoised.
        """
        key = (source, *[(w, type(env[w]), repr(env[w])) for w in self.words(source) if w in env])
        if key in self._values:
            return self._values[key]
        value = self._values[key] = expr.evaluate(source, env)
        return value

    def pattern(self, pattern: str, path: tuple, scope: Scope, i: int | None) -> str:
        """A `names` pattern with its `{name}` fields filled: `{i}` with the child's number
        (left as `{i}` when `i` is None, for a stage to fill), any other with the scope's
        whole-number variable of that name (`"block{s}-{i}"` inside a `for` over `s`)."""

        def fill(match: re.Match) -> str:
            key = match.group(1)
            if key == "i":
                return "{i}" if i is None else str(i)
            value = scope.env[key] if key in scope.env else None  # [] counts a position read
            if isinstance(value, bool) or not isinstance(value, int):
                usable = sorted(k for k, v in scope.env.items() if isinstance(v, int) and not isinstance(v, bool))
                known = ", ".join(["i", *usable])
                got = "unknown" if key not in scope.env else f"{value!r:.40}, not a whole number"
                raise scope.error(f"names pattern {pattern!r}: {{{key}}} is {got} (usable: {known})", path)
            return str(value)

        name = _FIELD.sub(fill, pattern)
        if i is not None:
            problem = check_module_name(name)
            if problem:
                raise scope.error(f"names pattern {pattern!r} gives {problem[0].lower()}{problem[1:]}", path)
        return name

    def position(self) -> dict[str, int]:
        """The next stage block's place in the network: `block_id` counts every stage's blocks
        in network order from 0, `total_blocks` is how many there are (EfficientNet's stochastic
        depth grows with it: `p * block_id / total_blocks`)."""
        block_id = self.stage_blocks
        self.stage_blocks += 1
        # the first expansion's provisional total: small (a depth that reads it stays small) and
        # above block_id + 1, so ConvNeXt's `block_id / (total_blocks - 1)` is defined
        total = self.total_blocks if self.total_blocks is not None else block_id + 2
        return {"block_id": block_id, "total_blocks": total}

    def with_position(self, env: dict[str, Any], position: dict[str, int]) -> PositionEnv:
        """`env` plus a stage block's position, noting when an expression reads it."""
        return PositionEnv({**env, **position}, self)

    def validate(self, model: type[BaseModel], data: Any, path: tuple, scope: Scope, what: str, raw: Any = None):
        """`data` checked by `model`; `raw` is `data` before `${}` were resolved, to blame."""
        key = (model, repr(data))
        cached = self._params_cache.get(key)
        if cached is not None:
            return cached
        try:
            result = model.model_validate(data)
        except ValidationError as exc:
            raise pydantic_error(scope, exc, path, what, raw) from None
        self._params_cache[key] = result
        return result

    # ---- nodes --------------------------------------------------------------------------

    def node(self, raw: Any, path: tuple, name: str, scope: Scope, shape: Shape) -> Node | None:
        """Expand one spec node; None when its `if` is false."""
        if self.depth >= MAX_NESTING:  # every pass over the tree recurses this deep
            raise scope.error(f"layers are nested more than {MAX_NESTING} levels deep", path)
        self.depth += 1
        try:
            return self._node(raw, path, name, scope, shape)
        finally:
            self.depth -= 1

    def _node(self, raw: Any, path: tuple, name: str, scope: Scope, shape: Shape) -> Node | None:
        self.count += 1
        if self.count > MAX_NODES:
            raise scope.error(f"network has more than {MAX_NODES:,} layers", path)
        kind, params, params_path, meta = self.split(raw, path, scope)
        if "head" in meta:  # children() takes it off the model's own layers
            raise scope.error("only the model's top-level layers can be heads", path + ("head",), key=True)
        if "if" in meta:
            condition = self.resolve(meta["if"], path + ("if",), scope)
            if not isinstance(condition, bool):
                message = f"'if' must be true or false, got {condition!r}"
                raise scope.blame(message, path + ("if",), self.reads(meta["if"]))
            if not condition:
                return None
        inline = self.resolve(meta.get("inline", False), path + ("inline",), scope)
        if not isinstance(inline, bool):
            message = f"'inline' must be true or false, got {inline!r}"
            raise scope.blame(message, path + ("inline",), self.reads(meta["inline"]))

        if kind in PRIMITIVES:
            node = self.primitive(kind, params, params_path, name, scope, shape)
        elif kind in COMBINATORS:
            node = COMBINATORS[kind].expand(self, params, params_path, name, scope, shape)
        elif kind in scope.blocks:
            node = self.block(scope.blocks[kind], params, params_path, name, scope, shape)
        else:
            known = [*PRIMITIVES, *COMBINATORS, *scope.blocks]
            close = difflib.get_close_matches(kind, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            if isinstance(raw, dict) and len(raw) > 1 or isinstance(params, (dict, str)) and not close:
                hint += " (to name layers, put them under seq: {seq: {name: layer, ...}})"
            raise scope.error(f"unknown layer or block type {kind!r}{hint}", params_path, key=True)
        if inline:
            if node.is_primitive or not node.combinator.inlinable:
                raise scope.error("only a sequence (seq, stage or a seq block) or a parallel can be inline", path)
            node.inline = True
        node.location, node.field_path = scope.here(path)
        node.slot = path
        if isinstance(meta.get("if"), str):
            node.condition = meta["if"]
        return node

    def words(self, source: str) -> tuple[str, ...]:
        """Every identifier-like word of an expression: a superset of the names it reads."""
        words = self._reads.get(source)
        if words is None:
            words = self._reads[source] = tuple(dict.fromkeys(_WORD.findall(source)))
        return words

    def reads(self, raw: Any) -> tuple[str, ...]:
        """The names a value may read: those of its `${}`, or none for a plain value."""
        return self.words(raw[2:-1]) if expr.is_expression(raw) else ()

    def split(self, raw: Any, path: tuple, scope: Scope) -> tuple[str, Any, tuple, dict]:
        if isinstance(raw, list):
            return "seq", raw, path, {}
        if isinstance(raw, str) and raw:
            return self.kind(raw, path, scope, key=False), None, path, {}
        if isinstance(raw, dict):
            meta = {k: v for k, v in raw.items() if k in META_KEYS}
            kinds = [k for k in raw if k not in META_KEYS]
            if len(kinds) == 1:
                kind = self.kind(kinds[0], path + (kinds[0],), scope, key=True)
                return kind, raw[kinds[0]], path + (kinds[0],), meta
            if not kinds:
                raise scope.error("layer has no type (expected e.g. {conv: {...}})", path)
            raise scope.error(
                f"a layer has one type, found {len(kinds)}: {', '.join(kinds)} "
                "(to name several layers, put them under seq)",
                path + (kinds[1],),
                key=True,
            )
        raise scope.error(
            f"expected a layer, like `relu` or `{{conv: {{...}}}}`, got {raw!r}", path
        )

    def kind(self, written: str, path: tuple, scope: Scope, *, key: bool) -> str:
        """A layer's kind as written, or, for `${...}`, the layer kind the expression names
        (MobileNetV3's blocks choose `relu` or `hardswish`), refused at the expression when
        it names none."""
        if not expr.is_expression(written):
            return written
        kind = self.resolve(written, path, scope)
        if isinstance(kind, str) and (kind in PRIMITIVES or kind in COMBINATORS or kind in scope.blocks):
            return kind
        known = [*PRIMITIVES, *scope.blocks]
        close = difflib.get_close_matches(kind, known, n=1) if isinstance(kind, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        message = f"{written} gives {kind!r}, which is not a layer or block type{hint}"
        raise scope.blame(message, path, self.reads(written))

    def primitive(self, kind, raw, path, name, scope, shape) -> Node:
        prim = PRIMITIVES[kind]
        value = self.resolve(raw, path, scope)
        if value is None:
            value = {}
        elif not isinstance(value, dict):
            if prim.shorthand is None:
                raise scope.error(f"{kind} takes a mapping of settings, got {value!r}", path)
            value = {prim.shorthand: value}
        used = {k: v for k, v in self.defaults.get(kind, {}).items() if k not in value}
        unresolved = raw if isinstance(raw, dict) or prim.shorthand is None else {prim.shorthand: raw}
        try:
            params = self.validate(prim.Params, {**used, **value}, path, scope, f"{kind} {name!r}", unresolved)
            try:
                result = prim.infer(params, shape)
            except ShapeError as exc:
                raise scope.error(f"{name}: {exc}", path) from None
        except SpecError as exc:
            if used and valid(prim, value, shape):  # the defaults' doing: say so, at them
                location, field = scope.here(path)
                block = f" of block {scope.trail[-1]!r}" if scope.trail else ""
                layer = Note(f"layer {name!r}{block} takes them here (at {field})", location)
                raise with_notes(self.defaults.error(kind, used, exc, layer), scope.uses) from None
            raise
        node = Node(
            name, kind, params, in_shape=shape, out_shape=result.out_shape,
            param_count=result.params, macs=result.macs,
        )  # fmt: skip
        if used:
            node.defaulted = {k: self.defaults.where(kind, k) for k in used}
        return node

    def children(
        self, raw, path, scope, shape, *, chain: bool, role: str = "", parameters: bool = False
    ) -> list[Node]:
        """Expand a mapping (named) or list (0, 1, ...) of nodes, in order; `parameters`: the
        module holding them may hold learnable tensors (a `scale`) and multiply by them."""
        if isinstance(raw, dict):
            items = list(raw.items())
            for key, _ in items:
                problem = check_module_name(key)
                if problem:
                    raise scope.error(problem, path + (key,), key=True)
            entries = [(key, path + (key,), value) for key, value in items]
        elif isinstance(raw, list):
            entries = [(str(i), path + (i,), value) for i, value in enumerate(raw)]
        else:
            raise scope.error(f"expected a mapping or list of layers, got {raw!r}", path)
        if not entries:
            raise scope.error("needs at least one layer", path)
        out: list[Node] = []
        for name, child_path, value in entries:
            if path == self.heads_at and isinstance(value, dict) and "head" in value:
                child = self.head(value, child_path, name, scope, out)
            else:
                child = self.node(value, child_path, name, scope, shape)
            if child is None:
                continue
            if child.is_primitive and child.primitive.parameter and not parameters:
                raise scope.error(
                    f"{name}: a {child.kind} is a tensor of the module holding it, which only a "
                    "residual's body can hold (e.g. ConvNeXt's layer_scale)",
                    child_path,
                )
            child.role = role
            out.append(child)
            if chain and child.head is None:
                shape = child.out_shape
        if isinstance(raw, list):
            index = 0  # list children are numbered like nn.Sequential, inline groups spliced in
            for child in out:
                for leaf in child.registered() if child.inline else [child]:
                    leaf.name = str(index)
                    index += 1
        return out

    def head(self, raw: dict, path: tuple, name: str, scope: Scope, before: list[Node]) -> Node | None:
        """A top-level layer with `head: {from, output}`: fed the output of the earlier layer
        `from` names, it is an extra output of the model (None when its `if` is false)."""
        settings = self.validate(Head, self.resolve(raw["head"], path + ("head",), scope), path + ("head",), scope, f"head {name!r}")
        tap = next((n for n in before if n.name == settings.source and n.head is None and not n.inline), None)
        if tap is None:
            known = ", ".join(n.name for n in before if n.head is None and not n.inline) or "none"
            raise scope.error(
                f"head {name!r} reads {settings.source!r}, which is not an earlier top-level layer (earlier: {known})",
                path + ("head", "from"),
            )
        node = self.node({k: v for k, v in raw.items() if k != "head"}, path, name, scope, tap.out_shape)
        if node is None:
            return None
        shares_input(scope, node, f"the layers after {tap.name!r}")
        node.head = HeadUse(settings.source, settings.output or name)
        return node

    def block(self, block: BlockDef, raw, path, name, scope, shape, position: dict[str, int] | None = None) -> Node:
        """An instance of a block template; `position` (a stage's blocks): its `block_id` and
        `total_blocks`, variables of the template besides its parameters and `in_channels`."""
        if block.name in scope.trail:
            raise scope.error(f"block {block.name!r} uses itself", path)
        args = self.resolve(raw, path, scope) if raw is not None else {}
        if not isinstance(args, dict):
            raise scope.error(f"block {block.name!r} takes a mapping of arguments, got {args!r}", path)
        declared = block.template.params
        for key in args:
            if key not in declared:
                known = ", ".join(declared) or "none"
                raise scope.error(
                    f"block {block.name!r} has no parameter {key!r} (parameters: {known})",
                    path + (key,),
                    key=True,
                )
        missing = [k for k, v in declared.items() if v is None and k not in args]
        if missing:
            raise scope.error(f"block {block.name!r} needs parameter {missing[0]!r}", path)
        values = {**declared, **args}
        env = {**values, "in_channels": shape[0]}
        if position is not None:
            env = self.with_position(env, position)
        origins = self.argument_origins(block, raw, path, scope)
        inner = Scope(
            env=env,
            source=block.source,
            blocks=scope.blocks,
            anchor=(scope.anchor or scope.here(path)) if block.builtin else scope.anchor,
            trail=scope.trail + (block.name,),
            origins=origins,
            uses=scope.uses if block.builtin else (self.use(block, path, scope), *scope.uses),
        )
        for key, value in block.template.let.items():
            env[key] = self.let(block, key, value, inner)
            origins[key] = tuple(o for n in self.reads(value) for o in origins.get(n, ()))
        for requirement in block.template.requires:
            try:
                ok = self.evaluate(requirement, env)
            except expr.ExprError as exc:
                message = f"block {block.name!r}: in requirement {requirement}: {exc}"
                raise expression_error(replace(scope, env=env, origins=origins), exc, message, path, requirement) from None
            if not ok:
                used = ", ".join(f"{k}={env[k]!r}" for k in sorted(expr.names(requirement)) if k in env)
                message = f"block {block.name!r} requires {requirement} (got {used})"
                raise replace(scope, env=env, origins=origins).blame(message, path, expr.culprits(requirement, env))
        node = self.node(block.template.body, block.path + ("body",), name, inner, shape)
        if node is None:
            raise scope.error(f"block {block.name!r} expands to nothing", path)
        node.template = TemplateUse(block.name, values, dict(position or {}))
        return node

    def argument_origins(self, block: BlockDef, raw: Any, path: tuple, scope: Scope) -> dict[str, tuple[Origin, ...]]:
        """Where the user wrote each of a block's parameters: the argument (or, through a
        `${}`, the values it reads), or the default in a template of the user's own."""
        origins: dict[str, tuple[Origin, ...]] = {}
        if not block.builtin:
            for key in block.template.params:
                origins[key] = (Origin(key, block.source, block.path + ("params", key)),)
        for key, value in (raw if isinstance(raw, dict) else {}).items():
            if expr.is_expression(value):
                origins[key] = tuple(o for n in self.reads(value) for o in scope.origins.get(n, ()))
            elif scope.anchor is None:  # written in the user's file, not in the library
                origins[key] = (Origin(key, scope.source, path + (key,)),)
            else:
                origins[key] = ()
        return origins

    def use(self, block: BlockDef, path: tuple, scope: Scope) -> Note:
        """A note at the use of one of the user's blocks, for errors inside its template."""
        location, field = scope.here(path)
        return Note(f"block {block.name!r} is used here (at {field})", location)

    def let(self, block: BlockDef, key: str, value: str, inner: Scope) -> Any:
        """The value of one of a block's `let`s, an error naming the block and the let."""
        if not expr.is_expression(value):
            return value
        try:
            return self.evaluate(value[2:-1], inner.env)
        except expr.ExprError as exc:
            message = f"let {key} = {value}: {exc}"
            raise expression_error(inner, exc, message, block.path + ("let", key), value[2:-1]) from None


class PositionEnv(dict):
    """The variables of a stage block, its position among them: reading `block_id` or
    `total_blocks` is counted (`Expander.position_reads`), so the network is expanded again once
    their total is known, and the stage does not copy a block whose values depend on it."""

    def __init__(self, values: dict[str, Any], expander: Expander):
        super().__init__(values)
        self.expander = expander

    def __getitem__(self, key: str) -> Any:
        if key in POSITION:
            self.expander.position_reads += 1
        return super().__getitem__(key)


def valid(prim, settings: dict, shape: Shape) -> bool:
    """Whether a primitive with these settings takes this input (no error to locate)."""
    try:
        prim.infer(prim.Params.model_validate(settings), shape)
    except (ValidationError, ShapeError):
        return False
    return True


def assign_paths(node: Node, prefix: str = "") -> None:
    """Give every node its module path and check that names in one module are unique."""
    _assign_paths(node.children, prefix)


def _assign_paths(children: list[Node], prefix: str) -> list[Node]:
    """Set the paths of `children` and of everything under them, and return the ones that
    register in this module (inline groups opened: `splice`), each name checked unique.
    (One pass over the tree: it runs on every node, 70,000 at 10,000 blocks.)"""
    registered: list[Node] = []
    dotted = f"{prefix}." if prefix else ""
    for child in children:
        if child.inline:  # its members register in this module
            child.path = prefix
            registered += _assign_paths(child.children, prefix)
            continue
        child.path = path = dotted + child.name
        if child.children:
            _assign_paths(child.children, path)
        registered.append(child)
    if len(registered) > 1 and len({child.name for child in registered}) < len(registered):
        seen: set[str] = set()
        for child in registered:
            if child.name in seen:
                raise SpecError(
                    f"two layers are named {child.name!r} in {prefix or 'the model'}",
                    child.location,
                    child.field_path,
                )
            seen.add(child.name)
    return registered


def refuse_branching(nodes: list[Node], where: str) -> None:
    """An inline parallel needs a module around it that runs it (a block, a branch, a
    residual's body); `where` runs its layers one by one."""
    for node in steps(nodes):
        if node.inline:
            raise SpecError(
                f"an inline parallel registers its branches' layers on the block around it, but "
                f"{where} runs its layers one by one: put it in a block or drop inline: true",
                node.location,
                node.field_path,
            )


def _pass(body: Any, path: tuple, scope: Scope, shape: Shape, defaults: dict | None, total: int | None, copy_all: bool = True):
    expander = Expander(defaults, total_blocks=total)
    expander.heads_at = path
    if not copy_all:
        expander.reuse_repeats = False
    return expander, COMBINATORS["seq"].expand(expander, body, path, "", scope, shape)


def expand(body: Any, path: tuple, scope: Scope, shape: Shape, defaults: dict | None = None) -> Node:
    with gcpause.paused(keep=True):  # a tree of many live objects and no cycles (see archc.gcpause)
        expander, root = _pass(body, path, scope, shape, defaults, None)
        if expander.position_reads:
            # A block read its position: expand again, now knowing how many stage blocks the
            # network has (the first pass gave each block a provisional total, `block_id + 2`,
            # and counted them, copying a stage's repeated blocks even when they read it).
            first, total = expander, expander.stage_blocks
            try:
                expander, root = _pass(body, path, scope, shape, defaults, total)
            except SpecError:
                if not first.provisional_copies:
                    raise
                expander = None
            if first.provisional_copies and (expander is None or expander.stage_blocks != total):
                # a copied block's own stages depended on its position, so the count was off
                # (and the values made from it may be out of range): count with every block expanded
                total = _pass(body, path, scope, shape, defaults, None, copy_all=False)[0].stage_blocks
                expander, root = _pass(body, path, scope, shape, defaults, total)
            if expander.stage_blocks != total:  # a stage's depth read total_blocks
                raise scope.error("the number of stage blocks depends on total_blocks", path)
        root.location, root.field_path = scope.here(path)
        refuse_branching(root.children, "the model's top level")
        assign_paths(root)
        return root

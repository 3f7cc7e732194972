"""A small arithmetic language for `${...}` values in specs — parsed, never `eval`ed.

Only numbers, booleans, names bound by the caller, arithmetic, comparisons, `and`/`or`/
`not`, `a if c else b`, lists (`[a, b]`, indexing, `+`, comprehensions `[f(x) for x in xs if
c]`) and a few pure functions are allowed. Results are bounded so an expression cannot
allocate or loop its way out of the sandbox: numbers up to 10**15, lists up to MAX_LIST
items, and MAX_STEPS list items made or visited per evaluation.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
from collections.abc import Mapping
from typing import Any

MAX_EXPR_CHARS = 500
MAX_MAGNITUDE = 10**15  # far above any real width, depth or size
MAX_EXPR_DEPTH = 50  # nesting of operations; real expressions have a handful
MAX_LIST = 10_000  # items in one list: as many as a stage's blocks (RegNet's ramps have ~30)
MAX_STEPS = 100_000  # list items made or visited by one evaluation (nested comprehensions)

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_SYMBOLS = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%",
    ast.Pow: "**",
}  # fmt: skip
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


def _round(number: Any, ndigits: Any = None) -> Any:
    if ndigits is not None and isinstance(ndigits, int) and abs(ndigits) > 64:
        raise ValueError("ndigits must be between -64 and 64")  # 10**ndigits would hang
    return round(number) if ndigits is None else round(number, ndigits)


def make_divisible(value: Any, divisor: Any = 8, min_value: Any = None) -> int:
    """`value` rounded to the nearest multiple of `divisor` (at least `min_value`, default the
    divisor), never more than 10% below it: the channel rounding of MobileNet and EfficientNet
    (torchvision's `_make_divisible`), so a width multiplier is one expression."""
    for arg in (value, divisor, min_value):
        if isinstance(arg, bool) or arg is not None and not isinstance(arg, (int, float)):
            raise TypeError("takes numbers")
    if not isinstance(divisor, int) or divisor < 1:
        raise ValueError("the divisor is a whole number of at least 1")
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # rounding down took away more than 10%
        rounded += divisor
    return rounded


def _whole(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} is a whole number, not {type(value).__name__} {value!r:.40}")
    return value


def _range(*args: Any) -> list[int]:
    """Python's range as a list, refused past MAX_LIST items before anything is made."""
    if not 1 <= len(args) <= 3:
        raise TypeError(f"takes 1 to 3 arguments (stop; start, stop; start, stop, step), got {len(args)}")
    numbers = [_whole(a, "each argument") for a in args]
    if len(numbers) == 3 and numbers[2] == 0:
        raise ValueError("the step cannot be 0")
    span = range(*numbers)
    if len(span) > MAX_LIST:
        raise ValueError(f"gives {len(span):,} numbers; a list holds at most {MAX_LIST:,}")
    return list(span)


def _list(value: Any, what: str) -> list:
    if not isinstance(value, list):
        raise TypeError(f"{what} is a list, not {type(value).__name__} {value!r:.40}")
    return value


def _len(value: Any) -> int:
    return len(_list(value, "the argument"))


def _sum(values: Any) -> Any:
    for item in _list(values, "the argument"):
        _number(item, "sum")
    return sum(values)


def _zip(*lists: Any) -> list[list]:
    """Lists of the items at the same place in each list, as long as the shortest."""
    return [list(items) for items in zip(*(_list(x, "each argument") for x in lists))]


def _enumerate(values: Any, start: Any = 0) -> list[list]:
    """[index, item] pairs, the index counting from `start`."""
    return [[i, v] for i, v in enumerate(_list(values, "the first argument"), _whole(start, "start"))]


def _log(value: Any, base: Any = None) -> float:
    """The natural logarithm, or the logarithm to `base` (math.log)."""
    return math.log(value) if base is None else math.log(value, base)


FUNCTIONS = {
    "int": int,
    "float": float,
    "round": _round,
    "min": min,
    "max": max,
    "abs": abs,
    "ceil": math.ceil,
    "floor": math.floor,
    "sqrt": math.sqrt,
    "make_divisible": make_divisible,
    "log": _log,
    "exp": math.exp,
    "range": _range,
    "len": _len,
    "sum": _sum,
    "zip": _zip,
    "enumerate": _enumerate,
}


class ExprError(ValueError):
    """An expression that is malformed, uses something not allowed, or fails to evaluate."""


class ExprValueError(ExprError):
    """An expression that fails on the values it was given (a string where a number belongs,
    an index past the end): the values are to blame as much as the expression. `names` are
    those read by the part that failed (`range(depth)` in a longer expression: depth)."""

    names: set[str] | None = None


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("${") and value.endswith("}")


@functools.lru_cache(maxsize=4096)  # specs repeat the same expressions in every block
def parse(source: str) -> ast.Expression:
    """Parse and check an expression (without the `${}`); raise ExprError if not allowed."""
    if len(source) > MAX_EXPR_CHARS:
        raise ExprError(f"expression is longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"invalid expression: {exc.msg}") from None
    depths = [(tree, 0)]
    while depths:  # evaluation recurses once per level, so bound the levels
        node, depth = depths.pop()
        if depth > MAX_EXPR_DEPTH:
            raise ExprError(f"expression is nested more than {MAX_EXPR_DEPTH} levels deep")
        depths.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    for node in ast.walk(tree):
        allowed = (
            ast.Expression, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp,
            ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.IfExp, ast.Call, ast.Subscript,
            ast.List, ast.ListComp, ast.comprehension, ast.Store, ast.Tuple,
            *_BINARY, *_UNARY, *_COMPARE,
        )  # fmt: skip
        if not isinstance(node, allowed):
            raise ExprError(f"'{type(node).__name__}' is not allowed in expressions")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, bool)):
            raise ExprError(f"only numbers and booleans are allowed, not {node.value!r}")
        if isinstance(node, ast.Constant) and abs(node.value) > MAX_MAGNITUDE:
            raise ExprError(f"number {_show(node.value)} is too large (the limit is 10**15)")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise ExprError(f"unknown function; allowed: {', '.join(sorted(FUNCTIONS))}")
            if node.keywords:
                raise ExprError("keyword arguments are not allowed in expressions")
        if isinstance(node, ast.Tuple) and not isinstance(node.ctx, ast.Store):
            raise ExprError("tuples are not allowed in expressions; write a list [a, b]")
        if isinstance(node, ast.comprehension) and not _target_names(node.target):
            raise ExprError("a comprehension's variable is a name or names (for w, g in zip(ws, gs))")
    return tree


def _target_names(target: ast.AST) -> list[str]:
    """The names a comprehension binds (`x`, or `a, b` unpacking a pair); [] if not names."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts):
        return [e.id for e in target.elts]
    return []


def names(source: str) -> set[str]:
    """Variable names an expression reads (functions and comprehension variables excluded)."""
    tree = parse(source)
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    bound = {x for n in ast.walk(tree) if isinstance(n, ast.comprehension) for x in _target_names(n.target)}
    return {
        n.id for n in ast.walk(tree)
        if isinstance(n, ast.Name) and id(n) not in called and n.id not in bound
    }  # fmt: skip


def _show(number: int | float) -> str:
    """A short form of a number that may be too large to print or convert to float."""
    if isinstance(number, int) and number.bit_length() > 1000:  # float() would overflow
        return f"about {'-' if number < 0 else ''}10**{int(number.bit_length() * math.log10(2))}"
    return f"{number:.3g}"


def culprits(source: str, env: Mapping[str, Any]) -> set[str]:
    """The names to blame for a false condition: those of the parts of a top-level
    `a and b and c` that are false (all its names when it is not such a chain)."""
    body = parse(source).body
    if not (isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And)):
        return names(source)
    blamed: set[str] = set()
    for part in body.values:
        try:
            ok = _eval(part, env, _Steps())
        except ExprError:
            ok = False
        if not ok:
            blamed |= {
                n.id for n in ast.walk(part) if isinstance(n, ast.Name) and n.id not in FUNCTIONS
            }
    return blamed or names(source)


def _number(value: Any, operation: str) -> Any:
    if not isinstance(value, (int, float)):  # a list or a string would repeat, not multiply
        raise ExprValueError(f"{operation} needs numbers, not {type(value).__name__} {value!r:.40}")
    return value


def _check(value: Any) -> Any:
    if isinstance(value, complex):
        raise ExprValueError("expression result is not a real number")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            raise ExprValueError("expression result is not a finite number")
        if abs(value) > MAX_MAGNITUDE:
            raise ExprValueError(f"expression result {_show(value)} is out of range")
    return value


class _Steps:
    """The list items an evaluation may still make or visit (MAX_STEPS in all)."""

    def __init__(self) -> None:
        self.left = MAX_STEPS

    def take(self, count: int) -> None:
        self.left -= count
        if self.left < 0:
            raise ExprValueError(f"expression makes or visits more than {MAX_STEPS:,} list items")


class _Local(Mapping):
    """The variables of a comprehension's body: its own over the enclosing ones (read through,
    never copied, so a stage block's position is still counted when read)."""

    def __init__(self, own: dict[str, Any], outer: Mapping[str, Any]):
        self.own, self.outer = own, outer

    def __getitem__(self, key: str) -> Any:
        return self.own[key] if key in self.own else self.outer[key]

    def __contains__(self, key: object) -> bool:
        return key in self.own or key in self.outer

    def __iter__(self):
        return iter({**dict.fromkeys(self.outer), **self.own})

    def __len__(self) -> int:
        return len(set(self.outer) | set(self.own))


def _bind(target: ast.AST, item: Any, own: dict[str, Any]) -> None:
    names = _target_names(target)
    if isinstance(target, ast.Name):
        own[names[0]] = item
        return
    if not isinstance(item, list) or len(item) != len(names):
        raise ExprValueError(f"cannot unpack {item!r:.40} into {len(names)} names ({', '.join(names)})")
    own.update(zip(names, item))


def _comprehension(node: ast.ListComp, env: Mapping[str, Any], steps: _Steps) -> list:
    """[element for target in items if condition ...], generators nested left to right."""
    out: list = []
    _generate(node, 0, env, steps, out)
    return out


def _generate(node: ast.ListComp, level: int, scope: Mapping[str, Any], steps: _Steps, out: list) -> None:
    """The items of `node`'s generators from `level` on, appended to `out`. (A function of its
    own, not a closure calling itself: that would be a reference cycle, garbage for the
    cycle collector, made at every evaluation.)"""
    if level == len(node.generators):
        if len(out) >= MAX_LIST:
            raise ExprValueError(f"the comprehension makes more than {MAX_LIST:,} items")
        out.append(_eval(node.elt, scope, steps))
        return
    generator = node.generators[level]
    items = _eval(generator.iter, scope, steps)
    if not isinstance(items, list):
        raise ExprValueError(f"a comprehension goes over a list, not {type(items).__name__} {items!r:.40}")
    for item in items:
        steps.take(1)
        own: dict[str, Any] = {}
        _bind(generator.target, item, own)
        inner = _Local(own, scope)
        if all(_eval(test, inner, steps) for test in generator.ifs):
            _generate(node, level + 1, inner, steps, out)


def _eval(node: ast.AST, env: Mapping[str, Any], steps: _Steps) -> Any:
    try:
        return _eval_node(node, env, steps)
    except ExprValueError as exc:
        if exc.names is None:  # the innermost part that failed: the names it reads are to blame
            called = {id(n.func) for n in ast.walk(node) if isinstance(n, ast.Call)}
            exc.names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and id(n) not in called}
        raise


def _eval_node(node: ast.AST, env: Mapping[str, Any], steps: _Steps) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env, steps)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in env:
            known = ", ".join(sorted(env)) or "none"
            raise ExprError(f"unknown name {node.id!r} (known: {known})")
        return env[node.id]
    if isinstance(node, ast.BinOp):
        symbol = _SYMBOLS[type(node.op)]
        left, right = _eval(node.left, env, steps), _eval(node.right, env, steps)
        if isinstance(node.op, ast.Add) and isinstance(left, list) and isinstance(right, list):
            if len(left) + len(right) > MAX_LIST:
                raise ExprValueError(f"the joined list would have more than {MAX_LIST:,} items")
            steps.take(len(left) + len(right))
            return left + right
        left, right = _number(left, symbol), _number(right, symbol)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ExprValueError("exponent is too large")
        try:
            return _check(_BINARY[type(node.op)](left, right))
        except (ZeroDivisionError, TypeError, OverflowError) as exc:
            raise ExprValueError(str(exc)) from None
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, env, steps)
        if not isinstance(node.op, ast.Not):
            _number(operand, "unary " + ("-" if isinstance(node.op, ast.USub) else "+"))
        return _UNARY[type(node.op)](operand)
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, env, steps) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env, steps)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, env, steps)
            try:
                if not _COMPARE[type(op)](left, right):
                    return False
            except TypeError as exc:
                raise ExprValueError(str(exc)) from None
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body if _eval(node.test, env, steps) else node.orelse, env, steps)
    if isinstance(node, ast.Subscript):
        seq, index = _eval(node.value, env, steps), _eval(node.slice, env, steps)
        if not isinstance(seq, list) or not isinstance(index, int) or isinstance(index, bool):
            raise ExprValueError("only a list can be indexed, and only by an integer")
        if not -len(seq) <= index < len(seq):
            raise ExprValueError(f"index {index} is out of range for a list of {len(seq)}")
        return seq[index]
    if isinstance(node, ast.List):
        steps.take(len(node.elts))
        return [_eval(e, env, steps) for e in node.elts]
    if isinstance(node, ast.ListComp):
        return _comprehension(node, env, steps)
    if isinstance(node, ast.Call):
        args = [_eval(a, env, steps) for a in node.args]
        try:
            result = _check(FUNCTIONS[node.func.id](*args))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExprValueError(f"{node.func.id}(): {exc}") from None
        if isinstance(result, list):
            steps.take(len(result))
        return result
    raise ExprError(f"'{type(node).__name__}' is not allowed")  # pragma: no cover


def evaluate(source: str, env: Mapping[str, Any]) -> Any:
    """Evaluate an expression (without the `${}`) with the given variables."""
    return _check(_eval(parse(source), env, _Steps()))

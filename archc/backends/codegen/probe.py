"""Probe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archc.backends.codegen.lower import field_value, slots
from archc.backends.codegen.names import MISSING, python_name, same
from archc.compiler import Spec, compile_document
from archc.errors import ArchcError
from archc.spec.loader import Document, load_file


@dataclass
class Probe:
    """Which model-level parameters feed layer arguments directly, and where."""

    tags: dict[str, dict]
    exposed: list[str]
    fixed: list[str]
    comments: list[str]


def probe(spec: Spec) -> Probe:
    """Recompile the spec with other values of each model parameter and see what changes.

    A parameter that only ever appears as itself in layer arguments (num_classes, dropout) can
    be a keyword argument of the generated model; one that sizes layers through arithmetic
    (growth_rate, groups) is fixed in the file.
    """
    result = Probe({}, [], [n for n in spec.params], [])
    try:
        doc = load_file(spec.file)
        base = slots(compile_document(doc).tree)
    except (ArchcError, OSError, ValueError):
        return result
    result.comments = leading_comments(spec.file)
    if not same_slots(base, slots(spec.tree)):
        return result  # the file changed since it was loaded
    for name, value in spec.params.items():
        if python_name(name) != name:
            continue
        changed: set | None = None
        for new in probe_values(value):
            data = dict(doc.data)
            data["params"] = {**doc.data.get("params", {}), name: new}
            try:
                other = slots(compile_document(Document(data, doc.source)).tree)
            except ArchcError:
                changed = None
                break
            direct = direct_slots(base, other, value, new)
            if direct is None or (changed is not None and direct != changed):
                changed = None
                break
            changed = direct
        if changed:
            result.exposed.append(name)
            result.fixed.remove(name)
            for path, slot in changed:
                result.tags.setdefault(path, {})[slot] = name
    return result


def probe_values(value: Any) -> list:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [2 * value + 1, value - 1 if value >= 2 else value + 2]
    if isinstance(value, float):
        return [v for v in (value * 0.5 + 0.125, value * 0.75) if v != value]
    return []


def same_slots(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        x[:2] == y[:2] and x[2].keys() == y[2].keys() and all(same(x[2][k], y[2][k]) for k in x[2])
        for x, y in ((a[p], b[p]) for p in a)
    )


def direct_slots(base: dict, other: dict, old: Any, new: Any) -> set | None:
    """The arguments that changed from `old` to `new` exactly; None if anything else changed."""
    if base.keys() != other.keys():
        return None
    changed = set()
    for path, (cls, count, arguments, node) in base.items():
        other_cls, other_count, other_arguments, other_node = other[path]
        if (cls, count) != (other_cls, other_count):
            return None
        for key in arguments.keys() | other_arguments.keys():
            a = arguments.get(key, MISSING)
            b = other_arguments.get(key, MISSING)
            a = field_value(node, key) if a is MISSING else a
            b = field_value(other_node, key) if b is MISSING else b
            if same(a, b):
                continue
            if not (same(a, old) and same(b, new)):
                return None
            changed.add((path, key))
    return changed


def leading_comments(file: str) -> list[str]:
    """The comment block a spec file starts with: its human description."""
    lines = []
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines

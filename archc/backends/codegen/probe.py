"""Which model-level parameters feed layer arguments unchanged (found by recompiling).

The spec's own Document (carried in the compiled `Spec`) is compiled again with other values of
each model parameter; a parameter whose new value appears exactly where the old one did, and
changes nothing else, can be a keyword argument of the generated model (`num_classes`,
`dropout`); one that sizes layers through arithmetic (`growth_rate`) is fixed in the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archc.backends.codegen.lower import field_value, slots
from archc.backends.codegen.names import MISSING, python_name, same
from archc.compiler import Spec, compile_document
from archc.errors import ArchcError
from archc.spec.loader import Document


@dataclass
class Probe:
    """Which model-level parameters feed layer arguments directly, and where."""

    tags: dict[str, dict]  # layer path → {argument index or keyword: model parameter}
    exposed: list[str]  # keyword arguments of the generated model
    fixed: list[str]  # written into the file as the spec's values


def probe(spec: Spec) -> Probe:
    """Recompile the spec's Document with other values of each model parameter and see what
    changes. A parameter that only ever appears as itself in layer arguments (num_classes,
    dropout) can be a keyword argument of the generated model; one that sizes layers through
    arithmetic (growth_rate, groups) is fixed in the file. A Spec without its Document (built
    by hand) keeps every parameter fixed.
    """
    result = Probe({}, [], list(spec.params))
    doc = spec.document
    if doc is None or not isinstance(doc.data, dict):
        return result
    base = slots(spec.tree)
    for name, value in spec.params.items():
        if python_name(name) != name:
            continue
        changed: set | None = None
        for new in probe_values(value):
            data = {**doc.data, "params": {**doc.data.get("params", {}), name: new}}
            try:
                other = slots(compile_document(Document(data, doc.source, doc.text)).tree)
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

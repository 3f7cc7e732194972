"""Spec files people maintain: `extends:` a base file, named `variants:`, `--set` overrides.

All three turn into one plain Document before validation, so the compiler, codegen's probe and
every backend see exactly the data a user could have written by hand. The SourceMap keeps, for
each path, the file (or `--set` argument) that wrote it, so an error points there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from archc.errors import Location, Note, SpecError, UsageError, format_path
from archc.spec.loader import Document, SourceMap, load_file, load_text
from archc.spec.schema import check_name

MAX_EXTENDS = 16  # files in one extends chain
PLACE_KEYS = ("before", "after")  # where a layer added by an extending file goes
VARIANT_KEYS = ("params", "input", "name")
_NULLS = ("~", "null", "Null", "NULL")


def compose(
    doc: Document, *, variant: str | None = None, overrides: Sequence[str] = ()
) -> Document:
    """`doc` with its base merged in, then `variant` applied, then each KEY=VALUE override."""
    if isinstance(overrides, (str, bytes)):
        raise UsageError("overrides is a list of 'KEY=VALUE' strings, not one string")
    if not isinstance(doc.data, dict):
        return doc  # the compiler says what a spec must be
    if "extends" in doc.data:
        doc = extended(doc, _chain(doc.source.file))
    doc = with_variant(doc, variant)
    for arg in overrides:
        doc = override(doc, arg)
    return doc


# --- extends ---------------------------------------------------------------------------------


def _chain(file: str) -> tuple[str, ...]:
    path = Path(file)
    return (os.path.realpath(path),) if path.is_file() else ()


def extended(doc: Document, chain: tuple[str, ...]) -> Document:
    """`doc` merged over the file its `extends:` names (itself composed first, recursively)."""
    data, source = doc.data, doc.source
    if not isinstance(data, dict) or "extends" not in data:
        return doc
    ref, at = data["extends"], ("extends",)
    if not isinstance(ref, str) or not ref.strip():
        raise source.error(
            "extends names a spec file, relative to this one (extends: resnet50.yaml)", at
        )
    path = Path(os.path.normpath(Path(source.file).parent / ref))
    real = os.path.realpath(path)
    if real in chain:
        cycle = " -> ".join([*(Path(c).name for c in chain[chain.index(real) :]), Path(real).name])
        raise source.error(f"extends cycle: {cycle}", at)
    if len(chain) >= MAX_EXTENDS:
        raise source.error(f"extends chain is longer than {MAX_EXTENDS} files", at)
    try:
        base = load_file(path)
    except SpecError as exc:
        if exc.location is not None and exc.location.file == str(path) and exc.location.line == 1:
            if exc.message in ("no such file", "is a directory, not a spec file"):
                raise source.error(f"extends {ref!r}: {exc.message} ({path})", at) from None
        raise exc.note(f"extended by {source.file}", source.locate(at)) from None
    try:
        base = extended(base, (*chain, real))
    except SpecError as exc:
        raise exc.note(f"extended by {source.file}", source.locate(at)) from None
    child = {k: v for k, v in data.items() if k != "extends"}
    out = SourceMap(source.file, notes=dict(base.source.notes))
    out.notes[str(path)] = (Note(f"extended by {source.file}", source.locate(at)),)
    merged = _merge(base.data, child, (), base.source, source, out)
    # the leading comments describe the spec: inherited unless the extending file writes its own
    text = doc.text if doc.leading_comments else base.text
    return Document(merged, out, text)


def _kind(layer: dict) -> tuple:
    from archc.expand import META_KEYS

    return tuple(k for k in layer if k not in META_KEYS and k not in PLACE_KEYS)


def _merge(
    base: Any, child: Any, path: tuple, bsrc: SourceMap, csrc: SourceMap, out: SourceMap
) -> Any:
    """Mappings merge by key (the base's order, new keys after); anything else replaces."""
    layer = len(path) == 2 and path[0] == "body"
    if not (isinstance(base, dict) and isinstance(child, dict)) or (
        layer and _kind(child) and _kind(base) != _kind(child)
    ):
        place(out, path, child, csrc, path)  # another kind of layer replaces the base's
        return child
    if path == ("body",):
        return _merge_body(base, child, bsrc, csrc, out)
    _position(out, path, csrc, path)
    merged = {}
    for key, value in base.items():
        if key in child:
            merged[key] = _merge(value, child[key], path + (key,), bsrc, csrc, out)
        else:
            merged[key] = value
            place(out, path + (key,), value, bsrc, path + (key,))
    for key, value in child.items():
        if key not in base:
            merged[key] = value
            place(out, path + (key,), value, csrc, path + (key,))
    return merged


def _merge_body(base: dict, child: dict, bsrc: SourceMap, csrc: SourceMap, out: SourceMap) -> dict:
    """Layers merge by name in the base's order; `name: ~` deletes one; a new one goes at the
    end, or where `before: NAME` / `after: NAME` says (which also moves an existing one)."""
    path = ("body",)
    _position(out, path, csrc, path)
    layers, names, touched = dict(base), list(base), set()
    for name, layer in child.items():
        at = path + (name,)
        if layer is None:
            if name not in layers:
                raise csrc.error(
                    f"no layer {name!r} to delete; layers: {_listing(names)}", at, key=True
                )
            del layers[name]
            names.remove(name)
            continue
        where = None
        if isinstance(layer, dict):
            given = [k for k in layer if k in PLACE_KEYS]
            if len(given) > 1:
                raise csrc.error(
                    "a layer goes before or after another, not both", at + (given[1],), key=True
                )
            if given:
                where = (given[0], layer[given[0]])
                layer = {k: v for k, v in layer.items() if k not in PLACE_KEYS}
        if name in layers:
            layers[name] = _merge(layers[name], layer, at, bsrc, csrc, out)
        else:
            layers[name] = layer
            names.append(name)
            place(out, at, layer, csrc, at)
        touched.add(name)
        if where is not None:
            key, target = where
            names.remove(name)
            if not isinstance(target, str) or target not in names:
                raise csrc.error(
                    f"{key}: no layer {target!r} to put {name!r} {key}; layers: {_listing(names)}",
                    at + (key,),
                )
            names.insert(names.index(target) + (key == "after"), name)
    for name in names:
        if name not in touched:
            place(out, path + (name,), layers[name], bsrc, path + (name,))
    return {name: layers[name] for name in names}


def _listing(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return (", ".join(names[:limit]) or "none") + more


# --- positions -------------------------------------------------------------------------------


def _position(out: SourceMap, dst: tuple, src: SourceMap, at: tuple, shift: int = 0) -> None:
    """Copy where `at` (its value and its key) was written in `src` to `dst` in `out`."""
    for table, into in ((src.values, out.values), (src.keys, out.keys)):
        where = table.get(at)
        if where is not None:
            loc = src.at(where)
            if shift and loc.line == 1:
                loc = Location(loc.file, 1, loc.col + shift)
            into[dst] = loc


def place(
    out: SourceMap, dst: tuple, value: Any, src: SourceMap, at: tuple, shift: int = 0
) -> None:
    """Record `value` (written at `at` in `src`) as now living at `dst`, everything in it too."""
    stack = [(dst, value, at)]
    while stack:
        d, v, a = stack.pop()
        _position(out, d, src, a, shift)
        if isinstance(v, dict):
            stack.extend((d + (k,), x, a + (k,)) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((d + (i,), x, a + (i,)) for i, x in enumerate(v))


def _drop(out: SourceMap, path: tuple) -> None:
    """Forget the positions of `path` and everything under it (a value being replaced)."""
    n = len(path)
    for table in (out.values, out.keys):
        for p in [p for p in table if p[:n] == path]:
            del table[p]


def _copy(source: SourceMap) -> SourceMap:
    return SourceMap(source.file, dict(source.values), dict(source.keys), dict(source.notes))


# --- variants --------------------------------------------------------------------------------


def with_variant(doc: Document, variant: str | None) -> Document:
    """`doc` without `variants:`, the chosen one's params, input and name applied (none
    chosen: the base values). Every variant's shape is checked, chosen or not."""
    data, source = doc.data, doc.source
    if "variants" not in data:
        if variant is not None:
            raise SpecError(f"no variant {variant!r}: the spec has no variants", source.locate(()))
        return doc
    raw, at = data["variants"], ("variants",)
    if not isinstance(raw, dict) or not raw:
        raise source.error("variants maps names to {params: ..., input: ..., name: ...}", at)
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    for name, spec in raw.items():
        problem = check_name(name)
        if problem:
            raise source.error(problem, at + (name,), key=True)
        if not isinstance(spec, dict):
            raise source.error(
                f"variant {name!r} is a mapping with params, input or name", at + (name,)
            )
        for key in spec:
            if key not in VARIANT_KEYS:
                raise source.error(
                    f"a variant sets params, input or name, not {key!r}", at + (name, key), key=True
                )
        if "params" in spec:
            if not isinstance(spec["params"], dict):
                raise source.error("a variant's params is a mapping", at + (name, "params"))
            for key in spec["params"]:
                if key not in params:
                    raise source.error(
                        f"variant {name!r} sets {key!r}, which params: does not have; params: {_listing(params)}",
                        at + (name, "params", key), key=True,
                    )  # fmt: skip
    names = tuple(raw)
    base = {k: v for k, v in data.items() if k != "variants"}
    if variant is None:
        return Document(base, source, doc.text, names)
    if variant not in raw:
        raise source.error(f"no variant {variant!r}; variants: {_listing(names)}", at, key=True)
    chosen, vat = raw[variant], at + (variant,)
    out = _copy(source)
    base["name"] = chosen.get("name", variant)
    _drop(out, ("name",))
    if "name" in chosen:
        place(out, ("name",), base["name"], source, vat + ("name",))
    else:
        out.values[("name",)] = source.locate(vat, key=True)
    if "input" in chosen:
        base["input"] = chosen["input"]
        _drop(out, ("input",))
        place(out, ("input",), chosen["input"], source, vat + ("input",))
    if "params" in chosen:
        base["params"] = {**params, **chosen["params"]}
        for key, value in chosen["params"].items():
            _drop(out, ("params", key))
            place(out, ("params", key), value, source, vat + ("params", key))
    return Document(base, out, doc.text, names, variant)


# --- overrides -------------------------------------------------------------------------------


def override(doc: Document, arg: str) -> Document:
    """`doc` with KEY=VALUE set: KEY a dotted path (list items by index: input.1, body.0),
    VALUE read as YAML by archc's loader. Every part of KEY but the last must exist."""
    if not isinstance(arg, str):
        raise UsageError(f"an override is a 'KEY=VALUE' string, not {arg!r}")
    key, eq, text = arg.partition("=")
    parts = key.split(".")
    if not eq or not all(parts):
        raise UsageError(f"--set {arg}: give KEY=VALUE, e.g. --set params.num_classes=10")
    file, shift = f"--set {arg}", len(key) + 1
    if not text.strip():
        raise UsageError(f"--set {arg}: give a value after '=' (~ for null)")
    value_src = SourceMap(file, {(): (1, 1)})
    if text.strip() in _NULLS:
        value = None
    else:
        try:
            loaded = load_text(text, file)
        except SpecError as exc:
            exc.location = _shifted(exc.location, file, shift)
            exc.notes = [Note(n.message, _shifted(n.location, file, shift)) for n in exc.notes]
            raise
        value, value_src = loaded.data, loaded.source
    source = doc.source
    data = dict(doc.data)
    node, path, col = data, (), 1
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = Location(file, 1, col)
        if isinstance(node, dict):
            step: str | int = part
            if not last and part not in node:
                what = "layer" if path == ("body",) else "key"
                listing = "layers" if what == "layer" else "keys"
                name = format_path(path + (part,))
                raise SpecError(
                    f"{name}: no such {what}; {listing}: {_listing(node)}", here, name
                ).note(f"{format_path(path) or 'the spec'} is here", source.locate(path))
        elif isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                name = format_path(path)
                raise SpecError(
                    f"{name} is a list of {len(node)}; {part!r} is not an index into it (0 to {len(node) - 1})",
                    here, name,
                ).note(f"{name} is here", source.locate(path))  # fmt: skip
            step = int(part)
        else:
            name = format_path(path)
            raise SpecError(
                f"{name} is {node!r}, not a mapping or list; it has no {part!r}", here, name
            ).note(f"{name} is here", source.locate(path))
        col += len(part) + 1
        if last:
            previous = source.locate(path + (step,)) if _has(node, step) else None
            node[step] = value
        else:
            child = node[step]
            node[step] = (
                dict(child)
                if isinstance(child, dict)
                else list(child)
                if isinstance(child, list)
                else child
            )
            node = node[step]
        path += (step,)
    out = _copy(source)
    _drop(out, path)
    place(out, path, value, value_src, (), shift)
    if path in source.keys:
        out.keys[path] = source.keys[path]
    if previous is not None:
        out.notes[file] = (Note(f"{format_path(path)} was set here before the override", previous),)
    return Document(data, out, doc.text, doc.variants, doc.variant)


def _shifted(loc: Location | None, file: str, shift: int) -> Location | None:
    """A location in a `--set` value as a column of the whole KEY=VALUE argument."""
    if loc is None or loc.file != file or loc.line != 1:
        return loc
    return Location(file, 1, loc.col + shift)


def _has(node: dict | list, step: str | int) -> bool:
    return step in node if isinstance(node, dict) else True


def annotate(exc: SpecError, source: SourceMap) -> SpecError:
    """Add to an error the notes for where it is: at a `--set` value, where the file had that
    value; in a base file, the `extends:` that brought it in."""
    if exc.location is not None:
        for note in source.notes.get(exc.location.file, ()):
            if note not in exc.notes:
                exc.notes.append(note)
    return exc

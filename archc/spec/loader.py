"""Safe YAML loading that keeps a source position for every value.

The YAML is composed into nodes by PyYAML's safe composer and converted here by hand, so
no tag can construct a Python object, duplicate keys are caught at any depth, and alias
expansion is bounded (a "billion laughs" file is refused instead of eating memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from archc.errors import Location, SpecError, format_path

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: far beyond any real architecture spec
MAX_VALUES = 200_000  # values after alias expansion
MAX_DEPTH = 64  # nesting of mappings and lists

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}


@dataclass
class SourceMap:
    """Maps a field path (tuple of keys and indices) to where it was written."""

    file: str
    values: dict[tuple, Location] = field(default_factory=dict)
    keys: dict[tuple, Location] = field(default_factory=dict)

    def locate(self, path: tuple, *, key: bool = False) -> Location | None:
        """The location of `path`, or of its nearest ancestor that was written in the file."""
        path = tuple(path)
        if key and path in self.keys:
            return self.keys[path]
        while True:
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, message: str, path: tuple, *, key: bool = False) -> SpecError:
        return SpecError(message, self.locate(path, key=key), format_path(path))


@dataclass
class Document:
    """A loaded YAML file: plain Python data plus where each part of it came from."""

    data: Any
    source: SourceMap


def _location(file: str, node: Node) -> Location:
    mark = node.start_mark
    return Location(file, mark.line + 1, mark.column + 1)


class _Converter:
    def __init__(self, file: str):
        self.file = file
        self.source = SourceMap(file)
        self.constructor = SafeConstructor()
        self.count = 0

    def fail(self, message: str, node: Node, path: tuple) -> SpecError:
        return SpecError(message, _location(self.file, node), format_path(path))

    def convert(self, node: Node, path: tuple) -> Any:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.fail(
                f"spec expands to more than {MAX_VALUES:,} values (alias bomb?)", node, path
            )
        if len(path) > MAX_DEPTH:
            raise self.fail(f"spec is nested more than {MAX_DEPTH} levels deep", node, path)
        self.source.values.setdefault(path, _location(self.file, node))
        if isinstance(node, ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                raise self.fail(f"unsupported YAML tag {node.tag!r}", node, path)
            return self.constructor.construct_object(node)
        if isinstance(node, SequenceNode):
            if node.tag != _TAG + "seq":
                raise self.fail(f"unsupported YAML tag {node.tag!r}", node, path)
            return [self.convert(item, path + (i,)) for i, item in enumerate(node.value)]
        if isinstance(node, MappingNode):
            if node.tag != _TAG + "map":
                raise self.fail(f"unsupported YAML tag {node.tag!r}", node, path)
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, ScalarNode) or key_node.tag == _TAG + "merge":
                    raise self.fail("mapping keys must be plain names", key_node, path)
                if key_node.tag not in _SCALAR_TAGS:
                    raise self.fail(f"unsupported YAML tag {key_node.tag!r}", key_node, path)
                key = self.constructor.construct_object(key_node)
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise self.fail(f"mapping key {key!r} must be a name", key_node, path)
                key = str(key)
                if key in out:
                    first = self.source.keys[path + (key,)]
                    raise self.fail(
                        f"duplicate key {key!r} (first defined at line {first.line})",
                        key_node,
                        path + (key,),
                    )
                self.source.keys[path + (key,)] = _location(self.file, key_node)
                out[key] = self.convert(value_node, path + (key,))
            return out
        raise self.fail("unsupported YAML node", node, path)  # pragma: no cover


def _decode(raw: bytes, file: str) -> str:
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec is {len(raw):,} bytes; the limit is {MAX_SPEC_BYTES:,}", Location(file, 1, 1)
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise SpecError("spec is not valid UTF-8 text", Location(file, line, col)) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SpecError("spec contains NUL bytes (is it a binary file?)", Location(file, line, 1))
    return text


def load_text(text: str, file: str = "<string>") -> Document:
    """Parse YAML text into a Document; raise SpecError with a position on any problem."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Location(file, mark.line + 1, mark.column + 1) if mark else Location(file, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"invalid YAML: {problem}", loc) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", Location(file, 1, 1)) from None
    except RecursionError:
        raise SpecError(
            f"spec is nested too deeply (limit {MAX_DEPTH})", Location(file, 1, 1)
        ) from None
    if len(nodes) > 1:
        raise SpecError(
            "a spec file holds one YAML document; found several", _location(file, nodes[1])
        )
    if not nodes or nodes[0] is None:
        raise SpecError("spec is empty", Location(file, 1, 1))
    converter = _Converter(file)
    data = converter.convert(nodes[0], ())
    return Document(data, converter.source)


def load_file(path: str | Path) -> Document:
    """Read and parse a spec file (size-checked before it is parsed)."""
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"spec is {size:,} bytes; the limit is {MAX_SPEC_BYTES:,}", Location(name, 1, 1)
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError("no such file", Location(name, 1, 1)) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", Location(name, 1, 1)) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror}", Location(name, 1, 1)) from None
    return load_text(_decode(raw, name), name)

"""Safe YAML loading that keeps a source position for every value.

The YAML is read as a stream of parser events (libyaml's parser when available) and built
into plain data here, iteratively, so no tag can construct a Python object, duplicate keys
are caught at any depth, nesting is refused past MAX_DEPTH as soon as it is seen (a file of
a million `[` stops at the 65th), and alias expansion is charged before it is copied (a
"billion laughs" file is refused at its first oversized alias instead of eating memory).
"""

from __future__ import annotations

import os
import re
import stat
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml import events
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from archc.errors import Location, SpecError, format_path

try:  # libyaml parses about 20x faster than the pure-Python parser, with the same events
    from yaml import CSafeLoader as _Parser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _Parser

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: far beyond any real architecture spec
MAX_VALUES = 50_000  # keys and values after alias expansion (real specs: a few thousand)
MAX_DEPTH = 64  # nesting of mappings and lists

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null")}
_TEXT_TAGS = {_TAG + "timestamp"}  # a date in a description is text to archc, not a datetime
_LINE_BREAK = re.compile(r"\r\n?|\n")  # what editors (and YAML 1.2) count as a line break
_YAML11_ONLY_BREAKS = ("\x85", "\u2028", "\u2029")  # libyaml breaks lines there; editors do not
# The constructs that must be closed: when one is left open, the parser notices only where
# the file stops making sense, often many lines on, so the error names where it opened.
_OPENED = {
    "quoted scalar": "quoted string",
    "flow sequence": "[...] list",
    "flow mapping": "{...} mapping",
}


class _Resolver(Resolver):
    """YAML 1.1's scalar types, plus floats the way people type them: YAML 1.1 reads `1e-6`,
    `1e5` and `1.5e3` as strings (its floats need a dot and a signed exponent); YAML 1.2,
    JSON and editors read numbers, and so does archc."""


_Resolver.add_implicit_resolver(
    _TAG + "float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_RESOLVER = _Resolver()
_CONSTRUCTOR = SafeConstructor()


class _Lines:
    """(line, column) of a character offset as an editor shows them: \\n, \\r\\n and \\r each
    end a line, and nothing else.

    libyaml and PyYAML count lines YAML 1.1's way, so a U+2028 or U+0085 inside a string
    shifts every later line number by one; a mark's character index does not drift.
    """

    def __init__(self, text: str):
        self.text = text
        self.starts: list[int] | None = None  # line starts, only for text libyaml miscounts
        if any(c in text for c in _YAML11_ONLY_BREAKS):
            self.starts = [0, *(m.end() for m in _LINE_BREAK.finditer(text))]

    def at(self, index: int) -> tuple[int, int]:
        """1-based line and column of the character at `index`."""
        text = self.text
        if index > 0 and text[index - 1 : index + 1] == "\r\n":
            index -= 1  # the \n of a \r\n is part of the line break the \r starts
        if self.starts is not None:
            line = bisect_right(self.starts, index)
            return line, index - self.starts[line - 1] + 1
        crlf = text.count("\r\n", 0, index)
        line = text.count("\n", 0, index) + text.count("\r", 0, index) - crlf + 1
        start = max(text.rfind("\n", 0, index), text.rfind("\r", 0, index)) + 1
        return line, index - start + 1

    def of(self, mark: yaml.Mark) -> tuple[int, int]:
        """`at(mark.index)`, without the search when the parser's own count is right."""
        if self.starts is None:  # only \n, \r\n and \r: libyaml counts as editors do
            return mark.line + 1, mark.column + 1
        return self.at(mark.index)


@dataclass
class SourceMap:
    """Maps a field path (tuple of keys and indices) to where it was written.

    A position is a (line, col) in `file`, or a whole Location: a spec composed from several
    sources (`extends:`, `--set`) keeps, per path, the file that wrote the value.
    """

    file: str
    values: dict[tuple, tuple[int, int] | Location] = field(default_factory=dict)
    keys: dict[tuple, tuple[int, int] | Location] = field(default_factory=dict)
    notes: dict[str, tuple] = field(default_factory=dict)  # file -> Notes for errors located there

    def at(self, where: tuple[int, int] | Location) -> Location:
        return where if type(where) is Location else Location(self.file, *where)

    def locate(self, path: tuple, *, key: bool = False) -> Location | None:
        """The location of `path`, or of its nearest ancestor that was written in the file."""
        path = tuple(path)
        if key and path in self.keys:
            return self.at(self.keys[path])
        while True:
            if path in self.values:
                return self.at(self.values[path])
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
    text: str = field(default="", repr=False)  # the YAML text it was parsed from
    variants: tuple[str, ...] = ()  # the names under `variants:` (set by archc.spec.compose)
    variant: str | None = None  # the one chosen

    @property
    def leading_comments(self) -> list[str]:
        """The comment block the text starts with (a spec's human description), `#` removed."""
        lines = []
        for line in self.text.splitlines():
            if not line.startswith("#"):
                break
            if line[1:].strip().startswith("yaml-language-server:"):
                continue  # an editor modeline (the schema), not the spec's description
            lines.append(line[1:].strip())
        return lines


@dataclass
class _Open:
    """A mapping or list being filled in."""

    value: Any
    path: tuple
    anchor: str | None
    count: int  # values counted before this one
    log: int  # length of the position log before this one
    height: int = 0  # levels of nesting below this one so far
    key: str | None = None  # in a mapping: the key whose value comes next


@dataclass
class _Anchor:
    value: Any
    size: int  # values, counting nested ones
    height: int  # levels of nesting below it
    log: tuple[int, int, int]  # its slice of the position log, and the length of its path


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class _Builder:
    """Builds plain data from parser events, recording where every key and value was written."""

    def __init__(self, file: str, lines: _Lines):
        self.file = file
        self.lines = lines
        self.source = SourceMap(file)
        self.count = 0
        self.stack: list[_Open] = []
        self.anchors: dict[str, _Anchor] = {}
        self.log: list[tuple[tuple, tuple[int, int], bool]] = []  # (path, where, is_key), in order
        self.root: Any = None
        self.scalars: dict[tuple, tuple[Any]] = {}  # (tag, text, implicit) -> (value,)
        self.done = False

    def where(self, event: events.Event) -> tuple[int, int]:
        return self.lines.of(event.start_mark)

    def fail(self, message: str, event: events.Event, path: tuple) -> SpecError:
        return SpecError(message, Location(self.file, *self.where(event)), format_path(path))

    def feed(self, event: events.Event) -> None:
        if isinstance(event, (events.MappingEndEvent, events.SequenceEndEvent)):
            self.close(self.stack.pop())
            return
        if not isinstance(event, events.NodeEvent):
            return  # stream and document markers
        top = self.stack[-1] if self.stack else None
        if top is not None and isinstance(top.value, dict) and top.key is None:
            self.key(event, top)
            return
        if top is None:
            path: tuple = ()
        elif isinstance(top.value, list):
            path = top.path + (len(top.value),)
        else:
            path = top.path + (top.key,)
        parents = len(self.stack)
        if isinstance(event, events.AliasEvent):
            value, height = self.alias(event, path)
        else:
            value, height = self.node(event, path)
        if top is None:
            self.root, self.done = value, not self.stack
        elif isinstance(top.value, list):
            top.value.append(value)
        else:
            top.value[top.key] = value
            top.key = None
        for level in range(1, parents + 1):
            frame = self.stack[parents - level]
            if frame.height >= height + level:
                break
            frame.height = height + level

    def record(self, path: tuple, where: tuple[int, int], is_key: bool = False) -> None:
        if is_key:
            self.source.keys[path] = where
        else:
            self.source.values.setdefault(path, where)
        self.log.append((path, where, is_key))

    def node(self, event: events.NodeEvent, path: tuple) -> tuple[Any, int]:
        self.count += 1
        if self.count > MAX_VALUES:
            raise self.fail(f"spec has more than {MAX_VALUES:,} keys and values", event, path)
        if len(path) > MAX_DEPTH:
            raise self.fail(f"spec is nested more than {MAX_DEPTH} levels deep", event, path)
        if event.anchor is not None and (
            event.anchor in self.anchors or any(f.anchor == event.anchor for f in self.stack)
        ):
            raise self.fail(f"anchor &{event.anchor} is defined twice", event, path)
        start = (self.count - 1, len(self.log))
        self.record(path, self.where(event))
        if isinstance(event, events.ScalarEvent):
            value = self.scalar(event, path)
            if event.anchor is not None:
                self.anchors[event.anchor] = _Anchor(
                    value, 1, 0, (start[1], len(self.log), len(path))
                )
            return value, 0
        kind = "seq" if isinstance(event, events.SequenceStartEvent) else "map"
        if event.tag not in (None, "!", _TAG + kind):
            raise self.fail(f"unsupported YAML tag {event.tag!r}", event, path)
        value = [] if kind == "seq" else {}
        self.stack.append(_Open(value, path, event.anchor, *start))
        return value, 0  # its children raise its height as they arrive

    def close(self, frame: _Open) -> None:
        if frame.anchor is not None:
            size = self.count - frame.count
            span = (frame.log, len(self.log), len(frame.path))
            self.anchors[frame.anchor] = _Anchor(frame.value, size, frame.height, span)
        if not self.stack:
            self.done = True

    def scalar(self, event: events.ScalarEvent, path: tuple, *, key: bool = False) -> Any:
        memo = (event.tag, event.value, event.implicit)
        hit = self.scalars.get(memo)
        if hit is not None:
            return hit[0]
        tag = event.tag
        if tag is None or tag == "!":
            tag = _RESOLVER.resolve(ScalarNode, event.value, event.implicit)
        if key and tag == _TAG + "merge":
            raise self.fail("mapping keys must be plain names", event, path)
        if tag in _TEXT_TAGS:
            return event.value
        if tag not in _SCALAR_TAGS:
            raise self.fail(f"unsupported YAML tag {tag!r}", event, path)
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            value = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, node)
        except ValueError:
            raise self.fail(
                f"{event.value[:20]!r}... is not a number archc can read", event, path
            ) from None
        if len(event.value) <= 64:  # values repeat a lot in specs; all of these are immutable
            self.scalars[memo] = (value,)
        return value

    def alias(self, event: events.AliasEvent, path: tuple) -> tuple[Any, int]:
        name = event.anchor
        if any(f.anchor == name for f in self.stack):
            raise self.fail(f"alias *{name} refers to a value that contains it", event, path)
        anchor = self.anchors.get(name)
        if anchor is None:
            raise self.fail(f"alias *{name} has no anchor &{name} before it", event, path)
        if self.count + anchor.size > MAX_VALUES:
            raise self.fail(
                f"spec expands to more than {MAX_VALUES:,} keys and values (alias bomb?)",
                event,
                path,
            )
        if len(path) + anchor.height > MAX_DEPTH:
            raise self.fail(f"spec is nested more than {MAX_DEPTH} levels deep", event, path)
        self.count += anchor.size
        self.record(path, self.where(event))  # the alias itself, then the anchor's insides
        first, last, depth = anchor.log
        for old, where, is_key in self.log[first:last]:
            if len(old) > depth:
                self.record(path + old[depth:], where, is_key)
        return _copy(anchor.value), anchor.height

    def key(self, event: events.NodeEvent, top: _Open) -> None:
        if not isinstance(event, events.ScalarEvent):
            raise self.fail("mapping keys must be plain names", event, top.path)
        self.count += 1  # keys count too: a file of a million tiny keys is as slow as values
        if self.count > MAX_VALUES:
            raise self.fail(f"spec has more than {MAX_VALUES:,} keys and values", event, top.path)
        key = self.scalar(event, top.path, key=True)
        if isinstance(key, bool) or key is None:  # YAML 1.1 reads on/off/yes/no/null as values
            raise self.fail(
                f"mapping key {event.value!r} is read by YAML as {_yaml_word(key)}; quote it to use it "
                f"as a name ('{event.value}': ...)",
                event,
                top.path,
            )
        if not isinstance(key, (str, int)):
            raise self.fail(f"mapping key {key!r} must be a name", event, top.path)
        key = str(key)
        if key in top.value:
            first = self.source.keys[top.path + (key,)]
            raise self.fail(
                f"duplicate key {key!r} (first defined at line {first[0]})",
                event,
                top.path + (key,),
            )
        path = top.path + (key,)
        self.source.keys[path] = where = self.where(event)
        self.log.append((path, where, True))
        top.key = key


def _yaml_word(value: bool | None) -> str:
    """How YAML writes a boolean or null (messages speak YAML, not Python)."""
    return "null" if value is None else str(value).lower()


def _decode(raw: bytes, file: str) -> str:
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec is {len(raw):,} bytes; the limit is {MAX_SPEC_BYTES:,}", Location(file, 1, 1)
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8-sig")  # valid up to the bad byte
        where = _offset_location(before, len(before), file, chars=True)
        raise SpecError("spec is not valid UTF-8 text", where) from None
    if "\x00" in text:
        where = _offset_location(text, text.index("\x00"), file, chars=True)
        raise SpecError("spec contains NUL bytes (is it a binary file?)", where)
    return text


def _offset_location(text: str, offset: int, file: str, *, chars: bool = False) -> Location:
    """Location of an offset in characters, or in a parser's units (libyaml counts bytes)."""
    if not chars and _Parser is not yaml.SafeLoader:
        offset = len(text.encode("utf-8")[:offset].decode("utf-8", "replace"))
    return Location(file, *_Lines(text).at(offset))


def _syntax_error(exc: yaml.MarkedYAMLError, lines: _Lines, file: str) -> SpecError:
    """`invalid YAML` at the cause: where an unclosed quote or bracket opened, with where the
    parser gave up as a note; otherwise where the parser gave up."""
    text = lines.text
    problem = exc.problem or exc.context or "invalid YAML"
    mark = exc.problem_mark or exc.context_mark
    index = mark.index if mark else 0
    end = len(text.rstrip("\r\n"))  # a problem at the end of the file: the end of its last line
    noticed = Location(file, *lines.at(min(index, end)))
    if "nesting depth" in problem:  # libyaml's own limit (PyYAML >= 6.0.4) came first
        return SpecError(f"spec is nested more than {MAX_DEPTH} levels deep", noticed)
    char = text[index : index + 1]
    if "cannot start any token" in problem and char:
        problem = f"found character {char!r} that cannot start any token"
        if char == "\t":
            problem += " (YAML indents with spaces, not tabs)"
    construct = next((v for k, v in _OPENED.items() if k in (exc.context or "")), None)
    opened = exc.context_mark
    if construct is None or opened is None or opened.index >= index:
        return SpecError(f"invalid YAML: {problem}", noticed)
    error = SpecError(
        f"invalid YAML: {problem} (in the {construct} that starts here)",
        Location(file, *lines.at(opened.index)),
    )
    return error.note("the parser stopped here", noticed)


def load_text(text: str, file: str = "<string>") -> Document:
    """Parse YAML text into a Document; raise SpecError with a position on any problem."""
    if len(text) > MAX_SPEC_BYTES:  # at least one byte a character: no need to encode it all
        raise SpecError(f"spec is over the limit of {MAX_SPEC_BYTES:,} bytes", Location(file, 1, 1))
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise SpecError(
            "spec is not valid Unicode text", _offset_location(text, exc.start, file, chars=True)
        ) from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(
            f"spec is {size:,} bytes; the limit is {MAX_SPEC_BYTES:,}", Location(file, 1, 1)
        )
    if "\x00" in text:
        where = _offset_location(text, text.index("\x00"), file, chars=True)
        raise SpecError("spec contains NUL bytes (is it a binary file?)", where)
    builder = _Builder(file, _Lines(text))
    documents = 0
    try:
        for event in yaml.parse(text, Loader=_Parser):
            if isinstance(event, events.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise builder.fail(
                        "a spec file holds one YAML document; found several", event, ()
                    )
            builder.feed(event)
    except yaml.reader.ReaderError as exc:
        where = _offset_location(text, exc.position, file)
        raise SpecError(f"invalid YAML: {exc.reason}", where) from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc, builder.lines, file) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", Location(file, 1, 1)) from None
    if not builder.done or builder.root is None:
        raise SpecError("spec is empty", Location(file, 1, 1))
    return Document(builder.root, builder.source, text)


STDIN = "-"  # the spec argument that means standard input
STDIN_NAME = "<stdin>"  # how messages name it


def _is_stdin(info: os.stat_result) -> bool:
    try:
        stdin = os.fstat(0)
    except OSError:  # standard input is closed
        return False
    return (stdin.st_dev, stdin.st_ino) == (info.st_dev, info.st_ino)


def _spec_file_size(path: Path, name: str) -> int:
    """The size of a regular spec file. Anything else but standard input (/dev/stdin) is
    refused before it is opened: opening a FIFO blocks until a writer comes, maybe forever."""
    info = path.stat()
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(name)
    if not stat.S_ISREG(info.st_mode) and not _is_stdin(info):
        raise SpecError(
            "not a regular file (a FIFO, device or socket); give a spec file, or - for standard input",
            Location(name, 1, 1),
        )
    return info.st_size


def load_file(path: str | Path) -> Document:
    """Read and parse a spec file (size-checked before it is parsed)."""
    path = Path(path)
    name = STDIN_NAME if str(path) == STDIN else str(path)
    try:
        size = 0 if str(path) == STDIN else _spec_file_size(path, name)
        if size > MAX_SPEC_BYTES:
            raise SpecError(
                f"spec is {size:,} bytes; the limit is {MAX_SPEC_BYTES:,}", Location(name, 1, 1)
            )
        opened = open(0, "rb", closefd=False) if str(path) == STDIN else open(path, "rb")
        with opened as handle:  # at most one byte over: a pipe has no size
            raw = handle.read(MAX_SPEC_BYTES + 1)
        if len(raw) > MAX_SPEC_BYTES:
            raise SpecError(
                f"spec is over the limit of {MAX_SPEC_BYTES:,} bytes", Location(name, 1, 1)
            )
    except FileNotFoundError:
        raise SpecError("no such file", Location(name, 1, 1)) from None
    except IsADirectoryError:
        raise SpecError("is a directory, not a spec file", Location(name, 1, 1)) from None
    except OSError as exc:
        raise SpecError(f"cannot read spec: {exc.strerror}", Location(name, 1, 1)) from None
    return load_text(_decode(raw, name), name)


def load_shipped(files: list[Path], name: str) -> list[Document]:
    """Documents of files shipped with archc (the built-in blocks), parsed once and kept in
    archc's cache (archc/cache.py, keyed by every file's size and modification time) as JSON:
    the data, the positions of its keys and values, and the text. Reading that back is about
    5x faster than parsing the YAML again."""
    from archc.cache import cached

    def parse() -> list[dict]:
        return [_as_json(load_file(f)) for f in files]

    try:
        return [_from_json(entry) for entry in cached(name, [], parse)]
    except (KeyError, TypeError, ValueError, IndexError):  # valid JSON, not what archc wrote
        return [load_file(f) for f in files]


def _as_json(doc: Document) -> dict:
    src = doc.source
    return {
        "file": src.file,
        "text": doc.text,
        "data": doc.data,
        "values": [[list(k), list(v)] for k, v in src.values.items()],
        "keys": [[list(k), list(v)] for k, v in src.keys.items()],
    }


def _from_json(entry: dict) -> Document:
    source = SourceMap(
        entry["file"],
        {tuple(k): (v[0], v[1]) for k, v in entry["values"]},
        {tuple(k): (v[0], v[1]) for k, v in entry["keys"]},
    )
    return Document(entry["data"], source, entry["text"])

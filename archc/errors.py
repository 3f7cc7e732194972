"""Errors a user can act on: every one names a file, a line, a column and a field path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where in a source file a spec value came from (1-based line and column)."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Note:
    """A second place that explains an error, printed after it as `FILE:LINE:COL: note: ...`.

    An error has one location, the cause; a note shows where else the story goes on (where a
    bad value is used, where a YAML construct that was never closed began), as C compilers do.
    """

    message: str
    location: Location | None = None

    def format(self) -> str:
        where = f"{shown(str(self.location))}: " if self.location else ""
        return f"{where}note: {shown(self.message)}"


class ArchcError(Exception):
    """Base class for errors archc reports to users (exit status 1)."""

    exit_code = 1

    def format(self) -> str:
        return f"error: {shown(str(self))}"


class SpecError(ArchcError):
    """A problem in a spec, reported as `FILE:LINE:COL: error: message (at field.path)`."""

    def __init__(
        self,
        message: str,
        location: Location | None = None,
        field: str = "",
        notes: tuple[Note, ...] = (),
    ):
        message, field = shorten(message), shorten(field)  # a 1 MB name must not flood the terminal
        super().__init__(message)
        self.message = message
        self.location = location
        self.field = field
        self.notes: list[Note] = list(notes)

    def note(self, message: str, location: Location | None) -> SpecError:
        """Add a note (printed after the error, in order) and return the error."""
        self.notes.append(Note(shorten(message), location))
        return self

    def format(self) -> str:
        """The error line, then one line per note; user text in them is escaped."""
        where = f"{shown(str(self.location))}: " if self.location else ""
        at = f" (at {shown(self.field)})" if self.field else ""
        error = f"{where}error: {shown(self.message)}{at}"
        return "\n".join([error, *(note.format() for note in self.notes)])

    def __str__(self) -> str:
        return self.format()


class UsageError(ArchcError):
    """A bad command line or API call (exit status 2)."""

    exit_code = 2


def shorten(text: str, limit: int = 500) -> str:
    """`text`, or its start and end around an ellipsis when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def shown(text: str) -> str:
    """User-facing text as printed: escaped, then shortened (escaping can lengthen it)."""
    return shorten(escape(text))


def escape(text: str) -> str:
    """`text` with every non-printable character written as a Python escape (`\\x1b`).

    Messages echo names and values from the spec; an escape sequence or a carriage return in
    one must not recolour, clear or overwrite the user's terminal. Printable Unicode (×, é)
    is left alone.
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_path(path: tuple) -> str:
    """Render a field path like ('body', 'layer1', 'stage', 'depth') as body.layer1.stage.depth."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out

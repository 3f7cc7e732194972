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


class ArchcError(Exception):
    """Base class for errors archc reports to users (exit status 1)."""

    exit_code = 1

    def format(self) -> str:
        return f"error: {self}"


class SpecError(ArchcError):
    """A problem in a spec, reported as `FILE:LINE:COL: error: message (at field.path)`."""

    def __init__(self, message: str, location: Location | None = None, field: str = ""):
        message, field = shorten(message), shorten(field)  # a 1 MB name must not flood the terminal
        super().__init__(message)
        self.message = message
        self.location = location
        self.field = field

    def format(self) -> str:
        where = f"{self.location}: " if self.location else ""
        at = f" (at {self.field})" if self.field else ""
        return f"{where}error: {self.message}{at}"

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


def format_path(path: tuple) -> str:
    """Render a field path like ('body', 'layer1', 'stage', 'depth') as body.layer1.stage.depth."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out

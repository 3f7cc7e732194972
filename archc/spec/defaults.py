"""`defaults:` settings per layer kind, checked where they are written.

Each setting is checked on its own against the primitive's field (type and range), so a value
that passes here is valid in every layer it reaches; the merge itself (the layer's own settings
win) happens as each primitive is expanded (`Expander.primitive`), inside block templates too.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Annotated, Any

from pydantic import TypeAdapter, ValidationError

from archc.errors import Location, Note, SpecError, format_path
from archc.primitives import PRIMITIVES
from archc.spec import expr
from archc.spec.loader import SourceMap


@cache
def _field(kind: str, name: str) -> TypeAdapter:
    field = PRIMITIVES[kind].Params.model_fields[name]
    if not field.metadata:  # a plain or union type (a conv's stride): Annotated needs metadata
        return TypeAdapter(field.annotation)
    return TypeAdapter(Annotated[(field.annotation, *field.metadata)])  # py3.10 syntax


class Defaults(dict):
    """kind -> its default settings, knowing where the spec wrote them (for errors a default
    causes in a layer far away, inside a block template)."""

    def __init__(self, settings: dict[str, dict[str, Any]], source: SourceMap):
        super().__init__(settings)
        self.source = source
        self._where: dict[tuple[str, str], tuple[Location | None, str]] = {}

    def where(self, kind: str, setting: str) -> tuple[Location | None, str]:
        """The location and field path of one default setting."""
        key = (kind, setting)
        if key not in self._where:
            path = ("defaults", kind, setting)
            self._where[key] = (self.source.locate(path), format_path(path))
        return self._where[key]

    def error(self, kind: str, used: dict[str, Any], cause: SpecError, layer: Note) -> SpecError:
        """`cause`, an error in one layer that only the defaults it took (`used`) bring about,
        reported at the default (the setting the error names, else the kind's entry) with the
        layer as a note."""
        named = [k for k in used if cause.field.endswith(f".{k}")] or (list(used) if len(used) == 1 else [])
        path = ("defaults", kind) + tuple(named[:1])
        shown = ", ".join(f"{k}: {v!r}" for k, v in used.items())
        message = cause.message.split(" (in block '")[0]
        error = self.source.error(f"the defaults for {kind} ({shown}) make a layer invalid: {message}", path)
        return error.note(layer.message, layer.location)


def kind_defaults(raw: dict[str, Any], source: SourceMap, params: dict[str, Any] | None = None) -> Defaults:
    """The checked defaults; a located error for an unknown kind or setting, or a bad value.
    A value may be a `${}` expression over the model's `params` (so a variant can set it)."""
    out: dict[str, dict[str, Any]] = {}
    for kind, settings in raw.items():
        path = ("defaults", kind)
        if kind not in PRIMITIVES:
            close = difflib.get_close_matches(kind, list(PRIMITIVES), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise source.error(f"defaults apply to layer kinds; {kind!r} is not one{hint}", path, key=True)
        if not isinstance(settings, dict):
            raise source.error(f"defaults for {kind} are a mapping of settings, got {settings!r}", path)
        fields = PRIMITIVES[kind].Params.model_fields
        settings = dict(settings)
        for name, value in settings.items():
            if expr.is_expression(value):
                try:
                    value = settings[name] = expr.evaluate(value[2:-1], params or {})
                except expr.ExprError as exc:
                    raise source.error(f"defaults: {kind} {name}: in {settings[name]}: {exc}", path + (name,)) from None
            if name not in fields:
                known = ", ".join(fields)
                raise source.error(f"{kind} has no setting {name!r} (settings: {known})", path + (name,), key=True)
            if fields[name].is_required():
                raise source.error(
                    f"{kind} {name} is what each layer says for itself; it has no default", path + (name,), key=True
                )
            try:
                _field(kind, name).validate_python(value)
            except ValidationError as exc:
                message = exc.errors()[0]["msg"]
                raise source.error(f"defaults: {kind} {name}: {message} (got {value!r})", path + (name,)) from None
        out[kind] = dict(settings)
    return Defaults(out, source)

"""A JSON Schema (draft 2020-12) of the spec format, for editors (`archc schema`).

Built from the pydantic models (SpecHeader, Template, InitRule, the combinators' options, each
primitive's Params) and the primitive, combinator and built-in block registries, so a field or
layer added to any of them appears here without editing this module. The schema is a help for
editors (completion, hover, early red squiggles): `archc validate` stays the authority, and
the schema errs on the permissive side where the spec language depends on values (user blocks,
`${...}` expressions). Never imports torch.
"""

from __future__ import annotations

import ast
import copy
import inspect
import json
import sys
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from archc.combinators import COMBINATORS
from archc.expand import META_KEYS
from archc.primitives import PRIMITIVES
from archc.spec.compose import PLACE_KEYS
from archc.spec.schema import INIT_ARGS, Head, InitRule, Projection, SpecHeader, Template

SCHEMA_ID = "https://archc.dev/schema/archc.schema.json"
EXPRESSION = {
    "type": "string",
    "pattern": r"^\$\{.*\}$",
    "description": "A ${...} expression, evaluated when the spec is expanded.",
}
NODE = {"$ref": "#/$defs/node"}
LAYERS = {"$ref": "#/$defs/layers"}
ANY_VALUE = {"description": "Any value (checked by archc validate)."}


@cache
def _classes(module: str) -> dict[str, ast.ClassDef]:
    """Every class a module defines, by qualified name (`Conv.Params`), parsed once."""
    found: dict[str, ast.ClassDef] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                found[prefix + node.name] = node
                visit(node.body, f"{prefix}{node.name}.")

    try:
        visit(ast.parse(inspect.getsource(sys.modules[module])).body, "")
    except (KeyError, OSError, TypeError, SyntaxError):
        pass
    return found


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings written under a model's fields (its bases' too): each field's description.
    Read from the source here, when a schema is written, and not by pydantic when the models
    are created (see archc.primitives.StrictModel)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is BaseModel or not issubclass(klass, BaseModel):
            continue
        node = _classes(klass.__module__).get(klass.__qualname__)
        body = node.body if node is not None else []
        for field, doc in zip(body, body[1:]):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant)
                and isinstance(doc.value.value, str)
            ):
                docs[field.target.id] = inspect.cleandoc(doc.value.value)
    return docs


class _Described(GenerateJsonSchema):
    """Pydantic's JSON Schema, each property described by the docstring under its field."""

    def model_schema(self, schema):
        json_schema = super().model_schema(schema)
        cls, docs = schema["cls"], field_docs(schema["cls"])
        properties = json_schema.get("properties", {})
        for name, field in cls.model_fields.items():
            prop = properties.get(field.alias or name)
            if name in docs and isinstance(prop, dict):
                prop.setdefault("description", docs[name])
        return json_schema


def _inline_refs(schema: dict) -> dict:
    """A pydantic model schema with its own `$defs` inlined (a standalone fragment)."""
    defs = schema.pop("$defs", {})

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            if "$ref" in value and value["$ref"].startswith("#/$defs/"):
                target = walk(copy.deepcopy(defs[value["$ref"].rsplit("/", 1)[1]]))
                return {**target, **{k: walk(v) for k, v in value.items() if k != "$ref"}}
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(schema)


def _allow_expressions(value: Any) -> Any:
    """Every number (or boolean) may also be written as a `${...}` expression."""
    if isinstance(value, list):
        return [_allow_expressions(v) for v in value]
    if not isinstance(value, dict):
        return value
    value = {k: _allow_expressions(v) for k, v in value.items()}
    if value.get("type") in ("integer", "number", "boolean"):
        keep = {k: value.pop(k) for k in ("description", "default", "title") if k in value}
        return {"anyOf": [value, EXPRESSION], **keep}
    return value


def _model(model: type, **replace: dict) -> dict:
    """The JSON Schema of a pydantic model, numbers accepting expressions, some properties
    replaced (keeping the model's description of them)."""
    schema = _allow_expressions(_inline_refs(model.model_json_schema(schema_generator=_Described)))
    _drop_titles(schema)
    for name, sub in replace.items():
        description = schema["properties"][name].get("description")
        schema["properties"][name] = {
            **sub,
            **({"description": description} if description else {}),
        }
    return schema


def _drop_titles(value: Any) -> None:
    """Pydantic's generated titles ("Out", "Params") say nothing the key does not."""
    if isinstance(value, dict):
        value.pop("title", None) if isinstance(value.get("title"), str) else None
        for v in value.values():
            _drop_titles(v)
    elif isinstance(value, list):
        for v in value:
            _drop_titles(v)


def _one_key(key: str, value: dict, description: str) -> dict:
    """A node written as a mapping with the one type key `key` (plus the meta keys)."""
    return {
        "type": "object",
        "description": description,
        "properties": {key: {"description": description, **value}, **_meta()},
        "required": [key],
        "additionalProperties": False,
    }


@cache
def _meta() -> dict:
    """The meta keys every node may have (the same objects in every node: never modified)."""
    meta = {
        "if": {
            "description": "Keep the layer only when this is true (a boolean or ${...} expression).",
            "anyOf": [{"type": "boolean"}, EXPRESSION],
        },
        "inline": {
            "description": "Register this combinator's layers on the parent (no module of its own): a seq's run in the parent's order, a parallel's branches still concatenated.",
            "anyOf": [{"type": "boolean"}, EXPRESSION],
        },
        "head": {
            **_model(Head),
            "description": "An auxiliary head (top-level layers only): reads the output of the earlier layer `from`, runs in train mode only, and is the model's extra output `output`.",
        },
    }
    assert set(meta) == set(META_KEYS), "archc.expand.META_KEYS changed"
    return meta


def _primitive_nodes() -> list[dict]:
    nodes = []
    for kind, prim in sorted(PRIMITIVES.items()):
        params = _model(prim.Params)
        params["description"] = f"{kind} settings."
        forms: list[dict] = [params, EXPRESSION]
        if prim.shorthand is not None:
            short = copy.deepcopy(params["properties"][prim.shorthand])
            short["description"] = f"Shorthand for {{{prim.shorthand}: value}}."
            forms.insert(1, short)
        if not params.get("required"):
            forms.append({"type": "null", "description": "All settings at their defaults."})
        nodes.append(_one_key(kind, {"anyOf": forms}, f"A {kind} layer."))
    return nodes


def _shortcut() -> dict:
    return {
        "anyOf": [
            {
                "enum": ["auto", "identity", "if_shapes_match"],
                "description": "auto: a projection only when the shape changes; if_shapes_match: "
                "the input added only where the body keeps its shape (MobileNet's use_res_connect).",
            },
            _one_key(
                "projection",
                {"anyOf": [_model(Projection), {"type": "null"}]},
                "A 1x1 conv projection.",
            ),
            _one_key(
                "custom", {"$ref": "#/$defs/named_layers"}, "A custom shortcut: {name: layer}."
            ),
        ]
    }


def _combinator_nodes() -> list[dict]:
    nodes = []
    for kind, comb in sorted(COMBINATORS.items()):
        if comb.options is None:
            value = LAYERS
        else:
            replace = {}
            fields = comb.options.model_fields
            if "body" in fields:  # layers (residual's), or one layer (for's, typed Any)
                replace["body"] = NODE if fields["body"].annotation is Any else LAYERS
            if "each" in fields:  # a list, written out or computed
                replace["each"] = {"anyOf": [{"type": "array"}, EXPRESSION]}
            if "shortcut" in fields:
                replace["shortcut"] = _shortcut()
            if "block" in fields:
                replace["block"] = {"type": "string"}
            if "branches" in fields:  # parallel's long form; its short form is its branches
                replace["branches"] = {"type": "object", "additionalProperties": NODE}
                replace["post"] = {"anyOf": [NODE, {"type": "array", "items": NODE}]}
            value = _model(comb.options, **replace)
            if value.get("additionalProperties") is True:
                value["additionalProperties"] = ANY_VALUE  # the repeated block's arguments
            if "branches" in fields:
                value = {"anyOf": [value, LAYERS]}
        description = comb.meaning.replace("`", "")
        nodes.append(_one_key(kind, value, f"{comb.syntax.replace('`', '')}: {description}"))
    return nodes


def _library_nodes() -> tuple[list[str], list[dict]]:
    from archc.compiler import library  # the built-in blocks, read from archc/blocks/*.yaml

    names, nodes = [], []
    for name, block in sorted(library().items()):
        params = block.template.params
        args = {
            "type": "object",
            "description": f"{name}'s arguments.",
            "properties": {
                p: {
                    "description": f"{p} (default: {json.dumps(d)})."
                    if d is not None
                    else f"{p} (required)."
                }
                for p, d in params.items()
            },
            "additionalProperties": False,
        }
        required = [p for p, d in params.items() if d is None]
        if required:
            args["required"] = required
        forms = [args] if required else [args, {"type": "null"}]
        names.append(name)
        nodes.append(
            _one_key(name, {"anyOf": forms}, block.template.doc or f"The built-in block {name}.")
        )
    return names, nodes


def _init() -> dict:
    kinds = sorted(INIT_ARGS)
    rule_args = _model(InitRule)["properties"]["args"]
    rule = {
        "description": "An initialiser: a name (zeros) or {name: {args}}.",
        "anyOf": [
            {"enum": kinds},
            *[
                _one_key(
                    k, {**rule_args, "description": f"{k}'s arguments."}, f"The {k} initialiser."
                )
                for k in kinds
            ],
        ],
    }
    for form in rule["anyOf"][1:]:
        for meta in META_KEYS:
            del form["properties"][meta]  # an initialiser has no meta keys
    tensors = {
        "type": "object",
        "properties": {
            "weight": {**rule, "description": "How the weight is initialised."},
            "bias": {**rule, "description": "How the bias is initialised."},
        },
        "additionalProperties": False,
    }
    weighted = sorted(k for k, p in PRIMITIVES.items() if p.has_weights)
    by_path = {
        **tensors,
        "properties": {
            **tensors["properties"],
            "if": {
                "description": "Apply the rule only when true (an expression over the model's "
                "parameters, e.g. the one switching the selected layers off).",
                "anyOf": [{"type": "boolean"}, EXPRESSION],
            },
        },
        "description": "Initialisation of the layers whose module path matches this key "
        "(classifier.1, AuxLogits.fc; * matches within a name, ** across names), replacing "
        "their kind's rule for the tensors it names. It must match a layer with weights.",
    }
    return {
        "type": "object",
        "properties": {
            k: {**tensors, "description": f"Initialisation of every {k}."} for k in weighted
        },
        "additionalProperties": by_path,
        # a key that names a layer kind is that kind (one without weights takes no init)
        "propertyNames": {"not": {"enum": sorted(k for k in PRIMITIVES if k not in weighted)}},
    }


def schema() -> dict:
    """The JSON Schema of a spec file."""
    library_names, library_nodes = _library_nodes()
    known = sorted({*PRIMITIVES, *COMBINATORS, *library_names})
    user_block = {
        "type": "object",
        "description": "A block defined in this spec, with its arguments.",
        "minProperties": 1,
        "propertyNames": {"not": {"enum": known}},
        "additionalProperties": ANY_VALUE,
    }
    node = {
        "description": "A layer: a kind or block name, a list of layers, or {kind: settings}.",
        "anyOf": [
            {
                "description": "A layer kind or block name.",
                "anyOf": [{"enum": known}, {"type": "string"}],
            },
            {"type": "array", "items": NODE, "description": "Layers in sequence."},
            *_primitive_nodes(),
            *_combinator_nodes(),
            *library_nodes,
            user_block,
        ],
    }
    template = _model(Template, body=NODE)
    template["properties"]["params"]["additionalProperties"] = ANY_VALUE
    top = _model(
        SpecHeader,
        body=LAYERS,
        init=_init(),
        blocks={"type": "object", "additionalProperties": {"$ref": "#/$defs/template"}},
    )
    top["properties"]["archc"]["const"] = 1
    _composition(top)
    top.update(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": SCHEMA_ID,
            "title": "archc spec",
            "$defs": {
                "node": node,
                "named_layers": {
                    "type": "object",
                    "description": "Named layers, in order.",
                    "additionalProperties": NODE,
                },
                "layers": {
                    "description": "Named layers in order (a mapping) or a list of layers.",
                    "anyOf": [{"$ref": "#/$defs/named_layers"}, {"type": "array", "items": NODE}],
                },
                "template": template,
            },
        }
    )
    return top


def _composition(top: dict) -> None:
    """`extends:` and `variants:` are merged away before SpecHeader sees them (archc.spec.compose),
    so they are added here; a spec that extends another may leave out what its base has, and a
    top-level layer may be `~` to delete an inherited one."""
    props = top["properties"]
    props["extends"] = {
        "type": "string",
        "description": "A base spec (path relative to this file) whose keys and layers this one merges over.",
    }
    props["variants"] = {
        "type": "object",
        "description": "Named sets of values: choose one with --variant NAME (variant= in the API).",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": False,
            "description": "One variant: the params, input and name it sets.",
            "properties": {
                "params": {"type": "object", "description": "Values for params the spec already has."},
                "input": props["input"],
                "name": {"type": "string", "description": "The model's name (default: the variant's key)."},
            },
        },
    }
    props["body"] = {
        "description": props["body"].get("description", "The network's layers."),
        "anyOf": [
            LAYERS,
            {
                "type": "object",
                "description": "Named layers; with extends, `~` deletes an inherited layer.",
                "additionalProperties": {"anyOf": [NODE, {"type": "null"}, _placed()]},
            },
        ],
    }
    required = top.pop("required", [])
    top["if"] = {"required": ["extends"]}
    top["else"] = {"required": required}


def _placed() -> dict:
    """A layer an extending spec places (archc.spec.compose.PLACE_KEYS): a new one, or an
    inherited one moved, `before:` or `after:` a layer of the merged body."""
    target = {"type": "string", "description": "The name of a layer of the merged body."}
    keys = {
        "before": {**target, "description": "Put this layer just before the named one (with extends)."},
        "after": {**target, "description": "Put this layer just after the named one (with extends)."},
    }
    assert tuple(keys) == PLACE_KEYS, "archc.spec.compose.PLACE_KEYS changed"
    return {
        "type": "object",
        "description": "A layer placed before or after another (only in a spec that extends one).",
        "properties": keys,
        "oneOf": [{"required": ["before"]}, {"required": ["after"]}],
    }


def dumps() -> str:
    """The schema as committed in schema/archc.schema.json: sorted keys, 2-space indent."""
    return json.dumps(schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

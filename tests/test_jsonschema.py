"""The JSON Schema for editors (`archc schema`, schema/archc.schema.json): current, valid for
every shipped spec, strict where archc is strict, and understood by yaml-language-server."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from archc.jsonschema import dumps, schema
from archc.primitives import PRIMITIVES

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_FILE = ROOT / "schema" / "archc.schema.json"
SPECS = sorted((ROOT / "specs").rglob("*.yaml"))
MODELINE = "# yaml-language-server: $schema="


@pytest.fixture(scope="module")
def validator():
    s = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(s)
    return jsonschema.Draft202012Validator(s)


def errors(validator, doc) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def test_committed_schema_is_current():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == dumps(), (
        "schema/archc.schema.json is stale: python -m archc schema > schema/archc.schema.json"
    )


def test_cli_prints_the_schema_without_torch():
    code = "import sys, archc.cli; rc = archc.cli.main(['schema']); assert 'torch' not in sys.modules; sys.exit(rc)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout == dumps()
    assert json.loads(out.stdout)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_property_is_described():
    missing = []

    def walk(value, path):
        if isinstance(value, dict):
            for name, sub in value.get("properties", {}).items():
                if "description" not in sub:
                    missing.append(f"{path}/properties/{name}")
            for k, v in value.items():
                walk(v, f"{path}/{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}/{i}")

    walk(schema(), "#")
    assert not missing, missing


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: str(p.relative_to(ROOT / "specs")))
def test_shipped_spec_validates_and_has_modeline(validator, spec):
    text = spec.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    target = os.path.relpath(SCHEMA_FILE, spec.parent).replace(os.sep, "/")
    assert first == MODELINE + target
    assert errors(validator, yaml.safe_load(text)) == []


def test_modeline_is_not_part_of_the_description():
    from archc.compiler import load

    spec = load(ROOT / "specs" / "resnet18.yaml")
    assert spec.comments and not any("yaml-language-server" in c for c in spec.comments)


BASE = {
    "archc": 1,
    "name": "m",
    "input": [3, 32, 32],
    "body": {"c": {"conv": {"out": 8, "kernel": 3}}, "r": "relu", "d": {"dropout": 0.5}},
}


def with_conv(**conv):
    doc = copy.deepcopy(BASE)
    doc["body"]["c"] = {"conv": conv}
    return doc


def test_base_document_is_valid(validator):
    assert errors(validator, BASE) == []
    assert errors(validator, with_conv(out="${width * 2}", kernel=[3, "${k}"], bias=False)) == []
    doc = copy.deepcopy(BASE)
    doc["blocks"] = {
        "mine": {"params": {"w": None}, "body": {"conv": {"out": "${w}", "kernel": 1}}}
    }
    doc["body"]["b"] = {"mine": {"w": 4}, "if": "${True}"}
    doc["body"]["l"] = {"bottleneck": {"width": 64, "stride": 2}}
    doc["body"]["s"] = {"stage": {"block": "basic", "depth": 2, "width": 64}}
    doc["body"]["res"] = {
        "residual": {"body": ["relu"], "shortcut": {"projection": {"always": True}}}
    }
    doc["init"] = {"conv": {"weight": {"kaiming_normal": {"mode": "fan_out"}}, "bias": "zeros"}}
    assert errors(validator, doc) == []


@pytest.mark.parametrize(
    "doc",
    [
        pytest.param(with_conv(out=8, kernel=3, kernal=3), id="unknown-conv-key"),
        pytest.param(with_conv(out=8, kernel=[3, 3, 3]), id="kernel-of-three"),
        pytest.param(with_conv(out=8, kernel="3x3"), id="kernel-not-a-number"),
        pytest.param(with_conv(kernel=3), id="conv-without-out"),
        pytest.param(with_conv(out=0, kernel=3), id="zero-channels"),
        pytest.param({**BASE, "bodyy": {}}, id="unknown-top-level-key"),
        pytest.param({k: v for k, v in BASE.items() if k != "input"}, id="missing-input"),
        pytest.param({**BASE, "archc": 2}, id="wrong-version"),
        pytest.param(
            {**BASE, "body": {"c": {"conv": {"out": 8, "kernel": 3}, "relu": None}}}, id="two-kinds"
        ),
        pytest.param(
            {**BASE, "body": {"b": {"bottleneck": {"widht": 64}}}}, id="unknown-block-argument"
        ),
        pytest.param(
            {**BASE, "body": {"b": {"bottleneck": {"stride": 2}}}}, id="missing-block-argument"
        ),
        pytest.param({**BASE, "init": {"relu": {"weight": "zeros"}}}, id="init-without-weights"),
        pytest.param({**BASE, "init": {"conv": {"weight": "zeroes"}}}, id="unknown-initialiser"),
        pytest.param(
            {**BASE, "body": {"p": {"maxpool": {"kernel": 2, "ceil": True}}}}, id="unknown-pool-key"
        ),
    ],
)
def test_mistakes_are_flagged(validator, doc):
    assert errors(validator, doc), "the schema accepted a spec archc refuses"


def test_mistakes_are_refused_by_archc_too(tmp_path):
    """The flagged mistakes above are real ones: archc validate refuses them as well."""
    from archc.compiler import load
    from archc.errors import ArchcError

    for conv in (
        {"out": 8, "kernel": 3, "kernal": 3},
        {"out": 8, "kernel": [3, 3, 3]},
        {"kernel": 3},
    ):
        path = tmp_path / "m.yaml"
        path.write_text(yaml.safe_dump(with_conv(**conv)), encoding="utf-8")
        with pytest.raises(ArchcError):
            load(path)


def test_every_primitive_has_a_branch():
    node = schema()["$defs"]["node"]["anyOf"]
    keyed = {k for branch in node for k in branch.get("required", [])}
    assert set(PRIMITIVES) <= keyed

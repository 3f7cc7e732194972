"""The JSON Schema for editors (`archc schema`, schema/archc.schema.json): current, valid for
every shipped spec, strict where archc is strict, and understood by yaml-language-server."""

from __future__ import annotations

import copy
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
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

    spec = load(ROOT / "specs" / "resnet.yaml")
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


# ---- yaml-language-server over LSP stdio -------------------------------------------------

LSP_DIR = ROOT / ".cache" / "lsp"


def _server() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("yaml-language-server test: node is not installed")
    found = os.environ.get("ARCHC_YAML_LANGUAGE_SERVER") or next(
        (
            str(p)
            for p in (
                LSP_DIR / "node_modules" / "yaml-language-server" / "bin" / "yaml-language-server",
            )
            if p.exists()
        ),
        None,
    )
    if found is None:
        pytest.skip(
            "yaml-language-server test: the server is not installed "
            "(npm install --prefix .cache/lsp yaml-language-server; scripts/test.sh does it)"
        )
    return [node, found, "--stdio"]


class Lsp:
    def __init__(self, command: list[str]):
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self.next_id = 0
        self.notifications: list[dict] = []
        self.deadline = time.monotonic() + 20
        self.inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def send(self, method: str, params: dict, *, request: bool = True) -> int | None:
        message: dict = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        body = json.dumps(message).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()
        return message.get("id")

    def _pump(self) -> None:
        """Read the server's messages into a queue (a reader thread: reads can then time out)."""
        stdout = self.proc.stdout
        while True:
            length = 0
            while True:
                line = stdout.readline()
                if not line:
                    self.inbox.put(None)
                    return
                if line in (b"\r\n", b"\n"):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            self.inbox.put(json.loads(stdout.read(length)))

    def read(self) -> dict:
        remaining = self.deadline - time.monotonic()
        try:
            message = self.inbox.get(timeout=max(remaining, 0.01))
        except queue.Empty:
            raise TimeoutError("yaml-language-server did not answer in time") from None
        if message is None:
            raise RuntimeError("yaml-language-server exited")
        return message

    def request(self, method: str, params: dict) -> dict:
        wanted = self.send(method, params)
        while True:
            message = self.read()
            if message.get("id") == wanted and "method" not in message:
                return message.get("result")
            self._other(message)

    def _other(self, message: dict) -> None:
        if "method" in message and "id" in message:  # a request from the server: answer it
            result = (
                [{}] * len(message["params"].get("items", []))
                if message["method"] == "workspace/configuration"
                else None
            )
            body = json.dumps({"jsonrpc": "2.0", "id": message["id"], "result": result}).encode()
            self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.proc.stdin.flush()
        elif "method" in message:
            self.notifications.append(message)

    def diagnostics(self, uri: str) -> list[dict]:
        """The first non-empty diagnostics published for `uri` (an empty list: none in time)."""
        while True:
            for n in self.notifications:
                if (
                    n["method"] == "textDocument/publishDiagnostics"
                    and n["params"]["uri"] == uri
                    and n["params"]["diagnostics"]
                ):
                    return n["params"]["diagnostics"]
            try:
                self._other(self.read())
            except TimeoutError:
                return []

    def close(self) -> None:
        try:
            self.deadline = time.monotonic() + 5
            self.request("shutdown", {})
            self.send("exit", {}, request=False)
            self.proc.wait(timeout=5)
        except Exception:
            self.proc.kill()


def test_yaml_language_server_completes_and_flags(tmp_path):
    command = _server()
    schema_uri = SCHEMA_FILE.as_uri()
    text = (
        f"# yaml-language-server: $schema={schema_uri}\n"
        "archc: 1\n"
        "name: m\n"
        "input: [3, 32, 32]\n"
        "body:\n"
        "  c1:\n"
        "    conv:\n"
        "      out: 8\n"
        "      kernal: 3\n"
        "      \n"
    )
    lines = text.splitlines()
    typo_line = lines.index("      kernal: 3")
    blank_line = len(lines) - 1
    doc = tmp_path / "m.yaml"
    doc.write_text(text, encoding="utf-8")
    uri = doc.as_uri()
    lsp = Lsp(command)
    try:
        lsp.request("initialize", {
            "processId": os.getpid(), "rootUri": tmp_path.as_uri(),
            "capabilities": {"textDocument": {"completion": {"completionItem": {"snippetSupport": False}}}},
        })  # fmt: skip
        lsp.send("initialized", {}, request=False)
        settings = {"yaml": {"validate": True, "completion": True, "hover": True, "schemas": {}}}
        lsp.send("workspace/didChangeConfiguration", {"settings": settings}, request=False)
        lsp.send("textDocument/didOpen", {
            "textDocument": {"uri": uri, "languageId": "yaml", "version": 1, "text": text},
        }, request=False)  # fmt: skip
        result = lsp.request("textDocument/completion", {
            "textDocument": {"uri": uri}, "position": {"line": blank_line, "character": 6},
        })  # fmt: skip
        items = result["items"] if isinstance(result, dict) else result
        labels = {item["label"] for item in items or []}
        assert {"kernel", "stride", "padding", "groups"} <= labels, sorted(labels)
        lsp.deadline = time.monotonic() + 8  # diagnostics follow the open within a second
        diagnostics = lsp.diagnostics(uri)
        assert any(d["range"]["start"]["line"] == typo_line for d in diagnostics), diagnostics
    finally:
        lsp.close()


def test_extends_and_variants_are_part_of_the_format(validator):
    """What archc.spec.compose merges away is still what people write: the schema accepts it."""
    child = {"extends": "resnet50.yaml", "params": {"num_classes": 2}, "body": {"fc": None}}
    assert errors(validator, child) == []  # a child may leave out what its base has
    family = {
        "archc": 1, "name": "resnet", "input": [3, 224, 224], "params": {"depths": [2, 2, 2, 2]},
        "variants": {"resnet50": {"params": {"depths": [3, 4, 6, 3]}, "input": [3, 160, 160]}},
        "body": {"fc": {"linear": 10}},
    }  # fmt: skip
    assert errors(validator, family) == []
    assert errors(validator, {**family, "variants": {"v": {"parms": {}}}})  # misspelt key
    assert errors(validator, {"params": {"num_classes": 2}, "body": {"fc": None}})  # no base


def test_an_extending_spec_places_layers_before_and_after(validator, tmp_path):
    """`before:`/`after:` (a new layer, or an inherited one moved) are part of the format, and
    the schema accepts exactly what archc composes."""
    import archc

    child = {
        "extends": "base.yaml",
        "body": {"dropout": {"dropout": 0.2, "before": "fc"}, "pool": {"after": "conv"}},
    }
    assert errors(validator, child) == []
    # an editor completes and documents the two keys inside a layer of an extending spec
    named = validator.schema["properties"]["body"]["anyOf"][1]["additionalProperties"]["anyOf"]
    placed = next(form for form in named if "before" in form.get("properties", {}))
    assert set(placed["properties"]) == {"before", "after"}
    assert all(p["description"] and p["type"] == "string" for p in placed["properties"].values())
    base = "archc: 1\nname: b\ninput: [3, 8, 8]\nbody:\n  conv: {conv: {out: 4, kernel: 3}}\n"
    base += "  pool: {adaptive_avgpool: 1}\n  flat: flatten\n  fc: {linear: 2}\n"
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(child))
    spec = archc.load(tmp_path / "child.yaml")
    assert [c.name for c in spec.tree.children] == ["conv", "pool", "flat", "dropout", "fc"]

"""Hostile spec files (invariant 5): each is refused quickly with a located message, exit 1,
nothing executed and nothing written.

Every case runs `archc validate` in-process and must finish in well under a second of wall
time; a few also go through a fresh interpreter and `archc build --save`, to check the exit
status, that no traceback is printed and that no file appears.
"""

from __future__ import annotations

import ast
import io
import random
import re
import resource
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml

from archc.cli import main
from archc.spec import loader
from archc.spec.expr import MAX_EXPR_CHARS
from archc.spec.loader import MAX_DEPTH, MAX_SPEC_BYTES, MAX_VALUES
from conftest import ROOT, run_archc

# CPU seconds this process spends refusing one input: a blow-up or hang needs far more; CPU time,
# not wall time, so a busy machine does not fail the test
LIMIT_S = 2.0
HEAD = "archc: 1\nname: t\ninput: [3, 8, 8]\n"
GOOD_BODY = "body:\n  r: relu\n"


def lol(levels: int = 9, width: int = 9) -> str:
    """The "billion laughs": each level refers `width` times to the one before."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def python_tag(marker: Path, tag: str = "!!python/object/apply:os.system") -> str:
    return f"{tag} ['touch {marker}']"


# (id, file bytes or a function of the marker path, words the message must contain)
CASES = [
    ("empty", b"", "spec is empty"),
    ("only-whitespace", b"   \n\n  \n", "spec is empty"),
    ("only-comments", b"# nothing here\n# at all\n", "spec is empty"),
    ("document-marker-only", b"---\n...\n", "spec is empty"),
    ("null-document", b"~\n", "spec is empty"),
    ("top-level-list", b"- archc\n- 1\n", "a spec is a mapping"),
    ("top-level-string", b"just some words\n", "a spec is a mapping"),
    ("top-level-number", b"42\n", "a spec is a mapping"),
    ("two-documents", (HEAD + GOOD_BODY + "---\n" + HEAD + GOOD_BODY).encode(), "one YAML document"),
    ("invalid-utf8", HEAD.encode() + b"body:\n  r: \xff\xfe relu\n", "not valid UTF-8"),
    ("utf16-file", (HEAD + GOOD_BODY).encode("utf-16"), "not valid UTF-8"),
    ("nul-bytes", HEAD.encode() + b"body:\n  r: re\x00lu\n", "NUL"),
    ("control-char", HEAD.encode() + b"body:\n  r: re\x07lu\n", "control characters"),
    ("escape-sequence", HEAD.encode() + b"name2: \x1b[2J\n", "control characters"),
    ("png-header", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10", "not valid UTF-8"),
    ("elf-header", b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)), "not valid UTF-8"),
    ("nul-in-ascii", b"archc: 1\x00\x00\x00name", "NUL"),
    ("random-bytes", random.Random(5).randbytes(4096), "not valid UTF-8"),
    ("billion-laughs", lol().encode(), "alias bomb"),
    ("billion-laughs-in-body", (HEAD + lol(6).replace("\n", "\n  ").join(["params:\n  ", ""]) + GOOD_BODY).encode(), "alias bomb"),
    ("quadratic-blowup", ("big: &big [" + ", ".join(["1"] * 1000) + "]\nuse: [" + ", ".join(["*big"] * 1000) + "]\n").encode(), "alias bomb"),
    ("recursive-alias", b"a: &a [1, *a]\n", "contains it"),
    ("undefined-alias", (HEAD + "body: *nothing\n").encode(), "no anchor"),
    ("merge-key", (HEAD + "base: &b {x: 1}\nother:\n  <<: *b\n" + GOOD_BODY).encode(), "plain names"),
    ("deep-flow-lists", b"body: " + b"[" * 200_000, f"nested more than {MAX_DEPTH}"),
    ("deep-flow-maps", b"body: " + b"{a: " * 100_000, f"nested more than {MAX_DEPTH}"),
    ("deep-block-lists", b"body: " + b"- " * 200_000 + b"x\n", "invalid YAML"),
    ("deep-block-maps", "".join(" " * i + f"k{i}:\n" for i in range(1000)).encode(), f"nested more than {MAX_DEPTH}"),
    ("deep-complex-keys", b"? " * 100_000 + b"x\n", "plain names"),
    # refused as a non-name key or for its depth, whichever the YAML parser reaches first
    ("deep-list-keys", b"? " + b"[" * 100_000 + b"\n", ("plain names", f"nested more than {MAX_DEPTH}")),
    ("deep-indented-lists", "".join(" " * i + "-\n" for i in range(1000)).encode(), f"nested more than {MAX_DEPTH}"),
    ("deep-alias-nesting", ("x: &x " + "[" * 40 + "1" + "]" * 40 + "\ny: " + "[" * 30 + "*x" + "]" * 30 + "\n").encode(), f"nested more than {MAX_DEPTH}"),
    ("many-values", ("description: [" + ", ".join(["1"] * (MAX_VALUES + 10)) + "]\n").encode(), f"more than {MAX_VALUES:,} keys and values"),
    ("huge-integer", (HEAD + "body:\n  c: {conv: {out: " + "9" * 10_000 + ", kernel: 1}}\n").encode(), "not a number"),
    ("huge-width", (HEAD + "body:\n  c: {conv: {out: 1000000000000, kernel: 1}}\n").encode(), "less than or equal to"),
    ("huge-depth", (HEAD + "body:\n  s: {stage: {block: basic, depth: 1000000000, width: 8}}\n").encode(), "less than or equal to"),
    ("huge-input", b"archc: 1\nname: t\ninput: [3, 1000000, 1000000]\n" + GOOD_BODY.encode(), "less than or equal to"),
    ("huge-channels", b"archc: 1\nname: t\ninput: [100000000, 8, 8]\n" + GOOD_BODY.encode(), "less than or equal to"),
    ("huge-features", b"archc: 1\nname: t\ninput: [10000000]\n" + GOOD_BODY.encode(), "less than or equal to"),
    ("huge-kernel", (HEAD + "body:\n  c: {conv: {out: 8, kernel: 100000}}\n").encode(), "less than or equal to"),
    ("nested-stages-explode", (HEAD + "blocks:\n  a:\n    body: {stage: {block: b, depth: 10000}}\n  b:\n    body: {stage: {block: c, depth: 10000}}\n  c:\n    body: relu\nbody:\n  s: {stage: {block: a, depth: 10000}}\n").encode(), "layers"),
    ("exponential-blocks", (HEAD + "blocks:\n" + "".join(f"  b{i}:\n    body: [b{i + 1}, b{i + 1}]\n" for i in range(40)) + "  b40:\n    body: relu\nbody:\n  x: b0\n").encode(), "layers"),
    ("self-recursive-block", (HEAD + "blocks:\n  me:\n    body: [relu, me]\nbody:\n  x: me\n").encode(), "uses itself"),
    ("mutually-recursive-blocks", (HEAD + "blocks:\n  a:\n    body: [b]\n  b:\n    body: [a]\nbody:\n  x: a\n").encode(), "uses itself"),
    ("long-expression", (HEAD + "body:\n  c: {conv: {out: '${" + "1+" * MAX_EXPR_CHARS + "1}', kernel: 1}}\n").encode(), "longer than"),
    ("expression-escape", (HEAD + "body:\n  c: {conv: {out: \"${().__class__.__bases__[0].__subclasses__()}\", kernel: 1}}\n").encode(), "unknown function"),
    ("expression-import", (HEAD + "body:\n  c: {conv: {out: \"${__import__('os').system('true')}\", kernel: 1}}\n").encode(), "unknown function"),
    ("expression-lambda", (HEAD + "body:\n  c: {conv: {out: '${(lambda: 1)()}', kernel: 1}}\n").encode(), "unknown function"),
    ("expression-attribute", (HEAD + "params: {w: 8}\nbody:\n  c: {conv: {out: '${w.real}', kernel: 1}}\n").encode(), "not allowed"),
    ("expression-string", (HEAD + "body:\n  c: {conv: {out: \"${'a' * 10}\", kernel: 1}}\n").encode(), "only numbers"),
    ("expression-huge-power", (HEAD + "body:\n  c: {conv: {out: '${9 ** 9 ** 9}', kernel: 1}}\n").encode(), "too large"),
    ("expression-string-repeat", (HEAD + "params: {s: abc}\nbody:\n  c: {conv: {out: '${s * 1000000000000}', kernel: 1}}\n").encode(), "needs numbers"),
    ("expression-round-hang", (HEAD + "body:\n  c: {conv: {out: '${round(5, -1000000000000000)}', kernel: 1}}\n").encode(), "ndigits"),
    ("long-unknown-kind", (HEAD + "body:\n  r: " + "x" * 500_000 + "\n").encode(), "unknown layer"),
    ("long-key", (HEAD + "body:\n  " + "k" * 500_000 + ": relu\n").encode(), ""),
    ("many-keys", (HEAD + "params: {" + ", ".join(f"p{i}: {i}" for i in range(MAX_VALUES + 10)) + "}\n" + GOOD_BODY).encode(), "values"),
]

TAGS = [
    "!!python/object/apply:os.system",
    "!!python/object/new:os.system",
    "!!python/object/apply:subprocess.check_call",
    "!<tag:yaml.org,2002:python/object/apply:os.system>",
]


def run_validate(path: Path) -> tuple[int, str, str, float]:
    out, err = io.StringIO(), io.StringIO()
    start = time.process_time()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["validate", str(path)])
    return code, out.getvalue(), err.getvalue(), time.process_time() - start


def assert_refused(path: Path, raw: bytes, words: str, limit: float = LIMIT_S) -> str:
    code, out, err, seconds = run_validate(path)
    assert code == 1, (out, err)
    assert seconds < limit, f"took {seconds:.2f} s of CPU"
    first = err.splitlines()[0]
    match = re.match(rf"^{re.escape(str(path))}:(\d+):(\d+): error: ", first)
    assert match, err
    breaks = re.findall(rb"\r\n?|\n", raw)  # editors' line breaks: \n, \r\n and \r
    lines = max(1, len(breaks) + (0 if raw.endswith((b"\n", b"\r")) else 1))
    assert 1 <= int(match[1]) <= lines, first
    assert any(w in first for w in ((words,) if isinstance(words, str) else words)), first
    assert "invalid YAML: exceeded" not in first, "archc's own limit, not the parser's wording"
    assert len(first) < 2000, "the message should stay readable"
    assert "Traceback" not in err and "internal error" not in err, err
    return first


# Files that are merely big (tens of thousands of values or layers, under the byte limit) are
# real work to read before they can be refused: they get seconds, not the one-second bound.
# (A stage or dense block that would pass the layer limit is refused after its first block,
# so nested-stages-explode keeps the one-second bound; exponential-blocks nests plain lists.)
BIG = {"many-values", "many-keys", "exponential-blocks"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_hostile_file_is_refused_quickly(case, tmp_path):
    name, raw, words = case
    path = tmp_path / "hostile.yaml"
    path.write_bytes(raw)
    before = set(tmp_path.iterdir())
    assert_refused(path, raw, words, limit=5.0 if name in BIG else LIMIT_S)
    assert set(tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("where", ["top", "value", "key", "block", "nested"])
def test_python_tags_never_run(tag, where, tmp_path):
    marker = tmp_path / "PWNED"
    payload = python_tag(marker, tag)
    text = {
        "top": payload + "\n",
        "value": HEAD + "body:\n  r: " + payload + "\n",
        "key": HEAD + "body:\n  ? " + payload + "\n  : relu\n",
        "block": HEAD + "blocks:\n  b:\n    body: " + payload + "\n" + GOOD_BODY,
        "nested": HEAD + "params:\n  a: {b: [1, {c: " + payload + "}]}\n" + GOOD_BODY,
    }[where]
    path = tmp_path / "tagged.yaml"
    path.write_text(text)
    first = assert_refused(path, text.encode(), "")
    assert "unsupported YAML tag" in first or "plain names" in first
    assert not marker.exists()


def test_tag_directives_cannot_smuggle_python_tags(tmp_path):
    marker = tmp_path / "PWNED"
    text = f"%TAG !p! tag:yaml.org,2002:python/\n---\nx: !p!object/apply:os.system ['touch {marker}']\n"
    path = tmp_path / "directive.yaml"
    path.write_text(text)
    assert "unsupported YAML tag" in assert_refused(path, text.encode(), "")
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, line",
    [
        (HEAD + "name: again\n" + GOOD_BODY, 4),
        (HEAD + "body:\n  r: relu\n  r: relu\n", 6),
        (HEAD + "body:\n  c: {conv: {out: 8, kernel: 3, out: 9}}\n", 5),
        (HEAD + "body:\n  s:\n    stage:\n      block: basic\n      depth: 1\n      block: basic\n", 9),
        (HEAD + "params: {a: 1, a: 2}\n" + GOOD_BODY, 4),
        (HEAD + "blocks:\n  b:\n    params: {w: ~}\n    params: {w: 1}\n    body: relu\n" + GOOD_BODY, 7),
        (HEAD + "init:\n  conv: {weight: zeros, weight: ones}\n" + GOOD_BODY, 5),
        (HEAD + "params: {1: a, '1': b}\n" + GOOD_BODY, 4),  # the same name once read
        (HEAD + "body:\n  - r:\n      residual:\n        body: [relu]\n        body: [relu]\n", 8),
    ],
)
def test_duplicate_keys_at_any_depth(text, line, tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    first = assert_refused(path, text.encode(), "duplicate key")
    assert first.startswith(f"{path}:{line}:")


def test_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as handle:  # sparse: 64 GiB on paper, nothing on disk
        handle.truncate(64 << 30)
    first = assert_refused(path, b"", "the limit is")
    assert f"{MAX_SPEC_BYTES:,}" in first


def test_file_just_over_the_size_limit(tmp_path):
    raw = (HEAD + GOOD_BODY).encode()
    raw += b"#" * (MAX_SPEC_BYTES + 1 - len(raw))
    path = tmp_path / "big.yaml"
    path.write_bytes(raw)
    assert_refused(path, raw, "the limit is")


def test_loads_refuses_oversized_text_too():
    import archc
    from archc.errors import SpecError

    with pytest.raises(SpecError, match="limit"):
        archc.loads(HEAD + GOOD_BODY + "#" * MAX_SPEC_BYTES)
    with pytest.raises(SpecError, match="limit"):  # fewer characters than bytes
        archc.loads(HEAD + GOOD_BODY + "#" + "é" * (MAX_SPEC_BYTES // 2))


@pytest.mark.parametrize("what", ["missing", "directory", "/dev/zero", "/dev/urandom", "/dev/null"])
def test_unreadable_or_endless_paths_are_spec_errors(what, tmp_path):
    path = Path(what) if what.startswith("/dev/") else tmp_path / "spec.yaml"
    if what == "directory":
        path.mkdir()
    if what.startswith("/dev/") and not path.exists():
        pytest.skip(f"no {what} here")
    code, _, err, seconds = run_validate(path)  # /dev/zero has no size: read a bounded amount
    assert code == 1 and err.startswith(f"{path}:1:1: error: ") and "Traceback" not in err
    assert seconds < LIMIT_S


def test_hostile_spec_through_the_cli_writes_nothing(tmp_path):
    marker = tmp_path / "PWNED"
    spec = tmp_path / "evil.yaml"
    spec.write_text(HEAD + "body:\n  r: " + python_tag(marker) + "\n")
    save = tmp_path / "weights.pt"
    result = run_archc("build", str(spec), "--save", str(save), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"{spec}:5:")
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not marker.exists() and not save.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.yaml"]


def test_alias_bomb_through_the_cli_is_quick(tmp_path):
    spec = tmp_path / "lol.yaml"
    spec.write_text(lol())
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_archc("validate", str(spec))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert result.returncode == 1 and "alias bomb" in result.stderr and "Traceback" not in result.stderr
    assert cpu < 10  # CPU seconds, interpreter start-up included; the refusal itself is milliseconds


def test_aliases_within_the_limits_still_work(tmp_path):
    import archc

    text = HEAD + "params:\n  widths: &w [4, 8]\n  again: *w\nbody:\n  c: &conv {conv: {out: 4, kernel: 3, padding: 1}}\n  d: *conv\n"
    spec = archc.loads(text, "f.yaml")
    assert spec.params["again"] == [4, 8] and spec.output_shape == (4, 8, 8)


# ---- invariant 5, read from the source: nothing in archc evaluates, executes or imports data ----

FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_ATTRS = {
    ("yaml", "load"), ("yaml", "load_all"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
    ("yaml", "unsafe_load_all"), ("yaml", "full_load_all"), ("pickle", "load"), ("pickle", "loads"),
    ("marshal", "loads"), ("importlib", "import_module"), ("torch", "load"),
}  # fmt: skip


def safe_torch_load(call: ast.Call) -> bool:
    """torch.load(..., weights_only=True): tensors and plain containers, never pickled code."""
    return any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def test_archc_source_never_evaluates_or_imports_spec_data():
    problems = []
    for file in sorted((ROOT / "archc").rglob("*.py")):
        tree = ast.parse(file.read_text(), str(file))
        for node in ast.walk(tree):
            where = f"{file.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                    problems.append(f"{where}: {func.id}()")
                if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                    if (func.value.id, func.attr) in FORBIDDEN_ATTRS and not (
                        (func.value.id, func.attr) == ("torch", "load") and safe_torch_load(node)
                    ):
                        problems.append(f"{where}: {func.value.id}.{func.attr}()")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "marshal", "importlib", "dill") for n in names):
                    problems.append(f"{where}: import {', '.join(n for n in names if n)}")
            if isinstance(node, ast.keyword) and node.arg == "Loader":
                text = ast.unparse(node.value)
                if text not in ("yaml.SafeLoader", "yaml.CSafeLoader", "SafeLoader", "_Parser"):
                    problems.append(f"{where}: Loader={text}")
    assert problems == []
    assert loader._Parser in (yaml.SafeLoader, yaml.CSafeLoader)

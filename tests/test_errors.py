"""Invariant 4: a bad spec gives `FILE:LINE:COL: error: ...` at the offending node, exit 1."""

from __future__ import annotations

import textwrap

import pytest

from archc.cli import main
from conftest import assert_spec_error, run_archc

HEAD = "archc: 1\nname: t\ninput: [3, 32, 32]\n"

# (id, spec text, line the error must point at, words the message must contain)
CASES = [
    ("wrong-type-out", HEAD + "body:\n  c: {conv: {out: wide, kernel: 3}}\n", 5, "out should be a valid integer"),
    ("string-number", HEAD + "body:\n  c: {conv: {out: '64', kernel: 3}}\n", 5, "out should be a valid integer"),
    ("negative-out", HEAD + "body:\n  c: {conv: {out: -1, kernel: 3}}\n", 5, "greater than or equal to 1"),
    ("unknown-conv-key", HEAD + "body:\n  c: {conv: {out: 8, kernel: 3, strid: 2}}\n", 5, "unknown field 'strid'"),
    ("missing-kernel", HEAD + "body:\n  c: {conv: {out: 8}}\n", 5, "needs field 'kernel'"),
    ("unknown-top-key", HEAD + "bodyy: {}\nbody:\n  r: relu\n", 4, "unknown field 'bodyy'"),
    ("template-body-needs-seq", HEAD + "blocks:\n  b: {body: {c: relu}}\nbody:\n  x: b\n", 5, "put them under seq"),
    ("missing-body", HEAD, 1, "needs field 'body'"),
    ("missing-input", "archc: 1\nname: t\nbody:\n  r: relu\n", 1, "needs field 'input'"),
    ("bad-version", "archc: 2\nname: t\ninput: [3, 8, 8]\nbody:\n  r: relu\n", 1, "archc"),
    ("bad-input-rank", "archc: 1\nname: t\ninput: [3, 8]\nbody:\n  r: relu\n", 3, "input is"),
    ("duplicate-key", HEAD + "body:\n  c: relu\n  c: relu\n", 6, "duplicate key 'c'"),
    ("duplicate-nested-key", HEAD + "body:\n  c: {conv: {out: 8, out: 9, kernel: 1}}\n", 5, "duplicate key 'out'"),
    ("yaml-syntax", HEAD + "body:\n  c: {conv: {out: 8, kernel: 3}}}\n  d: relu\n", 5, "invalid YAML"),
    ("yaml-tab-indent", HEAD + "body:\n\tc: relu\n", 5, "invalid YAML"),
    ("unknown-layer", HEAD + "body:\n  c: {convv: {out: 8, kernel: 3}}\n", 5, "did you mean 'conv'"),
    ("unknown-block", HEAD + "body:\n  s: {stage: {block: bottlenek, depth: 2, width: 8}}\n", 5, "unknown block type 'bottlenek'"),
    ("kernel-too-big", HEAD + "body:\n  c: {conv: {out: 8, kernel: 40}}\n", 5, "larger than the padded input"),
    ("spatial-reaches-zero", HEAD + "body:\n  a: {maxpool: 2}\n  b: {maxpool: 2}\n  c: {maxpool: 2}\n  d: {maxpool: 2}\n  e: {maxpool: 2}\n  f: {maxpool: 2}\n", 10, "larger than the padded input"),
    ("groups-dont-divide", HEAD + "body:\n  c: {conv: {out: 8, kernel: 3, groups: 2}}\n", 5, "groups=2 must divide"),
    ("bad-block-param", HEAD + "body:\n  s: {stage: {block: bottleneck, depth: 2, width: 8, widht: 3}}\n", 5, "no parameter 'widht'"),
    ("missing-block-param", HEAD + "body:\n  s: {stage: {block: bottleneck, depth: 2}}\n", 5, "needs parameter 'width'"),
    ("block-param-bad-value", HEAD + "body:\n  s: {stage: {block: bottleneck, depth: 2, width: 0}}\n", 5, "requires"),
    ("block-param-bad-type", HEAD + "body:\n  s: {stage: {block: basic, depth: 2, width: 8, groups: 2}}\n", 5, "requires groups == 1"),
    ("depth-zero", HEAD + "body:\n  s: {stage: {block: basic, depth: 0, width: 8}}\n", 5, "greater than or equal to 1"),
    ("bad-expression", HEAD + "params: {w: 8}\nbody:\n  c: {conv: {out: '${w.__class__}', kernel: 1}}\n", 6, "not allowed"),
    ("unknown-variable", HEAD + "body:\n  c: {conv: {out: '${width}', kernel: 1}}\n", 5, "unknown name 'width'"),
    ("two-kinds-in-node", HEAD + "body:\n  c: {conv: {out: 8, kernel: 1}, relu: {}}\n", 5, "one type"),
    ("bad-name", HEAD + "body:\n  a.b: relu\n", 5, "cannot contain '.'"),
    ("reserved-name", HEAD + "body:\n  forward: relu\n", 5, "reserved"),
    ("residual-mismatch", HEAD + "body:\n  r:\n    residual:\n      body: {c: {conv: {out: 8, kernel: 3, padding: 1}}}\n      shortcut: identity\n", 7, "residual body gives"),
    ("inplace-on-shared-input", HEAD + "body:\n  r:\n    residual:\n      body:\n        act: {relu: {inplace: true}}\n        c: {conv: {out: 3, kernel: 1}}\n      shortcut: identity\n", 8, "also fed to the shortcut"),
    ("inplace-in-parallel-branch", HEAD + "body:\n  p:\n    parallel:\n      a: [{relu: {inplace: true}}]\n      b: identity\n", 7, "also fed to the other branches"),
    ("bad-init", HEAD + "init:\n  conv: {weight: {kaiming_normal: {mode: fan_sideways}}}\nbody:\n  r: relu\n", 5, "kaiming_normal"),
    ("init-unknown-kind", HEAD + "init:\n  relu: {weight: zeros}\nbody:\n  r: relu\n", 5, "init applies to layers with weights"),
    ("user-block-error-inside", HEAD + textwrap.dedent("""\
        blocks:
          mine:
            params: {w: ~}
            body:
              seq:
                c: {conv: {out: '${w}', kernel: 3, stirde: 1}}
        body:
          m: {mine: {w: 4}}
        """), 9, "unknown field 'stirde'"),
    ("shadow-library-block", HEAD + "blocks:\n  basic: {body: relu}\nbody:\n  r: relu\n", 5, "already defined"),
    ("non-mapping-top", "- just\n- a list\n", 1, "a spec is a mapping"),
    ("empty-file", "", 1, "empty"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_points_at_line(case, write_spec, capsys):
    _, text, line, words = case
    assert_spec_error(write_spec(text), line, words, capsys)


def test_field_path_is_named(write_spec, capsys):
    path = write_spec(HEAD + "body:\n  c: {conv: {out: 8, kernel: 3, stride: 0}}\n")
    assert main(["validate", str(path)]) == 1
    assert "(at body.c.conv.stride)" in capsys.readouterr().err


def test_error_inside_library_block_points_at_the_use(write_spec, capsys):
    # expansion 0 passes the block's own checks but makes its conv2 empty
    path = write_spec(HEAD + "body:\n  s: {stage: {block: basic, depth: 1, width: 8, expansion: 0}}\n")
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:5:" in err and "in block 'basic'" in err and "out should be" in err


def test_cli_error_has_no_traceback_and_debug_shows_one(write_spec):
    path = write_spec(HEAD + "body:\n  c: {conv: {out: 8, kernel: 99}}\n")
    plain = run_archc("validate", str(path))
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert f"{path}:5:" in plain.stderr
    debug = run_archc("--debug", "validate", str(path))
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_validate_reports_every_bad_file_and_passes_good_ones(write_spec, capsys):
    good = write_spec(HEAD + "body:\n  r: relu\n", "good.yaml")
    bad = write_spec(HEAD + "body:\n  r: relux\n", "bad.yaml")
    assert main(["validate", str(good), str(bad)]) == 1
    out = capsys.readouterr()
    assert f"{good}: ok" in out.out and f"{bad}:5:" in out.err
    assert main(["validate", str(good)]) == 0


def test_reserved_names_cover_every_public_module_attribute():
    from torch import nn

    from archc.spec.schema import RESERVED_NAMES

    public = {n for n in set(dir(nn.Sequential)) | set(dir(nn.Module)) if not n.startswith("_")}
    assert public <= RESERVED_NAMES | {"training"}

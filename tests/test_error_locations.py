"""Invariant 4, issue 10.2: an error points at its cause, not where archc happened to notice.

Each case gives the exact `FILE:LINE:COL` of the error, the words of its message and, where
the story goes on elsewhere, the `FILE:LINE:COL: note:` lines that follow it.
"""

from __future__ import annotations

import pytest

from archc.cli import main

HEAD = "archc: 1\nname: t\ninput: [3, 32, 32]\n"


def report(path, capsys) -> list[str]:
    """The lines `archc validate path` prints on stderr; it must fail with exit 1, no traceback."""
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return err.rstrip("\n").split("\n")


def assert_reported(path, capsys, at: str, words: str, notes: tuple[tuple[str, str], ...] = ()):
    """The error is at `path:at` (LINE:COL) with `words`, followed by exactly these notes."""
    lines = report(path, capsys)
    assert lines[0].startswith(f"{path}:{at}: error: "), lines
    assert words in lines[0], lines
    assert len(lines) == 1 + len(notes), lines
    for line, (where, text) in zip(lines[1:], notes):
        assert line.startswith(f"{path}:{where}: note: "), lines
        assert text in line, lines


# ---- 1. a bad model-level param is reported where it is written ----------------------------

TAIL = "  p: {adaptive_avgpool: 1}\n  f: flatten\n  fc: {linear: {out: '${num_classes}'}}\n"  # fc: line 9

PARAM_CASES = [
    # (id, params value, words)
    ("negative", "-5", "linear 'fc': out should be greater than or equal to 1 (got -5)"),
    ("text", "abc", "linear 'fc': out should be a valid integer"),
]


@pytest.mark.parametrize("case", PARAM_CASES, ids=[c[0] for c in PARAM_CASES])
def test_bad_param_is_reported_where_it_is_written(case, write_spec, capsys):
    _, value, words = case
    path = write_spec(HEAD + f"params: {{num_classes: {value}}}\nbody:\n  a: relu\n" + TAIL)
    assert_reported(
        path, capsys, "4:23", words, (("9:22", "num_classes is used here (at body.fc.linear.out)"),)
    )
    assert report(write_spec(path.read_text()), capsys)[0].endswith("(at params.num_classes)")


def test_bad_param_in_an_expression_is_reported_where_it_is_written(write_spec, capsys):
    path = write_spec(
        HEAD
        + "params: {num_classes: abc}\nbody:\n  a: relu\n"
        + TAIL.replace("${num_classes}", "${num_classes * 2}")
    )
    assert_reported(
        path,
        capsys,
        "4:23",
        "in ${num_classes * 2}: * needs numbers, not str 'abc'",
        (("9:22", "num_classes is used here"),),
    )


def test_two_params_to_blame_give_the_use_and_a_note_at_each(write_spec, capsys):
    path = write_spec(
        HEAD + "params: {a: 3, b: -9}\nbody:\n  c: {conv: {out: '${a + b}', kernel: 3}}\n"
    )
    assert_reported(
        path,
        capsys,
        "6:19",
        "out should be greater than or equal to 1 (got -6)",
        (("4:13", "a is written here (at params.a)"), ("4:19", "b is written here (at params.b)")),
    )


def test_a_fault_of_the_expression_itself_stays_at_the_expression(write_spec, capsys):
    # the param is fine; the expression names something that does not exist
    path = write_spec(
        HEAD + "params: {w: 8}\nbody:\n  c: {conv: {out: '${w * widht}', kernel: 3}}\n"
    )
    assert_reported(path, capsys, "6:19", "unknown name 'widht'")


def test_a_param_through_a_stage_to_a_library_requirement(write_spec, capsys):
    path = write_spec(
        HEAD + "params: {w: 0}\nbody:\n  s: {stage: {block: bottleneck, depth: 2, width: '${w}'}}\n"
    )
    assert_reported(
        path,
        capsys,
        "4:13",
        "block 'bottleneck' requires width > 0",
        (("6:14", "w is used here (at body.s.stage)"),),
    )


# ---- 2. a bad block argument is reported at the argument ------------------------------------

ARG_CASES = [
    # (id, body line, error LINE:COL, words, field)
    (
        "library-block-let",
        "  b: {bottleneck: {width: wide}}\n",
        "5:27",
        "let mid = ${int(width * base_width / 64) * groups}: * needs numbers, not str 'wide' (in block 'bottleneck')",
        "body.b.bottleneck.width",
    ),
    (
        "stage-argument-let",
        "  s: {stage: {block: bottleneck, depth: 2, width: wide}}\n",
        "5:51",
        "let mid = ${int(width * base_width / 64) * groups}: * needs numbers, not str 'wide' (in block 'bottleneck')",
        "body.s.stage.width",
    ),
    (
        "stage-argument-requirement",
        "  s: {stage: {block: bottleneck, depth: 2, width: 8, groups: 0}}\n",
        "5:62",
        "block 'bottleneck' requires width > 0 and groups > 0",
        "body.s.stage.groups",
    ),
    (
        "nested-library-block",
        "  grow:\n    dense_block: {layers: 2, growth_rate: 0}\n",
        "6:43",
        "block 'dense_layer' requires growth_rate > 0 (got growth_rate=0) (in block 'dense_block')",
        "body.grow.dense_block.growth_rate",
    ),
    (
        "library-layer-setting",
        "  v: {vgg_block: {convs: 1, out: 0}}\n",
        "5:34",
        "conv '0': out should be greater than or equal to 1 (got 0) (in block 'vgg_conv')",
        "body.v.vgg_block.out",
    ),
]


@pytest.mark.parametrize("case", ARG_CASES, ids=[c[0] for c in ARG_CASES])
def test_bad_argument_to_a_library_block_is_reported_at_the_argument(case, write_spec, capsys):
    _, body, at, words, field = case
    path = write_spec(HEAD + "body:\n" + body)
    assert_reported(path, capsys, at, words)  # the use is on the same line: no note
    assert report(write_spec(path.read_text()), capsys)[0].endswith(f"(at {field})")


USER_BLOCK = (
    HEAD
    + """\
blocks:
  mine:
    params: {w: ~, k: 3}
    body:
      seq:
        c: {conv: {out: '${w * 2}', kernel: '${k}'}}
"""
)  # the conv is on line 9


def test_bad_argument_to_a_user_block_is_reported_at_the_argument(write_spec, capsys):
    path = write_spec(USER_BLOCK + "body:\n  a: relu\n  m: {mine: {w: 0}}\n")
    assert_reported(
        path,
        capsys,
        "12:17",
        "conv 'c': out should be greater than or equal to 1 (got 0) (in block 'mine')",
        (("9:25", "w is used here (at blocks.mine.body.seq.c.conv.out)"),),
    )


def test_bad_default_of_a_user_block_is_reported_at_the_default(write_spec, capsys):
    path = write_spec(
        USER_BLOCK.replace("k: 3", "k: 0") + "body:\n  a: relu\n  m: {mine: {w: 4}}\n"
    )
    assert_reported(
        path,
        capsys,
        "6:23",
        "kernel should be greater than or equal to 1 (got 0)",
        (("9:45", "k is used here"), ("12:13", "block 'mine' is used here (at body.m.mine)")),
    )


def test_error_written_in_a_user_block_names_its_use(write_spec, capsys):
    path = write_spec(
        USER_BLOCK.replace("kernel: '${k}'", "kernel: 3, stirde: 1")
        + "body:\n  a: relu\n  m: {mine: {w: 4}}\n"
    )
    assert_reported(
        path,
        capsys,
        "9:48",
        "unknown field 'stirde' in conv 'c' (in block 'mine')",
        (("12:13", "block 'mine' is used here (at body.m.mine)"),),
    )


def test_param_through_a_user_block_names_every_step(write_spec, capsys):
    path = write_spec(
        USER_BLOCK.replace(HEAD, HEAD + "params: {width: wide}\n")
        + "body:\n  m: {mine: {w: '${width}'}}\n"
    )
    assert_reported(
        path,
        capsys,
        "4:17",
        "in ${w * 2}: * needs numbers, not str 'wide' (in block 'mine')",
        (
            ("10:25", "width is used here (at blocks.mine.body.seq.c.conv.out)"),
            ("12:13", "block 'mine' is used here (at body.m.mine)"),
        ),
    )


# ---- 3. YAML syntax errors name where the broken construct started -------------------------

YAML_CASES = [
    # (id, text, error LINE:COL, words, note LINE:COL)
    (
        "unclosed-double-quote",
        HEAD + 'body:\n  a: relu\n  b: {conv: {out: "abc, kernel: 3}}\n  c: relu\n  d: relu\n\n\n',
        "6:19",
        "(in the quoted string that starts here)",
        "8:10",
    ),
    (
        "unclosed-single-quote",
        HEAD + "body:\n  a: 'relu\n  c: relu\n",
        "5:6",
        "found unexpected end of stream (in the quoted string",
        "6:10",
    ),
    (
        "unclosed-bracket",
        HEAD + "body:\n  a: relu\n  b:\n    conv: {out: 8, kernel: [3\n  c: relu\n  d: relu\n",
        "7:28",
        "(in the [...] list that starts here)",
        "8:4",
    ),
    (
        "unclosed-brace",
        HEAD + "body:\n  a: {conv: {out: 8\n  c: relu\n  d: relu\n",
        "5:13",
        "(in the {...} mapping that starts here)",
        "6:4",
    ),
    ("unclosed-quote-at-end-without-newline", HEAD + 'body: "abc', "4:7", "quoted string", "4:11"),
]


@pytest.mark.parametrize("case", YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_yaml_error_points_at_the_unclosed_construct(case, write_spec, capsys):
    _, text, at, words, noticed = case
    path = write_spec(text)
    assert_reported(path, capsys, at, words, ((noticed, "the parser stopped here"),))
    assert "error: invalid YAML: " in report(write_spec(text), capsys)[0]


def test_yaml_error_with_nothing_left_open_has_no_note(write_spec, capsys):
    # a block mapping "starts" at line 1: naming that would send the user to the wrong place
    path = write_spec(HEAD + "body:\n  a: relu\n   b: relu\n")
    assert_reported(path, capsys, "6:5", "invalid YAML: mapping values are not allowed")


# ---- 4. lines are counted as editors count them -------------------------------------------


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_line_numbers_for_each_line_ending(newline, write_spec, capsys):
    text = "archc: 1\nname: t\ninput: [3, 32, 32]\nbody:\n  a: relu\n  b: relux\n"
    path = write_spec("")
    path.write_bytes(text.replace("\n", newline).encode())
    assert_reported(path, capsys, "6:3", "unknown layer or block type 'relux'")


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_yaml_syntax_error_line_for_each_line_ending(newline, write_spec, capsys):
    text = HEAD + "body:\n  a: {conv: {out: 8}\n  b: relu\n"
    path = write_spec("")
    path.write_bytes(text.replace("\n", newline).encode())
    assert_reported(path, capsys, "5:6", "{...} mapping", (("6:3", "stopped here"),))


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85"], ids=["u2028", "u2029", "u0085"])
def test_unicode_line_separators_inside_a_string_do_not_shift_lines(char, write_spec, capsys):
    # YAML 1.1 (libyaml) breaks lines at these; editors and YAML 1.2 show them inside the line
    path = write_spec(
        f'archc: 1\nname: t\ndescription: "a{char}b{char}c"\ninput: [3, 32, 32]\n'
        "body:\n  a: relu\n  b: relux\n"
    )
    assert_reported(path, capsys, "7:3", "unknown layer or block type 'relux'")


def test_unicode_line_separator_before_a_yaml_error(write_spec, capsys):
    path = write_spec(
        'archc: 1\nname: t\ndescription: "a\u2028b"\ninput: [3, 32, 32]\n'
        "body:\n  a: {conv: {out: 8}\n  b: relu\n"
    )
    assert_reported(path, capsys, "6:6", "{...} mapping", (("7:3", "stopped here"),))


def test_bad_utf8_after_carriage_returns_is_on_its_line(write_spec, capsys):
    path = write_spec("")
    path.write_bytes(b"archc: 1\rname: t\rdescription: ab\xffc\r")
    assert_reported(path, capsys, "3:16", "not valid UTF-8")


# ---- 5. echoed user text is escaped --------------------------------------------------------


def test_control_characters_in_a_name_are_escaped(write_spec, capsys):
    path = write_spec(HEAD + 'body:\n  "a\\e[31mred\\x07\\r": relu\n')
    lines = report(path, capsys)
    assert len(lines) == 1 and lines[0].startswith(f"{path}:5:3: error: "), lines
    assert not any(c in lines[0] for c in "\x1b\x07\r"), lines
    assert "(at body.a\\x1b[31mred\\x07\\r)" in lines[0], lines


def test_printable_unicode_is_not_escaped(write_spec, capsys):
    path = write_spec(HEAD + "body:\n  größe×2.a: relu\n")
    lines = report(path, capsys)
    assert "'größe×2.a' is not a valid name" in lines[0] and "(at body.größe×2.a)" in lines[0], lines


# ---- 6. numbers beyond what archc and torch can hold are refused at their line --------------

NUMBER_CASES = [
    # (id, body lines, error LINE:COL, words)
    (
        "expression-400-digits",
        "  c: {conv: {out: '${" + "9" * 400 + "}', kernel: 1}}\n",
        "5:19",
        "number about 10**400 is too large (the limit is 10**15)",
    ),
    (
        "expression-result-beyond-float",
        "  c: {conv: {out: '${1000000000000000 ** 64}', kernel: 1}}\n",
        "5:19",
        "expression result about 10**960 is out of range",
    ),
    (
        "init-constant-beyond-float32",
        "  c: {conv: {out: 4, kernel: 1}}\ninit: {conv: {weight: {constant: 1.0e+300}}}\n",
        "6:34",
        "constant: val should be within float32's range (±3.4e38) (got 1e+300)",
    ),
    (
        "init-std-beyond-float32",
        "  c: {conv: {out: 4, kernel: 1}}\ninit: {conv: {weight: {normal: {std: 4.0e+38}}}}\n",
        "6:38",
        "normal: std should be within float32's range",
    ),
    (
        "leaky-slope-beyond-float32",
        "  a: {leaky_relu: {negative_slope: 1.0e+308}}\n",
        "5:36",
        "negative_slope should be within float32's range (±3.4e38) (got 1e+308)",
    ),
    (
        "lrn-alpha-beyond-float32",
        "  n: {lrn: {size: 2, alpha: -1.0e+39}}\n",
        "5:29",
        "alpha should be within float32's range",
    ),
]


@pytest.mark.parametrize("case", NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_numbers_out_of_range_are_refused_at_their_line(case, write_spec, capsys):
    _, body, at, words = case
    assert_reported(write_spec(HEAD + "body:\n" + body), capsys, at, words)


def test_numbers_just_inside_float32_still_build(write_spec):
    import archc

    path = write_spec(
        HEAD + "init: {conv: {weight: {constant: 3.0e+38}}}\n"
        "body:\n  c: {conv: {out: 2, kernel: 1}}\n  a: {leaky_relu: {negative_slope: 3.0e+38}}\n"
    )
    archc.build(archc.load(path))


# ---- 7. quiet surprises --------------------------------------------------------------------


def test_a_date_in_the_description_is_text(write_spec, capsys):
    path = write_spec(
        "archc: 1\nname: t\ndescription: 2024-01-01\ninput: [3, 8, 8]\nbody:\n  r: relu\n"
    )
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    from archc import load

    assert load(path).description == "2024-01-01"


@pytest.mark.parametrize("word", ["on", "off", "yes", "no", "null"])
def test_a_layer_named_like_a_yaml_boolean_gets_a_hint_to_quote_it(word, write_spec, capsys):
    path = write_spec(HEAD + f"body:\n  a: relu\n  {word}: relu\n")
    as_yaml = "null" if word == "null" else ("true" if word in ("on", "yes") else "false")
    assert_reported(path, capsys, "6:3", f"mapping key '{word}' is read by YAML as {as_yaml};")
    path = write_spec(HEAD + f"body:\n  a: relu\n  {word}: relu\n")
    assert f"quote it to use it as a name ('{word}': ...)" in report(path, capsys)[0]


@pytest.mark.parametrize("version", ["true", "1.0", "'1'", "2"])
def test_the_version_is_exactly_the_integer_1(version, write_spec, capsys):
    path = write_spec(f"archc: {version}\nname: t\ninput: [3, 8, 8]\nbody:\n  r: relu\n")
    assert_reported(
        path, capsys, "1:8", "archc is the spec format version; this archc reads version 1"
    )


RESERVED_CASES = [
    ("param", "    params:\n      in_channels: 4\n"),
    ("let", "    params: {w: 2}\n    let:\n      in_channels: '${w * 2}'\n"),
]


@pytest.mark.parametrize("case", RESERVED_CASES, ids=[c[0] for c in RESERVED_CASES])
def test_in_channels_is_reserved_in_templates(case, write_spec, capsys):
    # it used to be silently replaced by (or to replace) the block's real input channels
    _, declared = case
    text = (
        HEAD
        + "blocks:\n  mine:\n"
        + declared
        + "    body: {conv: {out: '${in_channels}', kernel: 1}}\nbody:\n  m: mine\n"
    )
    line = text[: text.index("in_channels:")].count("\n") + 1
    path = write_spec(text)
    assert_reported(
        path,
        capsys,
        f"{line}:7",
        "'in_channels' is reserved: archc sets it to the block's input channels",
    )


def test_every_line_of_an_error_is_escaped_and_short():
    from archc.errors import Location, SpecError

    error = SpecError("bad \x1b[2J" * 400, Location("f\r.yaml", 1, 2), "body.a\x07")
    error.note("used \x1b]0;title\x07 here", Location("f.yaml", 3, 4))
    first, note = error.format().split("\n")
    assert first.startswith("f\\r.yaml:1:2: error: bad \\x1b[2J") and first.endswith("(at body.a\\x07)")
    assert len(first) < 1100 and " ... " in first
    assert note == "f.yaml:3:4: note: used \\x1b]0;title\\x07 here"

"""Issue 12: spec files people maintain. `extends:` gives what writing the merged spec by hand
gives, variants and `--set` overrides are validated like the file, and every error names the
file (or `--set` argument), line and column that wrote the offending value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import archc
from archc.backends.codegen import generate
from archc.cli import main
from archc.errors import SpecError, UsageError
from archc.resources import estimate

SPECS = Path(__file__).resolve().parent.parent / "specs"
RESNET50 = (Path(__file__).parent / "data" / "resnet50.yaml").read_text()  # a one-model spec

TINY = """\
archc: 1
name: tiny
input: [3, 32, 32]
params: {num_classes: 10, width: 8}
variants:
  wide: {params: {width: 16}}
  big: {params: {num_classes: 100}, input: [3, 64, 64], name: bignet}
body:
  conv1: {conv: {out: "${width}", kernel: 3}}
  bn1: batchnorm
  relu: relu
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  fc: {linear: {out: "${num_classes}"}}
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def same(a: archc.Spec, b: archc.Spec) -> None:
    """Two specs compile to the same model, data and generated code."""
    assert a.document.data == b.document.data
    assert (a.name, a.input_shape, a.params, a.init) == (b.name, b.input_shape, b.params, b.init)
    assert {**archc.summary(a), "file": ""} == {**archc.summary(b), "file": ""}  # the tree
    assert generate(a, "net.yaml") == generate(b, "net.yaml")


def error(path: Path, capsys, *args: str) -> list[str]:
    """The stderr lines of a failing `archc validate`, which must exit 1 without a traceback."""
    assert main(["validate", str(path), *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    return err.rstrip("\n").split("\n")


# ---- extends: the same as writing the merged spec by hand ----------------------------------


def test_extends_changing_a_param_equals_the_base_with_that_param(tmp_path):
    base = write(tmp_path / "a", "net.yaml", RESNET50)
    child = write(tmp_path / "b", "net.yaml", "extends: ../a/net.yaml\nparams: {num_classes: 10}\n")
    hand = write(
        tmp_path / "c", "net.yaml", RESNET50.replace("{num_classes: 1000}", "{num_classes: 10}")
    )
    same(archc.load(child), archc.load(hand))
    same(archc.load(child), archc.load(base, overrides=["params.num_classes=10"]))
    assert archc.load(child).output_shape == (10,)


def test_extends_deletes_layers(tmp_path):
    write(tmp_path, "resnet50.yaml", RESNET50)
    child = write(
        tmp_path / "b", "net.yaml", "extends: ../resnet50.yaml\nbody:\n  fc: ~\n  flatten: null\n"
    )
    text = "".join(
        line for line in RESNET50.splitlines(True) if not line.startswith(("  fc:", "  flatten:"))
    )
    hand = write(tmp_path / "c", "net.yaml", text)
    same(archc.load(child), archc.load(hand))
    assert archc.load(child).output_shape == (2048, 1, 1)


def test_extends_inserts_and_moves_layers(tmp_path):
    write(tmp_path, "resnet50.yaml", RESNET50)
    child = write(
        tmp_path / "b",
        "net.yaml",
        "extends: ../resnet50.yaml\nbody:\n  dropout: {dropout: 0.2, before: fc}\n  maxpool: {after: layer1}\n",
    )
    lines = RESNET50.splitlines(True)
    maxpool = next(line for line in lines if line.startswith("  maxpool:"))
    text = ""
    for line in lines:
        if line.startswith("  fc:"):
            text += "  dropout: {dropout: 0.2}\n"
        if line != maxpool:
            text += line
        if line.startswith("  layer1:"):
            text += maxpool
    hand = write(tmp_path / "c", "net.yaml", text)
    same(archc.load(child), archc.load(hand))
    assert list(archc.load(child).document.data["body"])[-2:] == ["dropout", "fc"]


def test_extends_merges_mappings_replaces_lists_and_chains(tmp_path):
    write(tmp_path, "tiny.yaml", TINY)
    write(
        tmp_path,
        "mid.yaml",
        "extends: tiny.yaml\nbody:\n  conv1: {conv: {kernel: 5, padding: 2}}\n",
    )
    child = write(
        tmp_path, "top.yaml", "extends: mid.yaml\ninput: [3, 16, 16]\nparams: {width: 4}\n"
    )
    spec = archc.load(child)
    body = spec.document.data["body"]
    assert body["conv1"] == {
        "conv": {"out": "${width}", "kernel": 5, "padding": 2}
    }  # merged by key
    assert spec.input_shape == (3, 16, 16) and spec.params == {"num_classes": 10, "width": 4}
    assert spec.variants == ("wide", "big")  # inherited with the rest
    replaced = write(
        tmp_path, "kind.yaml", "extends: tiny.yaml\nbody:\n  bn1: {relu: {inplace: true}}\n"
    )
    assert archc.load(replaced).document.data["body"]["bn1"] == {"relu": {"inplace": True}}


# ---- variants -------------------------------------------------------------------------------


def test_variants(tmp_path):
    path = write(tmp_path, "tiny.yaml", TINY)
    base = archc.load(path)
    assert (base.name, base.params, base.variants, base.variant) == (
        "tiny", {"num_classes": 10, "width": 8}, ("wide", "big"), None,
    )  # fmt: skip
    wide = archc.load(path, variant="wide")
    assert (wide.name, wide.params["width"], wide.variant) == ("wide", 16, "wide")
    big = archc.load(path, variant="big")
    assert (big.name, big.input_shape, big.output_shape) == ("bignet", (3, 64, 64), (100,))
    hand = TINY.replace("name: tiny", "name: wide").replace("width: 8}", "width: 16}")
    hand = hand.split("variants:")[0] + "body:" + hand.split("body:")[1]
    same(wide, archc.loads(hand, str(tmp_path / "hand" / "wide.yaml")))  # functions: the variant
    assert "class Bignet" in archc.codegen(big) and "num_classes: int = 100" in archc.codegen(big)


def test_variant_on_the_command_line(tmp_path, capsys):
    path = write(tmp_path, "tiny.yaml", TINY)
    assert main(["validate", str(path), "--variant", "big"]) == 0
    assert "ok (bignet:" in capsys.readouterr().out
    assert main(["summary", str(path), "--variant", "wide", "--set", "params.num_classes=3"]) == 0
    assert main(["codegen", str(path), "-o", str(tmp_path / "gen"), "--variant", "big"]) == 0
    assert "class Bignet" in (tmp_path / "gen" / "big.py").read_text()  # named after the variant
    assert main(["codegen", str(path), "-o", str(tmp_path / "all")]) == 0  # each variant a file
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["big.py", "wide.py"]
    assert "def wide(" in (tmp_path / "all" / "wide.py").read_text()


def test_unknown_variant_lists_the_known_ones(tmp_path, capsys):
    path = write(tmp_path, "tiny.yaml", TINY)
    (line,) = error(path, capsys, "--variant", "huge")
    assert line.startswith(f"{path}:5:1: error: no variant 'huge'; variants: wide, big"), line
    plain = write(
        tmp_path, "plain.yaml", TINY.split("variants:")[0] + "body:" + TINY.split("body:")[1]
    )
    with pytest.raises(SpecError, match="the spec has no variants"):
        archc.load(plain, variant="wide")


VARIANT_CASES = [
    # (id, variants text, LINE:COL, words)
    (
        "bad-value",
        "  wide: {params: {width: -1}}\n",
        "6:26",
        "out should be greater than or equal to 1",
    ),
    (
        "bad-input",
        "  wide: {input: [3, 0, 32]}\n",
        "6:21",
        "input should be greater than or equal to 1",
    ),
    (
        "unknown-param",
        "  wide: {params: {widht: 3}}\n",
        "6:19",
        "sets 'widht', which params: does not have",
    ),
    (
        "unknown-key",
        "  wide: {body: {}}\n",
        "6:10",
        "a variant sets params, input or name, not 'body'",
    ),
    ("bad-name", "  wide: {name: 3x}\n", "6:16", "name must be letters"),
    ("bad-variant-name", "  2wide: {}\n", "6:3", "2wide"),
]


@pytest.mark.parametrize(
    "variants, at, words", [c[1:] for c in VARIANT_CASES], ids=[c[0] for c in VARIANT_CASES]
)
def test_variant_errors_point_at_the_variant(tmp_path, capsys, variants, at, words):
    text = TINY.replace("  wide: {params: {width: 16}}\n", variants)
    path = write(tmp_path, "tiny.yaml", text)
    lines = error(path, capsys, "--variant", "wide")
    assert lines[0].startswith(f"{path}:{at}: error: "), lines
    assert words in lines[0], lines


# ---- overrides ------------------------------------------------------------------------------


def test_overrides_read_yaml_scalars_and_lists(tmp_path):
    path = write(tmp_path, "tiny.yaml", TINY)
    spec = archc.load(
        path, overrides=["params.num_classes=2", "input=[3, 16, 16]", "body.conv1.conv.bias=false"]
    )
    assert spec.output_shape == (2,) and spec.input_shape == (3, 16, 16)
    assert spec.document.data["body"]["conv1"]["conv"]["bias"] is False
    assert archc.load(path, overrides=["input.1=64"]).input_shape == (
        3,
        64,
        32,
    )  # list items by index
    assert archc.load(path, variant="big", overrides=["name=other"]).name == "other"  # --set wins


def test_override_of_a_layer_count_in_resnet(capsys):
    path = SPECS / "resnet50.yaml"
    assert main(["validate", str(path), "--set", "body.layer3.stage.depth=23"]) == 0
    assert (
        archc.load(path, overrides=["body.layer3.stage.depth=23"]).param_count
        == archc.load(SPECS / "resnet101.yaml").param_count
    )


OVERRIDE_CASES = [
    # (id, --set argument, LINE:COL in the argument, words, the note's FILE-relative LINE:COL or None)
    ("bad-value", "params.num_classes=-5", "1:20", "greater than or equal to 1", "4:23"),
    ("bad-type", "body.conv1.conv.kernel=big", "1:24", "kernel", "9:43"),
    ("new-setting", "body.conv1.conv.colour=3", "1:24", "colour", None),
    (
        "missing-layer",
        "body.layer9.conv.out=3",
        "1:6",
        "body.layer9: no such layer; layers: conv1, bn1",
        "9:3",
    ),
    (
        "missing-key",
        "params.x.y=3",
        "1:8",
        "params.x: no such key; keys: num_classes, width",
        "4:9",
    ),
    ("bad-index", "input.3=3", "1:7", "input is a list of 3; '3' is not an index", "3:8"),
    ("bad-yaml", "input=[3, 4", "1:7", "invalid YAML", None),
]


@pytest.mark.parametrize(
    "arg, at, words, note", [c[1:] for c in OVERRIDE_CASES], ids=[c[0] for c in OVERRIDE_CASES]
)
def test_override_errors_point_at_the_argument(tmp_path, capsys, arg, at, words, note):
    path = write(tmp_path, "tiny.yaml", TINY)
    lines = error(path, capsys, "--set", arg)
    assert lines[0].startswith(f"--set {arg}:{at}: error: "), lines
    assert words in lines[0], lines
    if note is not None:
        assert f"{path}:{note}: note: " in "\n".join(lines[1:]), lines


def test_an_override_error_notes_where_the_file_had_the_value(tmp_path, capsys):
    path = write(tmp_path, "tiny.yaml", TINY)
    lines = error(path, capsys, "--set", "params.num_classes=0")
    assert lines[-1] == f"{path}:4:23: note: params.num_classes was set here before the override", (
        lines
    )


@pytest.mark.parametrize("arg", ["params", "=3", "params..x=1", "params.num_classes="])
def test_malformed_overrides_are_usage_errors(tmp_path, capsys, arg):
    path = write(tmp_path, "tiny.yaml", TINY)
    assert main(["validate", str(path), "--set", arg]) == 2
    with pytest.raises(UsageError):
        archc.load(path, overrides=[arg])
    with pytest.raises(UsageError):
        archc.load(path, overrides=arg)  # one string, not a list


# ---- errors in inherited values point into the file that wrote them -------------------------


def test_errors_point_into_the_file_that_wrote_the_value(tmp_path, capsys):
    base = write(tmp_path, "tiny.yaml", TINY)
    child = write(tmp_path / "sub", "net.yaml", "extends: ../tiny.yaml\nparams: {num_classes: 0}\n")
    lines = error(child, capsys)
    assert lines[0].startswith(f"{child}:2:23: error: linear 'fc': out should be greater"), lines
    assert lines[1].startswith(f"{base}:14:22: note: num_classes is used here"), lines
    child.write_text(
        "extends: ../tiny.yaml\nbody:\n  extra: {conv: {out: 4, kernel: 3, stride: 0}}\n"
    )
    (line,) = error(child, capsys)
    assert line.startswith(f"{child}:3:45: error: "), line
    child.write_text("extends: ../tiny.yaml\nparams: {num_classes: 5}\n")
    base.write_text(TINY.replace("kernel: 3", "kernel: -3"))
    lines = error(child, capsys)
    assert lines[0].startswith(f"{base}:9:43: error: "), lines
    assert lines[1:] == [f"{child}:1:10: note: extended by {child}"], lines


EXTENDS_CASES = [
    # (id, child text, LINE:COL, words)
    ("missing-base", "extends: nothere.yaml\n", "1:10", "extends 'nothere.yaml': no such file"),
    ("not-a-path", "extends: [a]\n", "1:10", "extends names a spec file"),
    (
        "delete-missing",
        "extends: tiny.yaml\nbody:\n  fc9: ~\n",
        "3:3",
        "no layer 'fc9' to delete; layers: conv1",
    ),
    (
        "place-missing",
        "extends: tiny.yaml\nbody:\n  d: {dropout: 0.1, after: fc9}\n",
        "3:28",
        "no layer 'fc9' to put 'd' after",
    ),
    (
        "place-both",
        "extends: tiny.yaml\nbody:\n  d: {dropout: 0.1, after: fc, before: fc}\n",
        "3:32",
        "before or after",
    ),
    ("unknown-key", "extends: tiny.yaml\nparms: {}\n", "2:1", "parms"),
]


@pytest.mark.parametrize(
    "text, at, words", [c[1:] for c in EXTENDS_CASES], ids=[c[0] for c in EXTENDS_CASES]
)
def test_extends_errors(tmp_path, capsys, text, at, words):
    write(tmp_path, "tiny.yaml", TINY)
    child = write(tmp_path, "net.yaml", text)
    lines = error(child, capsys)
    assert lines[0].startswith(f"{child}:{at}: error: "), lines
    assert words in lines[0], lines


def test_extends_cycles_and_long_chains_are_located(tmp_path, capsys):
    a = write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "extends: a.yaml\n")
    lines = error(a, capsys)
    assert lines[0].startswith(
        f"{tmp_path / 'b.yaml'}:1:10: error: extends cycle: a.yaml -> b.yaml -> a.yaml"
    ), lines
    assert lines[1].startswith(f"{a}:1:10: note: extended by {a}"), lines
    write(tmp_path, "c0.yaml", TINY)
    for i in range(1, 20):
        write(tmp_path, f"c{i}.yaml", f"extends: c{i - 1}.yaml\n")
    assert archc.load(tmp_path / "c15.yaml").name == "tiny"
    lines = error(tmp_path / "c19.yaml", capsys)
    assert any("extends chain is longer than 16 files" in line for line in lines), lines
    bad = write(tmp_path, "bad.yaml", "extends: tiny.yaml\n")
    write(tmp_path, "tiny.yaml", "archc: 1\nname: [\n")
    lines = error(bad, capsys)
    assert lines[0].startswith(f"{tmp_path / 'tiny.yaml'}:"), lines
    assert lines[-1].startswith(f"{bad}:1:10: note: extended by {bad}"), lines


def test_the_readme_examples_work(tmp_path):
    """The variants and extends examples in the README, pasted into files as they say."""
    readme = (SPECS.parent / "README.md").read_text()
    section = readme.split("### Spec files people maintain")[1].split("\n## ")[0]
    blocks = [b.split("```")[0] for b in section.split("```yaml\n")[1:]]
    excerpts = [b for b in blocks if b.startswith("# specs/")]  # of a shipped spec: verbatim
    for excerpt in excerpts:
        shipped = (SPECS.parent / excerpt.split()[1]).read_text().splitlines()
        for line in excerpt.splitlines()[1:]:
            assert line.startswith("  # ...") or line in shipped, line
    blocks = [b for b in blocks if b not in excerpts]
    assert len(blocks) == 3 and len(excerpts) == 1
    (tmp_path / "resnet50.yaml").write_text(RESNET50)
    for block in blocks:
        name = block.split("\n")[0].removeprefix("# ").split(":")[0]
        write(tmp_path, name, block)
    names = {
        v: archc.load(tmp_path / "resnet.yaml", variant=v).param_count
        for v in ("resnet101", "resnet152")
    }
    assert names == {v: archc.load(SPECS / f"{v}.yaml").param_count for v in names}
    assert archc.load(tmp_path / "resnet.yaml", variant="small").name == "resnet50_small"
    assert archc.load(tmp_path / "features.yaml").output_shape == (2048, 7, 7)
    tuned = archc.load(tmp_path / "finetune.yaml")
    assert (tuned.name, tuned.output_shape, list(tuned.document.data["body"])[-2:]) == (
        "resnet50_finetune", (37,), ["dropout", "fc"],
    )  # fmt: skip


def test_override_values_go_through_archcs_loader_and_its_limits(tmp_path):
    path = write(tmp_path, "tiny.yaml", TINY)
    with pytest.raises(SpecError, match="nested more than 64 levels") as caught:
        archc.load(path, overrides=["params.width=" + "[" * 100])
    assert str(caught.value.location).startswith("--set params.width=[[[")
    with pytest.raises(SpecError, match="unsupported YAML tag") as caught:
        archc.load(path, overrides=["params.width=!!python/object:os.system x"])
    assert caught.value.location.col == len("params.width=") + 1


# ---- every variant at once: summary side by side, validate all ------------------------------


def test_summary_compares_every_variant_side_by_side(capsys):
    assert main(["summary", "resnet", "--variants", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = archc.load("resnet").variants
    assert [r["name"] for r in rows] == list(names)
    for row in rows:
        spec = archc.load("resnet", variant=row["name"])
        assert (row["params"], row["macs"], row["output_shape"], row["input_shape"]) == (
            spec.param_count, spec.macs, list(spec.output_shape), list(spec.input_shape),
        )  # fmt: skip
        assert row["activation_bytes"] == estimate(spec).activation_bytes
    depth = {r["name"]: r["depth"] for r in rows}  # weight layers on the longest path
    assert [depth[f"resnet{n}"] for n in (18, 34, 50, 101, 152)] == [18, 34, 50, 101, 152]
    assert main(["summary", "resnet", "--variants"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split() == ["model", "params", "MACs", "input", "output", "activations", "depth"]
    assert text[2].split()[:2] == ["resnet18", "11,689,512"] and text[2].split()[-1] == "18"


def test_summary_of_several_specs_is_one_table(tmp_path, capsys):
    path = write(tmp_path, "tiny.yaml", TINY)
    assert main(["summary", "vgg16", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["depth"], r["variant"]) for r in rows] == [("vgg16", 16, "vgg16"), ("tiny", 2, None)]
    assert main(["summary", "vgg16", str(path), "--variants", "--json"]) == 0  # tiny's variants
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["vgg16", "wide", "bignet"]
    assert rows[2]["input_shape"] == [3, 64, 64]
    assert main(["summary", "densenet121", "--json"]) == 0  # one model: the per-layer view
    one = json.loads(capsys.readouterr().out)
    assert one["depth"] == 121 and one["layers"]


def test_validate_every_variant_says_which_failed(tmp_path, capsys):
    text = TINY.replace("  big:", "  broken: {params: {width: -4}}\n  big:")
    path = write(tmp_path, "tiny.yaml", text)
    assert main(["validate", str(path), "--variants"]) == 1
    captured = capsys.readouterr()
    ok = captured.out.splitlines()
    assert [line.split(":")[0] for line in ok] == [f"{path} [wide]", f"{path} [big]"]
    err = captured.err.splitlines()
    assert err[0].startswith(f"{path}:7:28: error: "), err  # the value the variant wrote
    assert err[-1] == f"{path}:7:11: note: in variant 'broken'"
    with pytest.raises(SystemExit) as exited:  # one variant or all
        main(["validate", str(path), "--variants", "--variant", "wide"])
    assert exited.value.code == 2
    assert main(["validate", "alexnet", "--variants", "-q"]) == 0  # no variants: itself

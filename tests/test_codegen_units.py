"""codegen's stages one by one: small direct inputs, exact outputs (torch is never imported).

names (identifiers, literals), layout (the line breaker), runs (arithmetic progressions of
repeated blocks), generalize (anti-unification), arguments (naming and ordering constructor
arguments), render (imports), and the Spec carrying all codegen needs (`loads` == `load`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import BaseModel

import archc
from archc.backends.codegen import generate
from archc.backends.codegen.arguments import NO_DEFAULT, Order, Resolver, Source
from archc.backends.codegen.generalize import AntiUnifier, Unmergeable, merge_orders
from archc.backends.codegen.layout import Atom, Call, Comprehension, Prefixed, docstring, layout
from archc.backends.codegen.names import (
    MISSING,
    LayerRef,
    Namespace,
    Progression,
    Var,
    annotation,
    camel,
    literal,
    python_name,
    same,
)
from archc.backends.codegen.render import imports, names
from archc.backends.codegen.runs import progression_unit, segment, split_number, step_of
from archc.backends.codegen.terms import Child, ClassCall, Container, Hole, Instance, LayerCall
from archc.spec.schema import Template

ROOT = Path(__file__).resolve().parent.parent


class ConvParams(BaseModel):  # stands in for a primitive's parameters (field order matters)
    out: int
    stride: int = 1
    bias: bool = True


class ActParams(BaseModel):  # an activation's
    inplace: bool = False


def conv(c_in: int, c_out: int, stride: int = 1, name: str = "conv") -> Child:
    term = LayerCall("Conv2d", [c_in, c_out], {"stride": stride}, ConvParams(out=c_out))
    return Child(name, term, (c_out, 8, 8))


# ---- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, text",
    [
        ((1,), "(1,)"),
        ((3, 3), "(3, 3)"),
        ([1, 2], "[1, 2]"),
        ("a'b", '"a\'b"'),
        (None, "None"),
        (True, "True"),
        (0.5, "0.5"),
        (Var("num_classes", 10), "num_classes"),
    ],
)
def test_literals_are_ruff_formatted_python(value, text):
    assert literal(value) == text


def test_same_tells_bool_from_int_and_compares_inside_progressions():
    assert not same(True, 1)
    assert same((1, 2), (1, 2)) and not same((1, 2), [1, 2])
    assert same(Progression(64, 32), Progression(64, 32))
    assert not same(Progression(64, 32), Progression(64, 0))


@pytest.mark.parametrize(
    "name, expected",
    [("in", "in_"), ("list", "list_"), ("self", "self_"), ("2x", "arg_2x"), ("a-b", "arg_a_b")],
)
def test_python_name_avoids_keywords_builtins_and_its_own_names(name, expected):
    assert python_name(name) == expected


def test_a_namespace_hands_out_each_identifier_once():
    scope = Namespace({"x"})
    assert [scope.create_name(n) for n in ("x", "body", "body", "len", "body")] == [
        "x_",
        "body",
        "body_",
        "len_",
        "body__",
    ]


@pytest.mark.parametrize(
    "name, expected",
    [
        ("dense_layer", "DenseLayer"),
        ("resnet50", "ResNet50"),
        ("wide_resnet50_2", "WideResNet50_2"),
        ("googlenet", "GoogLeNet"),
        ("_", "Model"),
    ],
)
def test_camel_case_class_names(name, expected):
    assert camel(name) == expected


# ---- layout -----------------------------------------------------------------------------------


def test_a_call_that_fits_stays_on_one_line():
    call = Call("nn.Conv2d", [Atom("3"), Atom("64"), Prefixed("kernel_size=", Atom("7"))])
    assert layout(call, 8, lead="self.conv1 = ") == [
        "        self.conv1 = nn.Conv2d(3, 64, kernel_size=7)"
    ]


def test_a_long_call_breaks_at_its_bracket_and_its_items_stay_together_when_they_fit():
    items = [Atom(f"argument_number_{i}") for i in range(4)] + [Atom("argument_number_4x")]
    assert layout(Call("f", items[:4]), 0, lead="x = ") == [  # 80 characters: flat
        "x = f(argument_number_0, argument_number_1, argument_number_2, argument_number_3)"
    ]
    assert layout(Call("f", items), 0, lead="x = ") == [  # 101 flat; 98 inside the brackets
        "x = f(",
        "    argument_number_0, argument_number_1, argument_number_2, argument_number_3, argument_number_4x",
        ")",
    ]


def test_a_long_call_whose_items_do_not_fit_goes_one_item_a_line_with_trailing_commas():
    items = [Atom("a" * 40), Atom("b" * 40), Atom("c" * 40)]
    assert layout(Call("f", items), 0) == [
        "f(",
        f"    {'a' * 40},",
        f"    {'b' * 40},",
        f"    {'c' * 40},",
        ")",
    ]


def test_a_displayed_list_of_several_items_is_exploded_like_ruffs_magic_trailing_comma():
    display = Call("", [Atom("1"), Atom("2")], "[", "]", collection=True)
    assert layout(display, 0, lead="x = ") == ["x = [1, 2]"]  # fits: flat
    long = Call("", [Atom("x" * 50), Atom("y" * 50)], "[", "]", collection=True)
    assert layout(long, 0, lead="x = ") == ["x = [", f"    {'x' * 50},", f"    {'y' * 50},", "]"]


def test_a_comment_inside_forces_a_break_and_trails_its_line():
    items = [Atom("nn.ReLU()", comment="64x8x8"), Atom("nn.Flatten()", comment="4096")]
    assert layout(Call("nn.Sequential", items), 4) == [
        "    nn.Sequential(",
        "        nn.ReLU(),  # 64x8x8",
        "        nn.Flatten(),  # 4096",
        "    )",
    ]


def test_a_comprehension_breaks_clause_by_clause():
    element = Call("Block", [Atom("in_channels_of_the_block_number_i"), Atom("width" * 6)])
    comp = Comprehension(element, [Atom("for i in range(depth)")])
    assert layout(Prefixed("*", Call("", [comp], "[", "]")), 8) == [
        "        *[",
        "            Block(in_channels_of_the_block_number_i, widthwidthwidthwidthwidthwidth)",
        "            for i in range(depth)",
        "        ]",
    ]


@pytest.mark.parametrize("text", ['say """hi"""', 'ends in a quote"', "a \\ backslash", 'x""'])
def test_docstrings_are_python_strings_of_the_text(text):
    (line,) = docstring(text, 4)
    assert ast.literal_eval(line.strip()) == text


def test_docstrings_wrap():
    wrapped = docstring("word " * 30, 0)
    assert wrapped[0].startswith('"""word') and wrapped[-1] == '"""'
    assert all(len(line) <= 100 for line in wrapped) and len(wrapped) == 3


# ---- runs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, parts",
    [
        ("denselayer12", ("denselayer", 12, "")),
        ("layer3a", ("layer", 3, "a")),
        ("conv", ("conv", None, "")),
        ("block01", ("block01", None, "")),  # a leading zero is not a run's number
    ],
)
def test_split_number(name, parts):
    assert split_number(name) == parts


def test_step_of_integers_equal_values_and_strangers():
    assert step_of(64, 96) == 32
    assert step_of("same", "same") == 0
    assert step_of(True, True) == 0 and step_of(1, True) is None
    assert step_of((1, 1), (2, 2)) is None


def test_equal_units_are_one_run_and_a_different_one_starts_another():
    units = [[conv(256, 64)], [conv(256, 64)], [conv(256, 64)], [conv(256, 64, stride=2)]]
    assert [len(run) for run in segment(units, named=False, grow=False)] == [3, 1]


def test_units_growing_by_a_step_are_one_run_whose_unit_holds_progressions():
    units = [[conv(64 + 32 * i, 32)] for i in range(4)]  # a dense block's layers
    (run,) = segment(units, named=False, grow=True)
    (child,) = progression_unit(run)
    assert [
        same(v, p) for v, p in zip(child.term.args, [Progression(64, 32), Progression(32, 0)])
    ] == [True, True]
    assert same(child.term.kwargs["stride"], Progression(1, 0))


def test_in_a_stage_two_differing_blocks_stay_two_and_three_growing_ones_are_a_run():
    two = [[conv(64, 64)], [conv(64, 128)]]
    assert [len(r) for r in segment(two, named=False, grow=False)] == [1, 1]
    three = [[conv(64, 64)], [conv(64, 128)], [conv(64, 192)]]
    assert [len(r) for r in segment(three, named=False, grow=False)] == [3]


def test_named_units_must_be_numbered_consecutively():
    units = [[conv(64, 32, name=f"denselayer{n}")] for n in (1, 2, 4)]
    assert [len(r) for r in segment(units, named=True, grow=True)] == [2, 1]


def test_a_run_of_one_has_no_step():
    (child,) = progression_unit([[conv(64, 32)]])
    assert child.term.args[0].step is MISSING


# ---- generalize (anti-unification) ----------------------------------------------------------


def test_two_layers_generalise_to_one_pattern_with_holes_where_they_differ():
    a, b = conv(64, 64).term, conv(64, 128, stride=2).term
    pattern = AntiUnifier().term([a, b], "conv1")
    assert isinstance(pattern, LayerCall) and pattern.cls == "Conv2d"
    assert [h.column for h in pattern.args] == [[64, 64], [64, 128]]
    assert [h.origin for h in pattern.args] == ["conv1_in_channels", "conv1_out_channels"]
    assert pattern.kwargs["stride"].column == [1, 2]


def test_a_keyword_one_layer_leaves_at_its_default_is_filled_from_the_primitives_parameter():
    a = LayerCall("Conv2d", [64, 64], {}, ConvParams(out=64))
    b = LayerCall("Conv2d", [64, 64], {"stride": 2}, ConvParams(out=64, stride=2))
    pattern = AntiUnifier().term([a, b], "conv")
    assert pattern.kwargs["stride"].column == [1, 2]


def test_different_layer_classes_do_not_generalise():
    linear = LayerCall("Linear", [64, 10], {}, ConvParams(out=10))
    with pytest.raises(Unmergeable):
        AntiUnifier().term([conv(64, 64).term, linear], "x")
    with pytest.raises(Unmergeable):
        AntiUnifier().term([conv(64, 64).term, Container("nn.Sequential", True, [])], "x")


def test_layer_classes_taking_the_same_arguments_generalise_to_a_class_argument():
    relu = LayerCall("ReLU", [], {"inplace": True}, ActParams(inplace=True))
    hardswish = LayerCall("Hardswish", [], {"inplace": True}, ActParams(inplace=True))
    pattern = AntiUnifier().term([relu, hardswish, relu], "act")
    assert pattern.layer.column == [LayerRef("nn.ReLU"), LayerRef("nn.Hardswish"), LayerRef("nn.ReLU")]
    assert pattern.kwargs["inplace"].column == [True, True, True]
    assert literal(LayerRef("nn.ReLU")) == "nn.ReLU" and annotation(pattern.layer.column) == "type[nn.Module]"
    plain = LayerCall("ReLU", [], {}, ActParams())  # nn.ReLU() and nn.Hardswish(inplace=True)
    with pytest.raises(Unmergeable):
        AntiUnifier().term([plain, hardswish], "act")


def test_numbered_layers_align_by_the_spec_entry_that_wrote_them():
    """[expand, depthwise, project] and [depthwise, se, project]: by position the depthwise
    convolution would meet the expansion; by slot each layer meets its own kind."""

    def at(child: Child, slot: int, condition: str = "") -> Child:
        child.slot, child.condition = ("body", slot), condition
        return child

    full = [at(conv(16, 64, name="0"), 0, "${expand}"), at(conv(64, 64, name="1"), 1), at(conv(64, 24, name="2"), 3)]
    short = [at(conv(16, 16, name="0"), 1), at(conv(16, 16, name="1"), 2, "${se}"), at(conv(16, 24, name="2"), 3)]
    by_position = AntiUnifier().entries([full, short], True, "", optional=True)
    assert [e.flag for e in by_position] == [None] * 3  # the expansion meets the depthwise conv
    insts = [
        Instance(("block", "b"), "seq", (c_in, 8, 8), (24, 8, 8), {"expand": e, "se": s})
        for c_in, e, s in ((16, True, False), (16, False, True))
    ]
    unifier = AntiUnifier(Resolver(insts, None), slots=True)
    entries = unifier.entries([full, short], True, "", optional=True)
    assert [e.flag.expr if e.flag else None for e in entries] == ["expand", None, "se", None]
    assert entries[1].term.args[0].column == [64, 16]  # the depthwise convolutions together
    unsaid = [at(conv(16, 16, name="0"), 1), at(conv(16, 16, name="1"), 2), at(conv(16, 24, name="2"), 3)]
    with pytest.raises(Unmergeable):  # a numbered layer's flag must say what it means: its `if`
        AntiUnifier(Resolver(insts, None), slots=True).entries([full, unsaid], True, "", optional=True)


def test_an_entry_only_some_instances_have_becomes_optional_behind_a_flag():
    with_projection = [conv(64, 64, name="conv"), conv(64, 256, name="downsample")]
    without = [conv(256, 64, name="conv")]
    entries = AntiUnifier().entries([with_projection, without], False, "", optional=True)
    assert [e.name for e in entries] == ["conv", "downsample"]
    assert entries[0].flag is None
    assert entries[1].flag.column == [True, False] and entries[1].flag.role == "flag"
    with pytest.raises(Unmergeable):  # where layers may not be optional (a container's body)
        AntiUnifier().entries([with_projection, without], False, "", optional=False)


def test_merge_orders_is_the_ordered_union_or_unmergeable():
    assert merge_orders([["a", "b"], ["a", "c", "b"]]) == ["a", "c", "b"]
    assert merge_orders([["conv1"], ["conv1", "bn1"]]) == ["conv1", "bn1"]
    with pytest.raises(Unmergeable):
        merge_orders([["a", "b"], ["b", "a"]])


# ---- arguments --------------------------------------------------------------------------------


def block(width: int, stride: int, c_in: int) -> Instance:
    return Instance(
        ("block", "b"), "seq", (c_in, 8, 8), (width * 4, 8, 8), {"width": width, "stride": stride}
    )


def test_holes_are_named_after_the_first_candidate_with_their_values():
    resolver = Resolver([block(64, 1, 64), block(128, 2, 256)], None)
    holes = {
        "width": Hole([64, 128], "conv1_out_channels"),
        "stride": Hole([1, 2], "conv2_stride"),
        "in": Hole([64, 256], "conv1_in_channels"),
        "out": Hole([256, 512], "conv3_out_channels"),
        "same": Hole([3, 3], "conv2_kernel_size"),
        "odd": Hole([7, 9], "conv2_groups"),
    }
    for hole in holes.values():
        resolver.resolve(hole)
    assert {k: h.expr for k, h in holes.items()} == {
        "width": "width",
        "stride": "stride",
        "in": "in_channels",
        "out": "out_channels",
        "same": "3",
        "odd": "conv2_groups",
    }
    assert [p.name for p in resolver.ordered()] == [
        "in_channels",
        "width",
        "stride",
        "out_channels",
        "conv2_groups",
    ]


def test_a_let_the_class_can_compute_is_computed_not_passed():
    """`padding = (kernel - 1) // 2` in __init__, as torchvision's Conv2dNormActivation; a let
    calling a function (make_divisible) stays an argument, and so does one reading it (else
    both would be passed); an `if:` reading a let tests it."""
    template = Template(
        params={"kernel": None, "width": None},
        let={"padding": "${(kernel - 1) // 2}", "mid": "${make_divisible(width, 8)}", "expand": "${mid != in_channels}"},
        body="relu",
    )
    insts = [
        Instance(("block", "b"), "seq", (c_in, 8, 8), (c_in, 8, 8), {"kernel": k, "width": w})
        for c_in, k, w in ((16, 3, 16), (16, 5, 30))
    ]
    resolver = Resolver(insts, template)
    padding, mid, flag = Hole([1, 2], "conv_padding"), Hole([16, 32], "conv_out"), Hole([False, True], "x", "flag")
    for hole in (padding, mid):
        resolver.resolve(hole)
    assert resolver.condition(flag, "${expand}")
    assert (padding.expr, mid.expr, flag.expr) == ("padding", "mid", "expand")
    assert [p.name for p in resolver.ordered()] == ["kernel", "mid", "expand"]
    assert resolver.local_lines() == ["padding = (kernel - 1) // 2"]


def test_arguments_with_defaults_go_last_flags_last_of_all():
    resolver = Resolver([block(64, 1, 64), block(64, 2, 256)], None)
    flag = Hole([True, False], "downsample", "flag")
    odd = Hole([7, 9], "conv_groups")
    for hole in (flag, odd, Hole([1, 2], "conv_stride"), Hole([64, 256], "conv_in")):
        resolver.resolve(hole)
    params = resolver.ordered()
    assert [p.name for p in params] == ["in_channels", "stride", "conv_groups", "downsample"]
    assert params[-1].default is False and params[0].default is NO_DEFAULT


def test_argument_order_is_named_not_a_magic_tuple():
    ordered = sorted(
        [
            Order(Source.FLAG),
            Order(Source.OUTPUT),
            Order(Source.BLOCK_PARAM, 1),
            Order(Source.INPUT),
            Order(Source.BLOCK_PARAM, 0),
        ]
    )
    assert ordered == [
        Order(Source.INPUT),
        Order(Source.BLOCK_PARAM, 0),
        Order(Source.BLOCK_PARAM, 1),
        Order(Source.OUTPUT),
        Order(Source.FLAG),
    ]


def test_a_model_parameter_passes_down_under_its_own_name():
    resolver = Resolver([block(64, 1, 64), block(64, 1, 64)], None)
    hole = Hole([Var("num_classes", 10), Var("num_classes", 10)], "fc_out_features")
    resolver.resolve(hole)
    assert hole.expr == "num_classes"
    assert [p.order.source for p in resolver.ordered() if p.name == "num_classes"] == [
        Source.MODEL_PARAM
    ]


def test_a_class_call_pattern_maps_each_argument_to_its_hole():
    inst = block(64, 1, 64)
    call = ClassCall(inst, {"width": Hole([64], "width")})
    assert call.values["width"].column == [64]


# ---- render: imports --------------------------------------------------------------------------


def test_imports_follow_the_names_the_code_uses_not_its_strings():
    assert imports(names('x = nn.ReLU()\ny = "torch OrderedDict"\n')) == [["from torch import nn"]]
    code = "m = OrderedDict(a=nn.ReLU())\ndef f(x: torch.Tensor) -> None: ...\n"
    assert imports(names(code)) == [
        ["from collections import OrderedDict"],
        ["import torch", "from torch import nn"],
    ]


# ---- the Spec carries what codegen needs -----------------------------------------------------

TINY = """\
# A tiny network for codegen's tests.
# The second line of its description.
archc: 1
name: tiny
input: [3, 16, 16]
params: {num_classes: 10, base: 8}
blocks:
  unit:
    doc: Conv, BN, ReLU at a given width.
    params: {width: ~, stride: 1}
    body:
      seq:
        conv: {conv: {out: "${width}", kernel: 3, stride: "${stride}", padding: 1, bias: false}}
        bn: batchnorm
        relu: relu
body:
  stem: {unit: {width: "${base * 2}"}}
  layer1: {stage: {block: unit, depth: 3, width: 16}}
  layer2: {stage: {block: unit, depth: 2, width: 32, stride: 2}}
  pool: {adaptive_avgpool: 1}
  flatten: flatten
  fc: {linear: {out: "${num_classes}"}}
"""


def test_loads_and_load_generate_the_same_code(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    from_file = generate(archc.load(path), "tiny.yaml")
    elsewhere = str(tmp_path / "no such folder" / "tiny.yaml")  # nothing to re-read there
    from_text = generate(archc.loads(TINY, elsewhere), "tiny.yaml")
    assert from_text == from_file
    assert "A tiny network for codegen's tests.\nThe second line of its description." in from_text
    assert '"""Conv, BN, ReLU at a given width."""' in from_text  # the user template's doc
    assert "def tiny(num_classes: int = 10) -> Tiny:" in from_text  # probed from the Document
    assert "Fixed in this file: base=8" in from_text


@pytest.mark.parametrize("name", ["googlenet.yaml", "d2l/densenet.yaml", "d2l/resnet18.yaml"])
def test_shipped_specs_generate_the_same_code_from_text(name, tmp_path):
    path = ROOT / "specs" / name
    text = path.read_text(encoding="utf-8")
    from_text = archc.loads(text, str(tmp_path / "gone" / path.name))
    assert generate(from_text, f"specs/{name}") == generate(archc.load(path), f"specs/{name}")


def test_a_spec_carries_its_comments_templates_and_document():
    spec = archc.loads(TINY)
    assert spec.comments == [
        "A tiny network for codegen's tests.",
        "The second line of its description.",
    ]
    assert spec.templates["unit"].doc == "Conv, BN, ReLU at a given width."
    assert "bottleneck" in spec.templates  # the built-in library's too
    assert spec.document is not None and spec.document.text == TINY


# ---- files: the backend returns what it did, the CLI prints it ----------------------------------


def test_write_all_returns_what_it_wrote_and_what_failed_and_prints_nothing(tmp_path, capsys):
    from archc.backends.codegen import write_all
    from archc.errors import ArchcError

    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny.yaml").write_text(TINY, encoding="utf-8")
    (specs / "bad.yaml").write_text("archc: 1\nname: bad\n", encoding="utf-8")
    out = tmp_path / "out"
    first = write_all([str(specs), str(tmp_path / "missing")], out)
    assert first.written == [out / "tiny.py"] and first.unchanged == []
    assert [type(e).__name__ for e in first.errors] == ["SpecError", "OutputError"]
    assert all(isinstance(e, ArchcError) for e in first.errors)
    again = write_all([str(specs / "tiny.yaml")], out)
    assert (again.written, again.unchanged, again.errors) == ([], [out / "tiny.py"], [])
    assert capsys.readouterr() == ("", "")

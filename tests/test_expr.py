"""The `${...}` language is data: no attribute access, no imports, no unbounded arithmetic."""

from __future__ import annotations

import pytest

from archc.spec.expr import ExprError, evaluate, names


@pytest.mark.parametrize(
    "source, expected",
    [
        ("int(width * base_width / 64) * groups", 128),
        ("width * 4 if stride == 1 else width", 256),
        ("max(1, width // 128)", 1),
        ("c2[1] + c2[0]", 224),
        ("not (stride != 1 and groups > 1)", True),
        ("ceil(width / 3)", 22),
        ("1 < stride <= 2", False),
    ],
)
def test_evaluates_arithmetic(source, expected):
    env = {"width": 64, "base_width": 128, "groups": 1, "stride": 1, "c2": [96, 128]}
    assert evaluate(source, env) == expected


@pytest.mark.parametrize(
    "source",
    [
        "width.__class__",
        "__import__('os').system('true')",
        "open('/etc/passwd')",
        "[x for x in range(10)]",
        "lambda: 1",
        "'abc'",
        "int(x=1)",
        "10 ** 1000",
        "2 ** 40 * 2 ** 40",
        "1 / 0",
        "unknown + 1",
        "c2[5]",
        "width[0]",
        "(yield)",
        "x := 1",
        "a" * 600,
    ],
)
def test_refuses_anything_else(source):
    with pytest.raises(ExprError):
        evaluate(source, {"width": 64, "c2": [1, 2], "a": 1})


def test_names_lists_variables_not_functions():
    assert names("max(width, in_channels) * groups") == {"width", "in_channels", "groups"}

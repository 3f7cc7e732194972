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
        "{x for x in c2}",  # list comprehensions only: no sets, dicts or generators
        "{x: 1 for x in c2}",
        "sum(x for x in c2)",
        "c2[0:1]",
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


# ---- lists: displays, comprehensions, range and friends (issue 14, RegNet's design space) ----


@pytest.mark.parametrize(
    "source, expected",
    [
        ("[1, width, 2 * width]", [1, 64, 128]),
        ("[w * 2 for w in c2]", [192, 256]),
        ("[w for w in range(10) if w % 3 == 0]", [0, 3, 6, 9]),
        ("[a * b for a in [1, 2] for b in [10, 100]]", [10, 100, 20, 200]),
        ("[[i, w] for i, w in enumerate(c2)]", [[0, 96], [1, 128]]),
        ("[a + b for a, b in zip(c2, [1, 2, 3])]", [97, 130]),
        ("range(2, 11, 4)", [2, 6, 10]),
        ("len(range(5)) + sum([1, 2.5])", 8.5),
        ("[0] + c2", [0, 96, 128]),
        ("round(log(8) / log(2))", 3),
        ("log(100, 10)", 2.0),
        ("exp(0)", 1.0),
        ("[w for i, w in enumerate([1, 1, 2, 2, 3]) if i == 0 or w != [1, 1, 2, 2, 3][i - 1]]", [1, 2, 3]),
        ("[len([b for b in [8, 8, 16] if b == w]) for w in [8, 16]]", [2, 1]),
        ("[w for w in c2][width // 64]", 128),
    ],
)
def test_evaluates_lists(source, expected):
    env = {"width": 64, "c2": [96, 128]}
    assert evaluate(source, env) == expected


@pytest.mark.parametrize(
    "source, words",
    [
        ("range(20000)", "range(): gives 20,000 numbers; a list holds at most 10,000"),
        ("range(1, 2, 0)", "the step cannot be 0"),
        ("range(2.5)", "each argument is a whole number"),
        ("[a for a in range(10000) for b in range(10000)]", "more than 10,000 items"),
        ("[len(range(9000)) for a in range(100)]", "more than 100,000 list items"),
        ("range(9000) + range(9000)", "more than 10,000 items"),
        ("[w for w in 3]", "a comprehension goes over a list, not int 3"),
        ("[a for a, b in [1, 2]]", "cannot unpack 1 into 2 names (a, b)"),
        ("[w for w.x in c2]", "a comprehension's variable is a name or names"),
        ("(1, 2)", "tuples are not allowed"),
        ("len(3)", "the argument is a list"),
        ("sum([1, [2]])", "sum needs numbers"),
        ("log(0)", "log(): math domain error"),
        ("[1, 2] * 3", "needs numbers, not list"),
        ("c2 + 1", "needs numbers, not list"),
        ("[w for w in c2 if undefined]", "unknown name 'undefined'"),
    ],
)
def test_list_features_are_bounded_and_checked(source, words):
    with pytest.raises(ExprError) as info:
        evaluate(source, {"c2": [96, 128]})
    assert words in str(info.value)


def test_comprehension_variables_are_not_names_read():
    assert names("[w * k for w in widths if w > 0]") == {"widths", "k"}
    assert names("[a + b for a, b in zip(xs, ys)]") == {"xs", "ys"}

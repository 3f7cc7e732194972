"""archc.ir.Node: the copy the repeat fast path makes, and the walk every pass uses."""

from __future__ import annotations

import dataclasses

from archc.ir import Node


def tree(depth: int, fanout: int, name: str = "r") -> Node:
    node = Node(name, "seq" if depth else "relu")
    node.children = [tree(depth - 1, fanout, f"{name}.{i}") for i in range(fanout)] if depth else []
    return node


def test_clone_copies_every_field():
    """A field added to Node and forgotten in `clone` (slotted: copied by name) fails here."""
    values = {f.name: object() for f in dataclasses.fields(Node) if f.name != "children"}
    original = Node(**values, children=[Node("leaf", "relu")])
    copy = original.clone()
    for name, value in values.items():
        assert getattr(copy, name) is value, name
    assert copy is not original
    assert copy.children is not original.children and copy.children[0] is not original.children[0]
    assert copy.children[0] == original.children[0]


def test_clone_is_a_deep_copy_of_the_tree_structure():
    original = tree(3, 3)
    copy = original.clone()
    assert copy == original
    originals = list(original.walk())
    copies = list(copy.walk())
    assert len(copies) == len(originals) == 1 + 3 + 9 + 27
    assert all(a is not b and a.children is not b.children for a, b in zip(originals, copies))
    copy.children[0].children.append(Node("new", "relu"))
    copy.children[1].name = "renamed"
    assert len(original.children[0].children) == 3 and original.children[1].name == "r.1"


def test_walk_is_pre_order():
    def recursive(node: Node):
        yield node
        for child in node.children:
            yield from recursive(child)

    root = tree(3, 2)
    root.children[1].children = []  # uneven depths
    assert [n.name for n in root.walk()] == [n.name for n in recursive(root)]
    assert [n.name for n in root.walk()][:4] == ["r", "r.0", "r.0.0", "r.0.0.0"]


def test_a_node_holds_only_its_fields():
    """Slotted (no per-node __dict__): a 10,000-block tree is 70,000 nodes."""
    assert not hasattr(Node("x", "relu"), "__dict__")

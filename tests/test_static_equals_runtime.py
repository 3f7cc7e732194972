"""Invariant 1: every node's static shape is the shape the built module produces."""

from __future__ import annotations

import contextlib

import pytest
import torch

import archc
from archc.backends.torch_backend import check_shapes, module_nodes
from conftest import HEAVY, MODELS, small_overrides


@pytest.mark.parametrize("name", MODELS)
def test_static_shapes_equal_runtime_shapes(name):
    spec = archc.load(name, overrides=small_overrides(name))
    # a HEAVY model runs on the meta device: every shape checked, no weights allocated
    with torch.device("meta") if name in HEAVY else contextlib.nullcontext():
        model = archc.build(spec)
        assert check_shapes(model, spec, batch=1) == []
    assert sum(p.numel() for p in model.parameters()) == spec.param_count
    assert sum(1 for _ in module_nodes(spec)) > 0


def test_check_shapes_reports_a_mismatch(write_spec):
    spec = archc.load(write_spec("archc: 1\nname: t\ninput: [3, 8, 8]\nbody:\n  c: {conv: {out: 4, kernel: 3}}\n"))
    model = archc.build(spec)
    spec.tree.children[0].out_shape = (4, 7, 7)  # corrupt the static side
    problems = check_shapes(model, spec, batch=1)
    assert problems and "c: static 4×7×7, runtime 4×6×6" in problems[0]

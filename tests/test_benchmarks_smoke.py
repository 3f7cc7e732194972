"""The benchmark harness runs (quick mode, one small spec) and writes a table of ratios.

No timing is asserted here: figures live in benchmarks/RESULTS.md. This also checks that the
expansion fast paths the scaling benchmark relies on give exactly the tree of the slow paths.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import archc
from archc.expand import Expander
from archc.spec import expr
from conftest import ALL_SPECS, ROOT

pytest.importorskip("torchvision")


def test_quick_benchmark_writes_a_table_of_ratios(tmp_path):
    out = tmp_path / "RESULTS.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "scaling,construct,eval,compare",
         "--specs", "resnet18", "--output", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "| machine |" in text and "torchvision" in text and "## Summary" in text
    for title in ("Scaling with network depth", "Construction time", "Eval on a tiny input", "Against torch.compile"):
        assert f"### {title}" in text
    rows = [line for line in text.splitlines() if line.startswith("| resnet18")]
    assert len(rows) >= 2, text
    assert all(re.search(r"\| \d+\.\d{3}x \[", row) for row in rows), rows  # a ratio with its IQR


def test_repeat_and_expression_fast_paths_change_nothing(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.bench_scaling import deep_spec

    texts = [path.read_text() for path in ALL_SPECS] + [deep_spec(40)]
    files = [str(path) for path in ALL_SPECS] + ["<deep>"]
    fast = [archc.loads(text, file) for text, file in zip(texts, files)]
    monkeypatch.setattr(Expander, "reuse_repeats", False)
    monkeypatch.setattr(Expander, "evaluate", lambda self, source, env: expr.evaluate(source, env))
    slow = [archc.loads(text, file) for text, file in zip(texts, files)]
    for a, b, file in zip(fast, slow, files):
        assert a.tree == b.tree, file  # every field of every node: names, params, shapes, locations

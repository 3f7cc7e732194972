"""validate and summary must not import torch (they have to start fast)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT

PROBE = """
import sys
from archc.cli import main
code = main({argv!r})
assert code == 0, code
heavy = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH_MODULES", len(heavy))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "specs/resnet50.yaml"],
        ["summary", "specs/resnet50.yaml"],
        ["summary", "specs/resnet50.yaml", "--json"],
        ["list"],
        ["summary", "resnet50"],
    ],
    ids=["validate", "summary", "summary-json", "list", "summary-by-name"],
)
def test_static_commands_do_not_import_torch(argv):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert "TORCH_MODULES 0" in out.stdout


def test_api_load_and_summary_do_not_import_torch():
    code = (
        "import sys, archc; s = archc.load('specs/resnet50.yaml'); archc.summary(s);"
        "print(any(m == 'torch' for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr

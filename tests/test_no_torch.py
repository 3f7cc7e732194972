"""validate and summary must not import torch (they have to start fast), and no command imports
a heavy library it does not use: jinja2 is codegen's, graphviz draw's, torch build's."""

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


HEAVY = ("torch", "torchvision", "jinja2", "graphviz", "numpy")
IMPORTS = """
import sys
from archc.cli import main
code = main({argv!r})
assert code == 0, code
print("HEAVY", sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r})))
"""


@pytest.mark.parametrize(
    ("argv", "needs"),
    [
        (["validate", "specs/resnet50.yaml"], []),
        (["summary", "resnet50"], []),
        (["list"], []),
        (["schema"], []),
        (["codegen", "specs/resnet.yaml", "--variant", "resnet50", "-o", "{out}"], ["jinja2"]),
        (["draw", "resnet50", "-o", "{out}/resnet50.dot"], ["graphviz"]),
    ],
    ids=["validate", "summary", "list", "schema", "codegen", "draw"],
)
def test_each_command_imports_only_the_libraries_it_uses(argv, needs, tmp_path):
    argv = [a.replace("{out}", str(tmp_path)) for a in argv]
    if "draw" in argv:
        pytest.importorskip("graphviz")
    out = subprocess.run(
        [sys.executable, "-c", IMPORTS.format(argv=argv, heavy=HEAVY)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"HEAVY {sorted(needs)!r}" in out.stdout, out.stdout


PLUGINS = """
import sys
import archc.cli
from archc.__main__ import run
archc.cli.QUICK_EXIT = frozenset()  # return here instead of ending the process
sys.argv = ["archc", "validate", "-q", "specs/resnet50.yaml"]
code = run()
from pydantic.plugin._loader import get_plugins
print("PLUGINS", code, "importlib.metadata" in sys.modules, list(get_plugins()))
"""


@pytest.mark.parametrize(
    ("setting", "metadata"),
    [(None, False), ("__all__", False), ("some_plugin", True)],
    ids=["unset", "all-off", "one-off"],
)
def test_the_command_line_skips_pydantic_plugin_discovery_unless_plugins_are_wanted(setting, metadata):
    """`python -m archc` turns pydantic's plugins off (its models are internal) and then skips
    the loader's `importlib.metadata` import; a user's own setting is kept, and with plugins on
    the real loader runs."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = setting
    out = subprocess.run([sys.executable, "-c", PLUGINS], capture_output=True, text=True, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert f"PLUGINS 0 {metadata} []" in out.stdout, out.stdout

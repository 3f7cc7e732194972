"""Shared helpers for the test suite."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
ALL_SPECS = sorted(SPECS.rglob("*.yaml"))
# archc.cache keeps the tests' values in the checkout (.cache/ is ignored), not in ~/.cache
os.environ.setdefault("ARCHC_CACHE_DIR", str(ROOT / ".cache" / "archc"))


def shipped_models() -> dict:
    """Every shipped model by name (a family spec's variants each): archc's own registry."""
    from archc import registry

    assert registry.SPECS_DIR.resolve() == SPECS.resolve(), (
        "archc is imported from another checkout"
    )
    return registry.models()


MODELS = list(shipped_models())  # "alexnet", "efficientnet_b3", "d2l/nin", ...

# Big models the generic parity and static = runtime tests run on a small input, to keep the
# suite fast: fully convolutional up to the global pool, they change only in spatial size.
SMALL_INPUT = {
    name: [3, 64, 64]
    for name in (
        *("convnext_small", "convnext_base", "convnext_large"),
        *(f"regnet_{xy}_{size}" for xy in "xy" for size in ("1_6gf", "3_2gf", "8gf")),
    )
}


def small_overrides(name: str) -> list[str]:
    """The `--set` overrides giving a model its small input (none for most models)."""
    return [f"input={SMALL_INPUT[name]}"] if name in SMALL_INPUT else []


# Shipped models too big to build with real weights in every generic test on a 2-core machine
# (with init and a full-size forward pass, 20 s to 2 min each, several GiB). The generic tests
# check these on the meta device, with no weights: static = runtime for every shape, generated
# code = live build for the state_dict keys and shapes; torchvision parity is left to the
# family's own test (tests/test_regnet.py: keys and shapes against torchvision's model on the
# meta device, outputs and initial weights on a representative subset of the family).
HEAVY = {
    "regnet_y_128gf": "644M parameters, 128 GFLOPs (the build alone takes ~30 s)",
    "regnet_y_32gf": "145M parameters, 32 GFLOPs",
    "regnet_x_32gf": "108M parameters, 32 GFLOPs",
    "regnet_y_16gf": "84M parameters, 16 GFLOPs",
    "regnet_x_16gf": "54M parameters, 16 GFLOPs",
}


def spec_id(path: Path) -> str:
    return str(path.relative_to(SPECS).with_suffix(""))


def run_archc(
    *args: str, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "archc", *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def assert_spec_error(path: Path, line: int, words: str, capsys) -> None:
    """`archc validate path` fails with `path:line:col: error: ...words...` and no traceback."""
    from archc.cli import main

    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    first = err.strip().splitlines()[0]
    assert re.match(rf"^{re.escape(str(path))}:{line}:\d+: error: ", first), err
    assert words in first, err
    assert "Traceback" not in err


@pytest.fixture
def write_spec(tmp_path):
    """Write YAML text to a spec file and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write

"""`archc validate/summary/codegen/draw` on resnet50, in a fresh interpreter, vs `import torch`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.config import Config
from benchmarks.harness import ROOT, Row, Section, check, log, measure

TARGET = 0.15
SPEC = "specs/resnet50.yaml"

# the probe runs a command in-process and reports which heavy modules it imported
PROBE = """
import json, sys
from archc.cli import main
code = main({argv!r})
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'torchvision', 'numpy', 'jinja2', 'graphviz'}})
print(json.dumps({{'code': code, 'heavy': heavy}}))
"""


def commands(out: Path) -> dict[str, list[str] | str]:
    """The command lines, or why one cannot run here."""
    cmds: dict[str, list[str] | str] = {
        "validate": ["validate", SPEC],
        "summary": ["summary", SPEC],
    }
    try:
        from archc.backends import codegen  # noqa: F401

        cmds["codegen"] = ["codegen", SPEC, "-o", str(out / "generated"), "--force"]
    except ImportError:
        cmds["codegen"] = "skipped: codegen not available"
    try:
        from archc.backends import graphviz_backend  # noqa: F401

        cmds["draw"] = ["draw", SPEC, "-o", str(out / "resnet50.dot"), "--force"]
    except ImportError:
        cmds["draw"] = "skipped: draw not available"
    return cmds


def run(cfg: Config) -> Section:
    section = Section(
        "cli",
        "CLI wall time (resnet50, fresh interpreter)",
        f'`python -m archc COMMAND {SPEC}` as a subprocess, against `python -c "import torch"` '
        "in the same interleaved rounds; ratio = archc / import torch.",
        f"≤ {TARGET}x, and no torch import on these paths",
        columns=("archc", "import torch"),
    )
    out = Path(tempfile.mkdtemp(prefix="archc-bench-cli-"))
    try:
        cmds = commands(out)
        runnable = {k: v for k, v in cmds.items() if isinstance(v, list)}

        def call(argv: list[str]):
            return lambda: subprocess.run(
                [sys.executable, "-m", "archc", *argv], cwd=ROOT, check=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

        cases = {name: call(argv) for name, argv in runnable.items()}
        cases["import torch"] = lambda: subprocess.run(
            [sys.executable, "-c", "import torch"], cwd=ROOT, check=True
        )
        cases["python -c pass"] = lambda: subprocess.run(
            [sys.executable, "-c", "pass"], cwd=ROOT, check=True
        )
        log(f"cli: {', '.join(cases)}")
        timings = measure(cases, rounds=cfg.rounds(9, 2), warmup=1)
        torch_time = timings.median("import torch")
        for name, argv in cmds.items():
            if not isinstance(argv, list):
                section.add(Row(name, None, None, None, status=argv))
                continue
            probe = subprocess.run(
                [sys.executable, "-c", PROBE.format(argv=argv)],
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            try:
                heavy = json.loads(probe.stdout.strip().splitlines()[-1])["heavy"]
            except (IndexError, ValueError, KeyError):
                heavy = ["?"]
            ratio, q1, q3 = timings.ratio(name, "import torch")
            status = check(ratio, TARGET)
            if "torch" in heavy:
                status = "MISS"
            section.add(Row(
                name, timings.median(name), torch_time, ratio, (q1, q3), status,
                "imports " + ", ".join(heavy) if heavy else "no torch",
            ))  # fmt: skip
        floor, q1, q3 = timings.ratio("python -c pass", "import torch")
        section.add(
            Row(
                "`python -c pass` (floor)",
                timings.median("python -c pass"),
                torch_time,
                floor,
                (q1, q3),
                "info",
            )
        )
        section.notes.append(
            "draw writes DOT (`-o resnet50.dot`): rendering an image is Graphviz's `dot` process, not archc."
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return section

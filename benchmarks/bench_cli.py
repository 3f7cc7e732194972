"""Every `archc` command on resnet50 (validate, summary, codegen, draw, list, schema), in a fresh
interpreter, against `python -c "import torch"`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.config import Config
from benchmarks.harness import ROOT, Row, Section, check, log, measure

TARGET = 0.10
MODEL = "resnet50"  # a shipped model's name: the registry finds its family spec and variant

# the probe runs a command in-process and reports which heavy modules it imported
PROBE = """
import json, sys
from archc.cli import main
code = main({argv!r})
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'torchvision', 'numpy', 'jinja2', 'graphviz', 'pydantic'}})
print(json.dumps({{'code': code, 'heavy': heavy}}))
"""
NEEDED = {"codegen": {"jinja2"}, "draw": {"graphviz"}}  # what each command may import; pydantic is info


def commands(out: Path) -> dict[str, list[str] | str]:
    """The command lines, or why one cannot run here."""
    cmds: dict[str, list[str] | str] = {
        "validate": ["validate", MODEL],
        "summary": ["summary", MODEL],
    }
    try:
        from archc.backends import codegen  # noqa: F401

        cmds["codegen"] = ["codegen", MODEL, "-o", str(out / "generated"), "--force"]
    except ImportError:
        cmds["codegen"] = "skipped: codegen not available"
    try:
        from archc.backends import graphviz_backend  # noqa: F401

        cmds["draw"] = ["draw", MODEL, "-o", str(out / f"{MODEL}.dot"), "--force"]
    except ImportError:
        cmds["draw"] = "skipped: draw not available"
    cmds["list"] = ["list"]
    cmds["schema"] = ["schema"]
    return cmds


def environment(cache: Path) -> dict[str, str]:
    """The children's environment: as an installed archc runs, with its bytecode written
    (PYTHONDONTWRITEBYTECODE dropped; the warm-up round compiles it) and its cache in a
    folder of this run's (filled by the warm-up round)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["ARCHC_CACHE_DIR"] = str(cache)
    return env


def run(cfg: Config) -> Section:
    clock = "children" if cfg.clock == "cpu" else "wall"
    what = "CPU time (user + system) of the process" if clock == "children" else "wall time"
    section = Section(
        "cli",
        f"CLI start-up ({MODEL}, fresh interpreter)",
        f"`python -m archc COMMAND {MODEL}` as a subprocess, against `python -c \"import torch\"` "
        f"in the same interleaved rounds; {what}; ratio = archc / import torch. Bytecode compiled "
        "and archc's cache (archc/cache.py) filled by the warm-up round, as on a machine that "
        "has run archc before.",
        f"≤ {TARGET}x, and no import of a library the command does not use",
        columns=("archc", "import torch"),
    )
    out = Path(tempfile.mkdtemp(prefix="archc-bench-cli-"))
    env = environment(out / "cache")
    try:
        cmds = commands(out)
        runnable = {k: v for k, v in cmds.items() if isinstance(v, list)}

        def call(argv: list[str], env=env):
            return lambda: subprocess.run(
                [sys.executable, "-m", "archc", *argv], cwd=ROOT, check=True, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

        cases = {name: call(argv) for name, argv in runnable.items()}
        if "list" in runnable:
            cases["list, cache off"] = call(["list"], {**env, "ARCHC_CACHE_DIR": "none"})
        cases["import torch"] = lambda: subprocess.run(
            [sys.executable, "-c", "import torch"], cwd=ROOT, check=True, env=env
        )
        cases["python -c pass"] = lambda: subprocess.run(
            [sys.executable, "-c", "pass"], cwd=ROOT, check=True, env=env
        )
        log(f"cli: {', '.join(cases)}")
        timings = measure(cases, rounds=cfg.rounds(9, 2), warmup=1, clock=clock)
        torch_time = timings.median("import torch")
        for name, argv in cmds.items():
            if not isinstance(argv, list):
                section.add(Row(name, None, None, None, status=argv))
                continue
            probe = subprocess.run(
                [sys.executable, "-c", PROBE.format(argv=argv)],
                cwd=ROOT, capture_output=True, text=True, env=env,
            )  # fmt: skip
            try:
                heavy = json.loads(probe.stdout.strip().splitlines()[-1])["heavy"]
            except (IndexError, ValueError, KeyError):
                heavy = ["?"]
            ratio, q1, q3 = timings.ratio(name, "import torch")
            status = check(ratio, TARGET)
            unneeded = set(heavy) - NEEDED.get(name, set()) - {"pydantic"}
            if unneeded:
                status = "MISS"
            section.add(Row(
                name, timings.median(name), torch_time, ratio, (q1, q3), status,
                "imports " + ", ".join(heavy) if heavy else "imports none of torch, jinja2, graphviz, pydantic",
            ))  # fmt: skip
        for info in ("list, cache off", "python -c pass"):
            if info not in cases:
                continue
            ratio, q1, q3 = timings.ratio(info, "import torch")
            label = "`python -c pass` (floor)" if info == "python -c pass" else info
            section.add(
                Row(label, timings.median(info), torch_time, ratio, (q1, q3), "info",
                    "every model compiled" if info.startswith("list") else "")
            )  # fmt: skip
        section.notes.append(
            f"draw writes DOT (`-o {MODEL}.dot`): rendering an image is Graphviz's `dot` process, not archc."
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return section

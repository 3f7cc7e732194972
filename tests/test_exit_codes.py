"""Exit status and error output of the `archc` command, run as a user runs it (a subprocess).

0 success; 1 a problem with the spec, an output file or the machine (out of memory, a
file system error), printed as one line, never a traceback; 2 a usage error (argparse);
130 interrupted. An internal error (a bug in archc) prints one line with a hint to rerun with
--debug, and --debug shows the traceback.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archc.cli import main
from conftest import ROOT, SPECS, run_archc
from strategies import examples, profile

GOOD = "archc: 1\nname: tiny\ninput: [3, 8, 8]\nbody:\n  c: {conv: {out: 4, kernel: 3}}\n  r: relu\n"
BAD = GOOD.replace("kernel: 3", "kernel: 3, strid: 2")


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD)
    return path


@pytest.fixture
def bad(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    return path


def run_with_patch(patch: str, *args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter after `patch` (Python source) has broken something."""
    code = f"import sys\nimport archc.cli\n{patch}\nsys.exit(archc.cli.main({list(args)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def no_traceback(result: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr


# ---- 0 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["validate"], ["summary"], ["summary", "--json"], ["build", "--check"]])
def test_success_is_zero(command, good):
    result = run_archc(*command[:1], str(good), *command[1:])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_help_is_zero():
    result = run_archc("--help")
    assert result.returncode == 0 and "validate" in result.stdout


# ---- 1 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "summary", "build", "codegen", "draw"])
def test_a_bad_spec_is_one_with_a_located_message(command, bad, tmp_path):
    if command == "codegen":
        pytest.importorskip("archc.backends.codegen")
        extra = ["-o", str(tmp_path / "out")]
    elif command == "draw":
        pytest.importorskip("archc.backends.graphviz_backend")
        extra = ["-o", str(tmp_path / "out.dot")]
    else:
        extra = []
    result = run_archc(command, str(bad), *extra)
    assert result.returncode == 1
    assert result.stderr.startswith(f"{bad}:5:") and "unknown field 'strid'" in result.stderr
    no_traceback(result)


def test_validate_is_one_if_any_file_is_bad_and_reports_all(good, bad):
    result = run_archc("validate", str(bad), str(good), str(bad))
    assert result.returncode == 1
    assert result.stderr.count(f"{bad}:5:") == 2 and f"{good}: ok" in result.stdout
    no_traceback(result)


def test_a_missing_file_is_one(tmp_path):
    result = run_archc("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "no such file" in result.stderr
    no_traceback(result)


def test_a_model_over_the_memory_limit_is_one_before_anything_is_allocated(tmp_path):
    spec = tmp_path / "huge.yaml"
    spec.write_text(
        "archc: 1\nname: huge\ninput: [3, 64, 64]\nbody:\n  stem: {conv: {out: 64, kernel: 3}}\n"
        "  big: {conv: {out: 1048576, kernel: 512, padding: 256}}\n  pool: {adaptive_avgpool: 1}\n"
    )
    result = run_archc("build", str(spec))  # 64 TiB of weights: torch would be OOM-killed
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith(f"{spec}:6:") and "64.0 TiB" in result.stderr
    assert "--max-memory" in result.stderr and "Nothing was allocated" in result.stderr
    no_traceback(result)


def test_max_memory_can_refuse_and_allow(good):
    refused = run_archc("build", str(good), "--max-memory", "1KiB")
    assert refused.returncode == 1 and "more than the 1.0 KiB limit (the limit you set)" in refused.stderr
    allowed = run_archc("build", str(good), "--max-memory", "none")
    assert allowed.returncode == 0, allowed.stderr


def test_a_file_system_error_is_one_without_a_traceback(good, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_archc("build", str(good), "--save", str(blocker / "weights.pt"))
    assert result.returncode == 1 and "archc: error:" in result.stderr
    assert "internal error" not in result.stderr
    no_traceback(result)


def test_out_of_memory_is_one_without_a_traceback(good):
    result = run_with_patch(
        "import archc.tables\narchc.tables.table = lambda *a, **k: (_ for _ in ()).throw(MemoryError())",
        "summary", str(good),
    )  # fmt: skip
    assert result.returncode == 1 and "out of memory" in result.stderr
    no_traceback(result)


# ---- 2 ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["frobnicate"],
        ["validate"],
        ["summary"],
        ["summary", "x.yaml", "--depth", "deep"],
        ["summary", "x.yaml", "--depth", "-1"],
        ["build", "x.yaml", "--depth", "0"],
        ["draw", "x.yaml", "--depth", "0"],
        ["build", "x.yaml", "--max-memory", "8XB"],
        ["build", "x.yaml", "--max-memory", "-1GiB"],
        ["build", "x.yaml", "--seed", "one"],
        ["build", "x.yaml", "--seed", str(2**70)],
        ["validate", "x.yaml", "--no-such-option"],
        ["draw", "x.yaml", "--direction", "diagonal"],
    ],
)
def test_usage_errors_are_two(args):
    result = run_archc(*args)
    assert result.returncode == 2, result.stderr
    assert "usage:" in result.stderr
    no_traceback(result)


# ---- internal errors ----------------------------------------------------------------------------

BUG = "import archc.tables\narchc.tables.table = lambda *a, **k: 1 / 0"


def test_an_internal_error_is_one_line_with_a_hint(good):
    result = run_with_patch(BUG, "summary", str(good))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archc: internal error: ZeroDivisionError")
    assert "--debug" in lines[0]
    no_traceback(result)


def test_debug_shows_the_traceback_of_an_internal_error(good):
    result = run_with_patch(BUG, "--debug", "summary", str(good))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


def test_debug_shows_the_traceback_of_a_spec_error(bad):
    result = run_archc("--debug", "summary", str(bad))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and f"{bad}:5:" in result.stderr


def test_an_internal_error_with_a_huge_message_stays_short(good):
    result = run_with_patch(
        "import archc.tables\narchc.tables.table = lambda *a, **k: (_ for _ in ()).throw(RuntimeError('x' * 100000))",
        "summary", str(good),
    )  # fmt: skip
    assert result.returncode == 1 and len(result.stderr) < 600
    no_traceback(result)


def test_interrupt_is_130(good):
    result = run_with_patch(
        "import archc.tables\narchc.tables.table = lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt())",
        "summary", str(good),
    )  # fmt: skip
    assert result.returncode == 130 and "interrupted" in result.stderr
    no_traceback(result)


def test_a_closed_pipe_is_quiet():
    spec = SPECS / "resnet50.yaml"
    result = subprocess.run(
        f"{sys.executable} -m archc summary {spec} --depth 3 | head -1",
        shell=True, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.stdout.count("\n") == 1
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "BrokenPipeError" not in result.stderr


def test_a_quick_command_ends_the_process_with_all_its_output_written(tmp_path):
    """validate, summary, ... end with os._exit (no interpreter teardown) after flushing: what
    they print, to a pipe or a file, is all there, and the exit status is the command's."""
    spec = str(SPECS / "resnet50.yaml")
    expected = io.StringIO()
    with redirect_stdout(expected):
        assert main(["summary", spec, "--json"]) == 0
    piped = subprocess.run(
        [sys.executable, "-m", "archc", "summary", spec, "--json"], capture_output=True, text=True, cwd=ROOT
    )
    assert piped.returncode == 0 and piped.stdout == expected.getvalue()
    assert len(piped.stdout) > 8192  # more than Python buffers: the last part is flushed before the exit
    with open(tmp_path / "out.json", "w") as handle:
        done = subprocess.run([sys.executable, "-m", "archc", "summary", spec, "--json"], stdout=handle, cwd=ROOT)
    assert done.returncode == 0 and (tmp_path / "out.json").read_text() == expected.getvalue()
    failed = subprocess.run(
        [sys.executable, "-m", "archc", "validate", spec, str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert failed.returncode == 1 and "resnet50.yaml: ok" in failed.stdout and "no such file" in failed.stderr


@pytest.mark.parametrize(("command", "quick"), [("validate", True), ("draw", True), ("build", False)])
def test_quick_commands_run_with_fewer_collections_and_the_others_as_python_does(command, quick):
    code = (
        "import gc, sys, archc.cli as cli\n"
        "default = gc.get_threshold()\n"
        f"cli.COMMANDS[{command!r}] = lambda args: print('GC', gc.get_threshold() == default, gc.get_threshold()[0]) or 0\n"
        f"cli.main([{command!r}, 'x.yaml'], program=True)\n"
        "print('RETURNED')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    if quick:  # and the process ended there
        assert f"GC False {cli_threshold()}" in out.stdout and "RETURNED" not in out.stdout
    else:
        assert "GC True" in out.stdout and "RETURNED" in out.stdout


def cli_threshold() -> int:
    import archc.cli

    return archc.cli.QUICK_GC_THRESHOLD


# ---- any command line: 0, 1 or 2, never a traceback ---------------------------------------------

WORDS = [
    "validate", "summary", "build", "codegen", "draw", "GOOD", "GOOD", "BAD", "HOSTILE", "MISSING",
    "FOLDER", "--depth", "1", "-1", "x", "--json", "--check", "--seed", "0", "--max-memory", "1KiB",
    "none", "--save", "OUT/w.pt", "-o", "OUT/x.dot", "OUT/gen", "OUT", "--force", "--direction", "LR",
    "--no-shapes", "-q", "--fuse", "--channels-last", "--help", "",
]  # fmt: skip


@settings(profile(), max_examples=examples(ci=60, long=1000))
@given(words=st.lists(st.sampled_from(WORDS), max_size=7))
def test_any_command_line_exits_0_1_or_2_without_a_traceback(words):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "good.yaml").write_text(GOOD)
        (root / "bad.yaml").write_text(BAD)
        (root / "hostile.yaml").write_text("a: &a [1, 2, 3]\nb: [*a, *a, !!python/name:os.system x]\n")
        (root / "out").mkdir()
        names = {"GOOD": "good.yaml", "BAD": "bad.yaml", "HOSTILE": "hostile.yaml", "MISSING": "nope.yaml",
                 "FOLDER": str(root), "OUT": str(root / "out")}  # fmt: skip
        argv = [names.get(w, w.replace("OUT/", f"{root}/out/")) for w in words]
        out, err = io.StringIO(), io.StringIO()
        here = os.getcwd()
        os.chdir(root)  # `draw` without -o writes next to the caller
        try:
            with redirect_stdout(out), redirect_stderr(err):
                try:
                    code = main(argv)
                except SystemExit as exc:  # argparse: --help (0) and usage errors (2)
                    code = exc.code
        finally:
            os.chdir(here)
    assert code in (0, 1, 2), (argv, code, err.getvalue())
    assert "Traceback" not in err.getvalue() and "internal error" not in err.getvalue(), (argv, err.getvalue())
    if code == 1:
        assert err.getvalue().strip(), argv  # a failure always says why

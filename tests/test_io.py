"""Inputs and outputs (issue 10.3): what archc reads and writes, and how the CLI says no.

Saved weights follow the no-clobber rule; only regular files are read as specs (standard input
as `-` or /dev/stdin aside) or replaced as outputs, so a FIFO never hangs archc; symlink loops
and interrupts during imports are one-line errors; --depth means the same everywhere; huge
graphs are refused or drawn collapsed quickly.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import archc
from archc import resources
from archc.backends import graphviz_backend
from archc.cli import main
from archc.outputs import MARKER, OutputError, with_zip_comment, write_atomic, written_by_archc
from conftest import ROOT, run_archc

SPEC = "archc: 1\nname: tiny\ninput: [3, 8, 8]\nbody:\n  c: {conv: {out: 4, kernel: 3}}\n"
QUICK_S = 1.0  # "refused at once": generous for a loaded machine, far below a hang or a blow-up
HANG_S = 20  # a subprocess still running after this is taken as hung


@pytest.fixture
def spec(tmp_path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC)
    return path


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err
    return lines[0]


# ---- build --save: the no-clobber rule ------------------------------------------------------


def test_save_refuses_a_strangers_file_and_force_overwrites_it(spec, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("my notes\n")
    assert main(["build", str(spec), "--depth", "1", "--save", str(target)]) == 1
    assert "not written by archc" in one_line_error(capsys.readouterr().err)
    assert target.read_text() == "my notes\n"
    assert main(["build", str(spec), "--depth", "1", "--save", str(target), "--force"]) == 0
    assert written_by_archc(target)


def test_save_never_overwrites_the_spec_it_builds(spec, capsys):
    assert main(["build", str(spec), "--save", str(spec)]) == 1
    one_line_error(capsys.readouterr().err)
    assert spec.read_text() == SPEC


def test_saved_weights_are_marked_and_load_with_plain_torch_load(spec, tmp_path, capsys):
    import torch

    target = tmp_path / "w.pt"
    assert main(["build", str(spec), "--seed", "0", "--save", str(target)]) == 0
    assert MARKER.encode() in zipfile.ZipFile(target).comment
    model = archc.build(spec, seed=0)
    model.load_state_dict(torch.load(target))  # the marker does not get in the way
    assert main(["build", str(spec), "--seed", "1", "--save", str(target)]) == 0  # ours: replaced
    assert not torch.equal(torch.load(target)["c.weight"], model.state_dict()["c.weight"])


@pytest.mark.parametrize("how", ["trailing slash", "existing folder"])
def test_save_into_a_folder_writes_spec_name_pt_there(how, spec, tmp_path, capsys):
    folder = tmp_path / "weights"
    if how == "existing folder":
        folder.mkdir()
    arg = str(folder) + ("/" if how == "trailing slash" else "")
    assert main(["build", str(spec), "--save", arg]) == 0, capsys.readouterr().err
    assert written_by_archc(folder / "tiny.pt")  # after the spec's `name:`
    assert f"saved state_dict to {folder / 'tiny.pt'}" in capsys.readouterr().out


def test_save_refuses_a_device_even_with_force(spec, tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    device = tmp_path / "null"
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null of our own
    assert main(["build", str(spec), "--save", str(device), "--force"]) == 1
    assert "not a regular file" in one_line_error(capsys.readouterr().err)
    assert stat.S_ISCHR(os.lstat(device).st_mode)


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_outputs_refuse_fifos_and_sockets_even_with_force(kind, tmp_path):
    import socket

    target = tmp_path / "out.dot"
    if kind == "fifo":
        os.mkfifo(target)
    else:
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
    with pytest.raises(OutputError, match="not a regular file"):
        write_atomic(target, f"// {MARKER}\n", force=True)
    assert not target.is_file()


def test_a_symlink_loop_as_output_is_one_line(spec, tmp_path):
    loop = tmp_path / "loop.dot"
    loop.symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(loop)
    done = run_archc("draw", str(spec), "-o", str(loop), timeout=HANG_S)
    assert done.returncode == 1 and "loops" in one_line_error(done.stderr)
    assert loop.is_symlink()  # left as it was


def test_a_symlink_loop_under_codegens_folder_is_one_line(spec, tmp_path):
    out = tmp_path / "gen"
    out.mkdir()
    (out / "spec.py").symlink_to(out / "spec.py")
    done = run_archc("codegen", str(spec), "-o", str(out), timeout=HANG_S)
    assert done.returncode == 1 and "loops" in one_line_error(done.stderr)


def test_codegen_replaces_its_own_file_that_holds_bad_bytes(spec, tmp_path):
    """A file archc wrote that later got non-UTF-8 bytes is simply regenerated."""
    out = tmp_path / "gen"
    assert run_archc("codegen", str(spec), "-o", str(out), timeout=HANG_S).returncode == 0
    target = out / "spec.py"
    good = target.read_bytes()
    target.write_bytes(good + b"\n# \xff\xfe not UTF-8\n")
    done = run_archc("codegen", str(spec), "-o", str(out), timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert target.read_bytes() == good


# ---- FIFOs and standard input ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "summary", "build", "draw", "codegen"])
def test_a_fifo_as_the_spec_is_refused_at_once(command, tmp_path):
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    extra = ["-o", str(tmp_path / "out.dot")] if command == "draw" else []
    extra += ["-o", str(tmp_path / "gen")] if command == "codegen" else []
    done = run_archc(command, str(fifo), *extra, timeout=HANG_S)  # TimeoutExpired: it hung
    assert done.returncode == 1
    assert "not" in one_line_error(done.stderr) and str(fifo) in done.stderr


@pytest.mark.parametrize("target", ["draw", "codegen"])
def test_a_fifo_as_the_output_is_refused_at_once(target, spec, tmp_path):
    if target == "draw":
        fifo, args = tmp_path / "out.dot", ["draw", str(spec), "-o", str(tmp_path / "out.dot")]
    else:
        (tmp_path / "gen").mkdir()
        fifo, args = (
            tmp_path / "gen" / "spec.py",
            ["codegen", str(spec), "-o", str(tmp_path / "gen")],
        )
    os.mkfifo(fifo)
    done = run_archc(*args, timeout=HANG_S)
    assert done.returncode == 1 and "not a regular file" in one_line_error(done.stderr)


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_a_piped_spec_is_read_from_standard_input(name):
    if name != "-" and not Path(name).exists():
        pytest.skip(f"no {name} here")
    done = subprocess.run(
        [sys.executable, "-m", "archc", "validate", name],
        input=SPEC, capture_output=True, text=True, cwd=ROOT, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "tiny: 112 params" in done.stdout


def test_errors_in_standard_input_name_it():
    done = subprocess.run(
        [sys.executable, "-m", "archc", "validate", "-"],
        input=SPEC.replace("kernel: 3", "kernel: x"), capture_output=True, text=True, cwd=ROOT, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 1 and one_line_error(done.stderr).startswith("<stdin>:5:")


@pytest.mark.parametrize("name", ["-", "/dev/stdin"])
def test_codegen_says_why_it_does_not_read_standard_input(name, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "archc", "codegen", name, "-o", str(tmp_path / "gen")],
        input=SPEC, capture_output=True, text=True, cwd=ROOT, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not standard input" in one_line_error(done.stderr)
    assert "no such file" not in done.stderr
    assert not (tmp_path / "gen").exists()


# ---- interrupted during imports ------------------------------------------------------------


def test_an_interrupt_during_imports_is_130(spec, tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "yaml.py").write_text("raise KeyboardInterrupt\n")  # as if ^C came while importing
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}
    done = subprocess.run(
        [sys.executable, "-m", "archc", "validate", str(spec)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 130 and one_line_error(done.stderr) == "interrupted"


def test_the_archc_command_is_interrupt_guarded_too(spec, tmp_path):
    """The installed `archc` script must enter through the same guarded `run` as `-m archc`."""
    script = Path(sys.executable).with_name("archc")
    if not script.exists():
        pytest.skip(f"no archc script beside {sys.executable} (archc not installed in this venv)")
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "json.py").write_text("raise KeyboardInterrupt\n")  # archc.cli imports json first thing
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}
    done = subprocess.run(
        [str(script), "validate", str(spec)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=HANG_S,
    )  # fmt: skip
    assert done.returncode == 130 and one_line_error(done.stderr) == "interrupted"


def test_import_archc_does_not_import_the_compiler():
    probe = "import sys, archc; print(sorted(m for m in sys.modules if m.startswith(('yaml', 'pydantic'))))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=HANG_S
    )
    assert done.stdout.strip() == "[]", done.stderr
    assert callable(archc.load) and archc.Spec.__name__ == "Spec"  # still there on first use


# ---- the memory guard sees LRN's buffer ----------------------------------------------------


def test_lrn_working_buffer_is_counted():
    spec = archc.loads(
        "archc: 1\nname: t\ninput: [3, 32, 32]\nbody:\n  n: {lrn: 1048576}\n", "lrn.yaml"
    )
    with pytest.raises(resources.ResourceError, match="largest layer is n"):
        resources.check(spec, "64MiB")
    assert resources.estimate(spec).activation_bytes > (1 << 20) * 32 * 32 * 4  # (C + size)·H·W


def test_a_small_lrn_costs_its_padded_copy_only():
    spec = archc.loads("archc: 1\nname: t\ninput: [8, 4, 4]\nbody:\n  n: {lrn: 5}\n", "lrn.yaml")
    found = resources.estimate(spec)
    assert found.activations == 8 * 16 * 2  # input + output: what backward keeps
    # while it runs: the squared input and its copy padded by size - 1 channels
    assert found.working == (8 + 8 + 4) * 16
    assert found.activation_bytes == (8 * 16 * 2 + (8 + 8 + 4) * 16) * resources.BYTES_PER_VALUE


# ---- amplification -------------------------------------------------------------------------

DEEP = "archc: 1\nname: deep\ninput: [3, 8, 8]\nbody:\n  s: {stage: {block: conv_bn_relu, depth: 10000, out: 3, kernel: 1}}\n"


def timed_validate(text: str, tmp_path: Path, capsys) -> tuple[int, str, float]:
    path = tmp_path / "big.yaml"
    path.write_text(text)
    start = time.perf_counter()
    code = main(["validate", str(path)])
    return code, capsys.readouterr().err, time.perf_counter() - start


@pytest.mark.parametrize("combinator", ["stage", "dense"])
def test_a_repeat_that_would_pass_the_layer_limit_is_refused_after_one_block(
    combinator, tmp_path, capsys
):
    text = (
        "archc: 1\nname: t\ninput: [3, 8, 8]\nblocks:\n"
        "  wide:\n    body: {stage: {block: one, depth: 9000}}\n"
        "  one:\n    body: {conv: {out: 3, kernel: 1}}\n"
        f"body:\n  s: {{{combinator}: {{block: wide, depth: 12}}}}\n"
    )  # 12 x 9,000 layers: the count passes 100,000 only in the 12th block
    code, err, seconds = timed_validate(text, tmp_path, capsys)
    assert (
        code == 1 and "more than 100,000 layers" in err and ":10:14:" in err and "(at body.s" in err
    ), err
    assert seconds < QUICK_S, f"took {seconds:.2f} s"


def test_a_repeat_just_under_the_limit_still_expands(tmp_path, capsys):
    text = DEEP.replace("depth: 10000", "depth: 9000")  # 4 nodes a block: 36,000 layers
    code, err, _ = timed_validate(text, tmp_path, capsys)
    assert code == 0, err


def test_draw_collapses_a_huge_graph_and_says_so(tmp_path):
    spec = tmp_path / "deep.yaml"
    spec.write_text(DEEP)  # under 120 bytes, 30,000 layers
    out = tmp_path / "deep.dot"
    done = run_archc("draw", str(spec), "-o", str(out), timeout=HANG_S)
    assert done.returncode == 0, done.stderr
    assert "collapsed to --depth 2" in done.stderr and "pass --depth to choose" in done.stderr
    assert out.stat().st_size < 20_000  # one `conv_bn_relu ×10000` box, not 30,000 boxes
    assert "×10000" in out.read_text()


def test_draw_keeps_an_explicit_depth_and_small_graphs_whole(tmp_path, spec):
    drawn = graphviz_backend.render(spec, tmp_path / "a.dot")
    assert drawn.chosen_depth is None and "c" in (tmp_path / "a.dot").read_text()
    big = tmp_path / "deep.yaml"
    big.write_text(DEEP.replace("10000", "10"))
    drawn = graphviz_backend.render(big, tmp_path / "b.dot", depth=3)
    assert drawn.chosen_depth is None


def test_render_returns_what_it_wrote_and_prints_nothing(spec, tmp_path, capsys):
    drawn = graphviz_backend.render(spec, tmp_path / "d.dot", direction="LR", shapes=False)
    assert drawn.path == tmp_path / "d.dot" and drawn.path.is_file()
    assert capsys.readouterr() == ("", "")


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot for .svg")
def test_draw_default_output_is_named_after_the_spec_name_field(spec, tmp_path):
    done = subprocess.run(  # run here, with this checkout's archc; spec.yaml says `name: tiny`
        [sys.executable, "-m", "archc", "draw", str(spec)],
        capture_output=True, text=True, cwd=tmp_path, timeout=HANG_S,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "tiny.svg").is_file() and not (tmp_path / "spec.svg").exists()


# ---- --depth means the same everywhere ---------------------------------------------------------


@pytest.mark.parametrize("command", ["summary", "build", "draw"])
@pytest.mark.parametrize("depth", ["0", "-1", "two"])
def test_depth_must_be_a_positive_whole_number(command, depth, spec, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, str(spec), "--depth", depth])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--depth" in err


def test_a_dangling_symlink_is_replaced_only_with_force(tmp_path):
    link = tmp_path / "out.dot"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="points nowhere"):
        write_atomic(link, f"// {MARKER}\n")
    write_atomic(link, f"// {MARKER}\n", force=True)
    assert not link.is_symlink() and written_by_archc(link)


def test_only_a_zip_comment_at_the_very_end_marks_a_file(tmp_path):
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data", b"x" * 8192)  # the end of the file is past the head archc reads
        archive.comment = b"someone else's"
    strangers = tmp_path / "a.zip"
    strangers.write_bytes(buffer.getvalue() + MARKER.encode())  # the marker after the zip's end
    assert not written_by_archc(strangers)
    ours = tmp_path / "b.zip"
    ours.write_bytes(buffer.getvalue()[:-16] + b"\x00\x00")  # the same zip, no comment ...
    ours.write_bytes(with_zip_comment(ours.read_bytes(), f"{MARKER} from t.yaml"))  # ... then ours
    assert written_by_archc(ours) and zipfile.ZipFile(ours).read("data") == b"x" * 8192

"""Safe outputs (archc/outputs.py): contained paths, no clobbering, all-or-nothing writes.

The second half drives `archc codegen` and `archc draw` end to end, when those backends exist.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import archc
from archc import outputs
from archc.errors import SpecError
from archc.outputs import MARKER, OutputError, contained, write_atomic, written_by_archc
from conftest import run_archc

OURS = f"# {MARKER} from spec.yaml\nprint('hi')\n"


def leftovers(folder: Path) -> list[str]:
    """Temporary files write_atomic may have left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ---- contained ----------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", ["model.py", "d2l/resnet.py", "a/../b.py", "./x/./y.py"])
def test_contained_allows_paths_inside_the_root(relative, tmp_path):
    assert contained(tmp_path, relative) == tmp_path / relative


@pytest.mark.parametrize(
    "relative",
    ["../x.py", "../../x", "a/../../x.py", "/etc/passwd", "/tmp/elsewhere.py", "..", "a/b/../../../c"],
)
def test_contained_refuses_escapes(relative, tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    with pytest.raises(OutputError, match="outside"):
        contained(root, relative)


def test_contained_refuses_a_symlink_that_leads_outside(tmp_path):
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / "link").symlink_to(elsewhere)
    with pytest.raises(OutputError, match="outside"):
        contained(root, "link/model.py")


def test_contained_accepts_a_root_that_is_itself_a_symlink(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    assert contained(tmp_path / "alias", "m.py") == tmp_path / "alias" / "m.py"


def test_a_spec_name_cannot_be_a_path():
    # names become file names and class names: they are checked when the spec is read
    for name in ("../../x", "a/b", "..", "x.py", ""):
        with pytest.raises(SpecError, match="name"):
            archc.loads(f"archc: 1\nname: '{name}'\ninput: [3, 8, 8]\nbody:\n  r: relu\n", "f.yaml")


# ---- no clobbering ------------------------------------------------------------------------------


def test_write_creates_folders_and_the_file(tmp_path):
    target = tmp_path / "a" / "b" / "model.py"
    write_atomic(target, OURS)
    assert target.read_text() == OURS and leftovers(target.parent) == []


def test_writes_bytes_as_given_and_text_as_utf8(tmp_path):
    write_atomic(tmp_path / "b.bin", b"\x00\xff")
    write_atomic(tmp_path / "t.txt", "é")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    assert (tmp_path / "t.txt").read_bytes() == "é".encode()


def test_a_strangers_file_is_not_overwritten(tmp_path):
    target = tmp_path / "model.py"
    target.write_text("my own work\n")
    with pytest.raises(OutputError) as info:
        write_atomic(target, OURS)
    assert target.read_text() == "my own work\n"
    assert "not written by archc" in str(info.value) and "--force" in str(info.value)
    assert info.value.format().count("error:") == 1
    assert leftovers(tmp_path) == []


def test_force_overwrites_a_strangers_file(tmp_path):
    target = tmp_path / "model.py"
    target.write_text("my own work\n")
    write_atomic(target, OURS, force=True)
    assert target.read_text() == OURS


def test_archcs_own_file_is_replaced_without_force(tmp_path):
    target = tmp_path / "model.py"
    target.write_text(OURS)
    write_atomic(target, OURS + "# v2\n")
    assert target.read_text().endswith("# v2\n")
    assert written_by_archc(target)


def test_the_marker_must_be_near_the_top(tmp_path):
    target = tmp_path / "model.py"
    target.write_text("x" * 5000 + MARKER)  # a file that merely mentions archc further down
    assert not written_by_archc(target)
    with pytest.raises(OutputError):
        write_atomic(target, OURS)


def test_a_directory_is_not_replaced(tmp_path):
    (tmp_path / "model.py").mkdir()
    with pytest.raises(OutputError, match="directory"):
        write_atomic(tmp_path / "model.py", OURS, force=True)


def test_a_symlink_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    out = tmp_path / "out"
    out.mkdir()
    link = out / "model.py"
    link.symlink_to(outside)
    with pytest.raises(OutputError):  # it points at a stranger's file
        write_atomic(link, OURS)
    write_atomic(link, OURS, force=True)
    assert outside.read_text() == "precious\n"  # the file it pointed to is untouched
    assert not link.is_symlink() and link.read_text() == OURS


def test_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "m.py", OURS)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.py").stat().st_mode) == 0o644


# ---- all or nothing -----------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("exception", [Boom, KeyboardInterrupt, OSError])
@pytest.mark.parametrize("existing", [None, "old archc output", "a stranger's file"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(exception, existing, tmp_path, monkeypatch):
    target = tmp_path / "model.py"
    before = {None: None, "old archc output": OURS, "a stranger's file": "mine\n"}[existing]
    if before is not None:
        target.write_text(before)
    seen_during_write = []
    real_fsync = os.fsync

    def failing_fsync(fd):  # the payload is in the temporary file, the rename has not happened
        seen_during_write.append(target.read_text() if target.exists() else None)
        seen_during_write.append(leftovers(tmp_path))
        raise exception("disk went away")

    monkeypatch.setattr(outputs.os, "fsync", failing_fsync)
    with pytest.raises(exception):
        write_atomic(target, OURS + "# new\n" * 1000, force=True)
    monkeypatch.setattr(outputs.os, "fsync", real_fsync)
    assert seen_during_write[0] == before  # readers never see a half-written file
    assert len(seen_during_write[1]) == 1  # the new bytes were going to a temporary file
    assert (target.read_text() if target.exists() else None) == before
    assert leftovers(tmp_path) == []


def test_a_write_failing_halfway_through_the_payload(tmp_path, monkeypatch):
    target = tmp_path / "model.py"
    target.write_text(OURS)
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(outputs.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "x" * 100_000)
    assert target.read_text() == OURS and leftovers(tmp_path) == []


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(PermissionError):
        write_atomic(tmp_path / "model.py", OURS)
    assert list(tmp_path.iterdir()) == []


# ---- the commands that write files --------------------------------------------------------------

SPEC = "archc: 1\nname: tiny\ninput: [3, 8, 8]\nbody:\n  c: {conv: {out: 4, kernel: 3}}\n  r: relu\n"


@pytest.fixture
def spec_file(tmp_path) -> Path:
    path = tmp_path / "specs" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(SPEC)
    return path


def test_codegen_writes_once_refuses_strangers_and_forces(spec_file, tmp_path):
    pytest.importorskip("archc.backends.codegen")
    out = tmp_path / "generated"
    first = run_archc("codegen", str(spec_file), "-o", str(out))
    assert first.returncode == 0, first.stderr
    target = out / "tiny.py"
    assert written_by_archc(target)
    again = run_archc("codegen", str(spec_file), "-o", str(out))  # its own file: fine
    assert again.returncode == 0, again.stderr
    target.write_text("hand-written\n")
    refused = run_archc("codegen", str(spec_file), "-o", str(out))
    assert refused.returncode == 1 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert target.read_text() == "hand-written\n"
    forced = run_archc("codegen", str(spec_file), "-o", str(out), "--force")
    assert forced.returncode == 0 and written_by_archc(target)
    assert leftovers(out) == []


def test_codegen_does_not_follow_a_symlinked_folder_out_of_the_output(tmp_path):
    pytest.importorskip("archc.backends.codegen")
    specs = tmp_path / "specs"
    (specs / "sub").mkdir(parents=True)
    (specs / "sub" / "tiny.yaml").write_text(SPEC)
    out, elsewhere = tmp_path / "generated", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "sub").symlink_to(elsewhere)  # generated/sub -> elsewhere
    result = run_archc("codegen", str(specs), "-o", str(out))
    assert result.returncode == 1 and "outside" in result.stderr, result.stderr
    assert list(elsewhere.iterdir()) == []


def test_a_bad_spec_makes_codegen_write_nothing(tmp_path):
    pytest.importorskip("archc.backends.codegen")
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPEC.replace("kernel: 3", "kernel: 3, strid: 2"))
    out = tmp_path / "generated"
    result = run_archc("codegen", str(bad), "-o", str(out))
    assert result.returncode == 1 and result.stderr.startswith(f"{bad}:5:")
    assert not out.exists() or list(out.rglob("*")) == []


def test_draw_refuses_strangers_and_forces(spec_file, tmp_path):
    pytest.importorskip("archc.backends.graphviz_backend")
    target = tmp_path / "tiny.dot"
    first = run_archc("draw", str(spec_file), "-o", str(target))
    assert first.returncode == 0, first.stderr
    assert written_by_archc(target)
    target.write_text("digraph mine {}\n")
    refused = run_archc("draw", str(spec_file), "-o", str(target))
    assert refused.returncode == 1 and "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert target.read_text() == "digraph mine {}\n"
    forced = run_archc("draw", str(spec_file), "-o", str(target), "--force")
    assert forced.returncode == 0 and written_by_archc(target)
    assert leftovers(tmp_path) == []


def test_draw_to_an_unwritable_place_is_a_plain_error(spec_file, tmp_path):
    pytest.importorskip("archc.backends.graphviz_backend")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder\n")
    result = run_archc("draw", str(spec_file), "-o", str(blocker / "x.dot"))  # parent is a file
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "internal error" not in result.stderr, result.stderr

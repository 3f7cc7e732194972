"""Files."""

from __future__ import annotations

import sys
from pathlib import Path

from archc.backends.codegen.render import display_path, generate
from archc.compiler import load
from archc.errors import ArchcError
from archc.outputs import OutputError, contained, write_atomic, written_by_archc

# ---- files ------------------------------------------------------------------------------------


def spec_files(arg: str) -> list[tuple[Path, Path]]:
    """(spec file, output path relative to the output folder) for a file or a folder."""
    path = Path(arg)
    if path.is_dir():
        found = sorted(
            f for f in path.rglob("*")
            if f.suffix in (".yaml", ".yml") and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(path).parts)
        )  # fmt: skip
        if not found:
            raise OutputError(f"{arg}: no spec files (*.yaml) in this folder")
        return [(file, file.relative_to(path).with_suffix(".py")) for file in found]
    if path.is_file():
        return [(path, Path(path.stem + ".py"))]
    raise OutputError(f"{arg}: no such file or folder")


def write_all(args: list[str], out: Path, *, force: bool = False) -> int:
    """`archc codegen SPEC... -o DIR`: one .py per spec, folders mirrored; the exit status."""
    status = 0
    written: dict[Path, Path] = {}
    for arg in args:
        try:
            jobs = spec_files(arg)
        except OutputError as exc:
            print(exc.format(), file=sys.stderr)
            status = 1
            continue
        for spec_path, relative in jobs:
            try:
                write_one(spec_path, contained(out, relative), written, force)
            except ArchcError as exc:
                print(exc.format(), file=sys.stderr)
                status = 1
    return status


def write_one(spec_path: Path, target: Path, written: dict[Path, Path], force: bool) -> None:
    if target in written:
        raise OutputError(f"{spec_path} and {written[target]} would both write {target}")
    written[target] = spec_path
    text = generate(load(spec_path), display_path(str(spec_path)))
    if target.is_file() and written_by_archc(target) and target.read_text(encoding="utf-8") == text:
        return  # unchanged: leave the file (and its modification time) alone
    write_atomic(target, text, force=force)
    print(f"wrote {target}")

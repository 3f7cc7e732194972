"""Spec files in, generated files out: which specs a path names and writing their code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archc.backends.codegen.render import display_path, generate
from archc.compiler import load
from archc.errors import ArchcError
from archc.outputs import OutputError, contained, write_atomic, written_by_archc
from archc.registry import find, variants_of

Job = tuple[Path, Path, "str | None"]  # spec file, output path under the output folder, variant


def per_variant(file: Path, relative: Path, chosen: str | None) -> list[Job]:
    """One output per model: a family spec (with `variants:`) writes each of its variants,
    named after the variant, unless one was chosen (--variant), which alone is written."""
    if chosen is not None:
        return [(file, relative.with_name(chosen + ".py"), chosen)]
    try:
        variants = variants_of(file)
    except ArchcError:
        variants = ()  # writing it reports the error, beside the other specs' results
    if not variants:
        return [(file, relative, None)]
    return [(file, relative.with_name(v + ".py"), v) for v in variants]


def spec_files(arg: str, variant: str | None = None) -> list[Job]:
    """What to write for a file, a folder or the name of a shipped model."""
    found_path, implied = find(arg)
    path = Path(found_path)
    if path.is_dir():
        found = sorted(
            f for f in path.rglob("*")
            if f.suffix in (".yaml", ".yml") and f.is_file()
            and not any(part.startswith(".") for part in f.relative_to(path).parts)
        )  # fmt: skip
        if not found:
            raise OutputError(f"{arg}: no spec files (*.yaml) in this folder")
        jobs = []
        for file in found:
            jobs.extend(per_variant(file, file.relative_to(path).with_suffix(".py"), variant))
        return jobs
    if path.is_file():
        return per_variant(path, Path(path.stem + ".py"), implied or variant)
    if arg == "-" or path.exists():
        raise OutputError(
            f"{arg}: codegen reads spec files and folders (each output is named after its file), "
            "not standard input, FIFOs or devices"
        )
    raise OutputError(f"{arg}: no such file or folder")


@dataclass
class WriteResult:
    """What `write_all` did: the files it wrote, those already current, and what failed."""

    written: list[Path] = field(default_factory=list)
    unchanged: list[Path] = field(default_factory=list)
    errors: list[ArchcError] = field(default_factory=list)  # a spec, argument or target each


def write_all(args: list[str], out: Path, *, force: bool = False, **options: Any) -> WriteResult:
    """`archc codegen SPEC... -o DIR`: one .py per model (a family spec's variants each),
    folders mirrored. A bad argument or
    spec is recorded and the rest are still written; nothing is printed here."""
    result = WriteResult()
    targets: dict[Path, Path] = {}
    for arg in args:
        try:
            jobs = spec_files(arg, options.get("variant"))
        except ArchcError as exc:
            result.errors.append(exc)
            continue
        for spec_path, relative, variant in jobs:
            try:
                target = contained(out, relative)
                changed = write_one(spec_path, target, targets, force, **{**options, "variant": variant})
            except ArchcError as exc:
                result.errors.append(exc)
                continue
            (result.written if changed else result.unchanged).append(target)
    return result


def write_one(
    spec_path: Path, target: Path, targets: dict[Path, Path], force: bool, **options: Any
) -> bool:
    """Generate one spec's file; False when the file was already current (left untouched).
    `options` are `load`'s (variant=, overrides=)."""
    if target in targets:
        raise OutputError(f"{spec_path} and {targets[target]} would both write {target}")
    targets[target] = spec_path
    text = generate(load(spec_path, **options), display_path(str(spec_path)))
    if target.is_file() and written_by_archc(target) and target.read_bytes() == text.encode():
        return False  # leave the file (and its modification time) alone
    write_atomic(target, text, force=force)
    return True

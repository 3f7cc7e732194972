"""The shipped models: every spec under the repository's `specs/`, usable by name.

`archc build resnet50` and `archc.load("d2l/nin")` find `specs/resnet50.yaml` and
`specs/d2l/nin.yaml`. A path that exists always wins over a name, so a file called `resnet50`
in the current folder is read as that file.

The specs are kept once, in the repository's `specs/` beside the package: a checkout (the
README's editable install) reads them there, and a wheel carries the same files as the package
data `archc/specs/` (pyproject.toml maps the folder in), which is looked for first.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from archc.errors import Location, SpecError

PACKAGE = Path(__file__).resolve().parent


def specs_dir(package: Path = PACKAGE) -> Path:
    """The shipped specs: the package data archc/specs of a wheel (the build maps specs/ in),
    else the checkout's specs/ beside the package (an editable install)."""
    packaged = package / "specs"
    return packaged if packaged.is_dir() else package.parent / "specs"


SPECS_DIR = specs_dir()
_FAMILY = re.compile(r"^([a-z_]+?)_?\d")  # resnet50 -> resnet, wide_resnet50_2 -> wide_resnet


def shipped() -> dict[str, Path]:
    """Model name (the spec's path under specs/, without .yaml) -> spec file, sorted by name."""
    if not SPECS_DIR.is_dir():
        return {}
    files = sorted(SPECS_DIR.rglob("*.yaml"))
    return {f.relative_to(SPECS_DIR).with_suffix("").as_posix(): f for f in files}


def family(name: str) -> str:
    """The family a shipped model belongs to, from its name (course-notes models: d2l)."""
    if "/" in name:
        return name.split("/", 1)[0]
    match = _FAMILY.match(name)
    return match.group(1) if match else name


def resolve(arg: str | Path) -> str | Path:
    """`arg` itself when it is a path that exists (or `-`), else the shipped model it names."""
    text = str(arg)
    if text == "-" or Path(text).exists():
        return arg
    models = shipped()
    if text in models:
        return models[text]
    folders = {name.split("/", 1)[0] for name in models if "/" in name}
    looks_like_a_path = Path(text).is_absolute() or Path(text).suffix or (
        "/" in text and text.split("/", 1)[0] not in folders
    )
    if looks_like_a_path or not models:
        return arg  # a missing file: the caller says so
    close = difflib.get_close_matches(text, list(models), n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; `archc list` shows them"
    raise SpecError(f"no such file, and no shipped model named {text!r}{hint}", Location(text, 1, 1))

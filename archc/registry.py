"""The shipped models: every spec under the repository's `specs/`, usable by name.

`archc build alexnet` and `archc.load("d2l/nin")` find `specs/alexnet.yaml` and
`specs/d2l/nin.yaml`. A family spec with `variants:` ships one model per variant, named by the
variant (`efficientnet_b3` is `specs/efficientnet.yaml` with `--variant efficientnet_b3`); its
file's own name still reads the spec's base values. A path that exists always wins over a name,
so a file called `resnet50` in the current folder is read as that file. A variant's old path,
`specs/resnet50.yaml` from when each model had its own file, still names the model, so commands
and scripts written before the families were merged keep working.

The specs are kept once, in the repository's `specs/` beside the package: a checkout (the
README's editable install) reads them there, and a wheel carries the same files as the package
data `archc/specs/` (pyproject.toml maps the folder in), which is looked for first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from archc.cache import cached
from archc.errors import Location, SpecError

PACKAGE = Path(__file__).resolve().parent


def specs_dir(package: Path = PACKAGE) -> Path:
    """The shipped specs: the package data archc/specs of a wheel (the build maps specs/ in),
    else the checkout's specs/ beside the package (an editable install)."""
    packaged = package / "specs"
    return packaged if packaged.is_dir() else package.parent / "specs"


SPECS_DIR = specs_dir()
# densenet121 -> densenet, wide_resnet50_2 -> wide_resnet, mobilenet_v2 -> mobilenet_v2 (a version)
_FAMILY = re.compile(r"^([a-z_]+?(?:_v\d+)?)(?:_?\d|$)")


@dataclass(frozen=True)
class Model:
    """A shipped model: its spec file and, for a family spec, the variant that makes it."""

    name: str
    path: Path
    variant: str | None
    family: str


def spec_files() -> dict[str, Path]:
    """Spec name (its path under specs/, without .yaml) -> spec file, sorted by name."""
    if not SPECS_DIR.is_dir():
        return {}
    files = sorted(SPECS_DIR.rglob("*.yaml"))
    return {f.relative_to(SPECS_DIR).with_suffix("").as_posix(): f for f in files}


def variants_of(path: Path) -> tuple[str, ...]:
    """The names under a spec file's `variants:` (its base's too, through `extends:`)."""
    from archc.spec.compose import compose
    from archc.spec.loader import load_file

    return compose(load_file(path)).variants


def models() -> dict[str, Model]:
    """Every shipped model by name, in spec-file order, a family's variants in its order."""
    return dict(_models(SPECS_DIR))


@lru_cache(maxsize=4)
def _models(folder: Path) -> tuple[tuple[str, Model], ...]:
    rows = cached("models", [(folder, (".yaml",))], lambda: _model_rows(folder))
    return tuple((name, Model(name, folder / file, variant, fam)) for name, file, variant, fam in rows)


def _model_rows(folder: Path) -> list[list]:
    """[name, spec file under `folder`, variant or None, family] of every shipped model (every
    family spec read: kept in archc.cache between runs)."""
    rows: list[list] = []
    for name, path in spec_files().items():
        file = path.relative_to(folder).as_posix()
        variants = variants_of(path)
        if not variants:
            rows.append([name, file, None, family(name)])
        prefix = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        rows.extend([prefix + v, file, v, name] for v in variants)
    return rows


def catalogue() -> list[dict]:
    """`archc list`: every shipped model's name, family, parameters, MACs and input shape.
    Every model is compiled for it, so the table is kept in archc.cache between runs."""

    def compute() -> list[dict]:
        from archc.compiler import load

        rows = []
        for name, model in models().items():
            spec = load(model.path, variant=model.variant)
            rows.append({
                "name": name, "family": model.family, "params": spec.param_count, "macs": spec.macs,
                "input": list(spec.input_shape),
            })  # fmt: skip
        return rows

    return cached("catalogue", [(SPECS_DIR, (".yaml",))], compute)


def shipped() -> dict[str, Path]:
    """Model name -> spec file (a family's file once per variant)."""
    return {name: model.path for name, model in models().items()}


def family(name: str) -> str:
    """The family a single-model spec belongs to, from its name (course-notes models: d2l);
    a variant's family is its spec file."""
    if "/" in name:
        return name.split("/", 1)[0]
    match = _FAMILY.match(name)
    return match.group(1) if match else name


def find(arg: str | Path) -> tuple[str | Path, str | None]:
    """(`arg`, None) when it is a path that exists (or `-`), else the shipped model it names:
    (its spec file, the variant that makes it or None)."""
    text = str(arg)
    if text == "-" or Path(text).exists():
        return arg, None
    files = spec_files()
    if text in files:
        return files[text], None
    known = models()
    if text in known:
        return known[text].path, known[text].variant
    moved = _moved(Path(text), known)
    if moved is not None:
        return moved.path, moved.variant
    names = [*files, *known]
    folders = {name.split("/", 1)[0] for name in names if "/" in name}
    looks_like_a_path = Path(text).is_absolute() or Path(text).suffix or (
        "/" in text and text.split("/", 1)[0] not in folders
    )
    if looks_like_a_path or not names:
        return arg, None  # a missing file: the caller says so
    import difflib  # only for the message

    close = difflib.get_close_matches(text, names, n=3)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; `archc list` shows them"
    raise SpecError(f"no such file, and no shipped model named {text!r}{hint}", Location(text, 1, 1))


def _moved(path: Path, known: dict[str, Model]) -> Model | None:
    """The variant that once had its own file at `path` in the shipped specs folder."""
    if path.suffix != ".yaml" or not SPECS_DIR.is_dir():
        return None
    try:
        name = path.resolve().relative_to(SPECS_DIR.resolve()).with_suffix("").as_posix()
    except ValueError:
        return None
    model = known.get(name)
    return model if model is not None and model.variant is not None else None


def resolve(arg: str | Path) -> str | Path:
    """The spec file `arg` names (a path, or a shipped model's file)."""
    return find(arg)[0]

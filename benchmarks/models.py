"""The models the suites compare: archc specs, torchvision's constructors, generated code."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# every spec matches torchvision's default builder (googlenet: both auxiliary heads on)
EXTRA_KWARGS: dict[str, dict] = {}


def train_loss(out, y):
    """Cross-entropy of the main output, plus 0.3 x each auxiliary head's when the model returns
    several in train mode (torchvision's reference recipe for GoogLeNet and Inception v3)."""
    import torch.nn.functional as F

    if isinstance(out, tuple):
        main, *aux = out
        return F.cross_entropy(main, y) + 0.3 * sum(F.cross_entropy(a, y) for a in aux if a is not None)
    return F.cross_entropy(out, y)


def parity_specs() -> list[str]:
    """Shipped models named after a torchvision builder (read at run time: the set grows)."""
    import torchvision

    from archc.registry import models

    return sorted(n for n in models() if callable(getattr(torchvision.models, n, None)))


def family_models(full: bool = False) -> list[str]:
    """The models the model suites compare: one per shipped family (the first variant of each
    torchvision family spec, in its file's order: usually the smallest), or with `full` every
    shipped model named after a torchvision builder. Read at run time: families get added."""
    from archc.registry import models

    parity = set(parity_specs())
    chosen: dict[object, str] = {}
    for name, model in models().items():
        if name in parity and (full or model.path not in chosen):
            chosen[name if full else model.path] = name
    return list(chosen.values())


def spec_path(name: str) -> str | None:
    """What archc loads for a shipped model (its name: a file's, or a family spec's variant),
    None when archc ships no such model."""
    from archc.registry import models

    return name if name in models() else None


def torchvision_ctor(name: str) -> Callable[[], object]:
    import torchvision

    fn = getattr(torchvision.models, name)
    kwargs = {"weights": None, **EXTRA_KWARGS.get(name, {})}
    return lambda: fn(**kwargs)


def codegen_available() -> str | None:
    """None when archc's codegen backend can be used, else why not."""
    try:
        from archc.backends.codegen import generate  # noqa: F401
    except ImportError as exc:
        return f"codegen not available ({exc})"
    return None


_GENERATED = Path(tempfile.mkdtemp(prefix="archc-bench-gen-"))


def generated_factory(spec) -> Callable[[], object]:
    """Generate the spec's source, import it from a file as a user would, return its factory."""
    from archc.backends.codegen import generate

    text = generate(spec)
    digest = hashlib.sha1(f"{spec.file}{text}".encode()).hexdigest()[:12]
    file = _GENERATED / f"gen_{digest}.py"
    file.write_text(text)
    module_spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[file.stem] = module
    module_spec.loader.exec_module(module)
    # the factory is named after the spec (file); it is the last function the file defines
    functions = [n.name for n in ast.parse(text).body if isinstance(n, ast.FunctionDef)]
    for name in (Path(spec.file).stem, spec.name, *reversed(functions)):
        if callable(getattr(module, name, None)):
            return getattr(module, name)
    raise LookupError(f"no factory function in the code generated for {spec.name}")

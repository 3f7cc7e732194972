"""archc: a declarative architecture-spec compiler for PyTorch.

`load`, `summary`, `codegen` and `draw` never import torch; only `build` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archc.compiler import Spec, load, loads
from archc.errors import ArchcError, SpecError

__version__ = "0.1.0"


def _spec(spec_or_path: Spec | str | Path) -> Spec:
    return spec_or_path if isinstance(spec_or_path, Spec) else load(spec_or_path)


def summary(spec_or_path: Spec | str | Path, depth: int | None = None) -> dict[str, Any]:
    """Static summary: params, MACs, output shape and one row per layer."""
    from archc.tables import as_dict

    return as_dict(_spec(spec_or_path), depth)


def build(spec_or_path: Spec | str | Path, *, seed: int | None = None):
    """A live, initialised `torch.nn.Module` for the spec."""
    from archc.backends.torch_backend import build as build_module

    return build_module(_spec(spec_or_path), seed=seed)


def codegen(spec_or_path: Spec | str | Path) -> str:
    """Standalone PyTorch source for the spec."""
    from archc.backends.codegen import generate

    return generate(_spec(spec_or_path))


def draw(spec_or_path: Spec | str | Path, **options: Any):
    """A `graphviz.Digraph` of the spec (see `archc draw --help` for the options)."""
    from archc.backends.graphviz_backend import digraph

    return digraph(_spec(spec_or_path), **options)


__all__ = ["Spec", "load", "loads", "summary", "build", "codegen", "draw", "ArchcError", "SpecError"]

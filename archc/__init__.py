"""archc: a declarative architecture-spec compiler for PyTorch.

`load`, `summary`, `codegen` and `draw` never import torch; only `build` does.

`import archc` itself is light: `Spec`, `load` and `loads` import the compiler (pydantic, yaml)
on first use, so the command line's own error handling is in place before the heavy imports
run and an interrupt during them exits 130 instead of printing a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archc.errors import ArchcError, SpecError, UsageError

if TYPE_CHECKING:
    from archc.compiler import Spec, load, loads

__version__ = "0.1.0"
_FROM_COMPILER = ("Spec", "load", "loads")


def __getattr__(name: str) -> Any:
    """`archc.load` and friends, imported on first use (PEP 562)."""
    if name in _FROM_COMPILER:
        from archc import compiler

        value = getattr(compiler, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'archc' has no attribute {name!r}")


def _spec(
    spec_or_path: Spec | str | Path, variant: str | None = None, overrides: Sequence[str] = ()
) -> Spec:
    """A compiled spec as given, or the file (or shipped model name) compiled with the variant
    and overrides (a compiled spec has them already: another variant, or overrides, refused)."""
    from archc.compiler import Spec, load

    if isinstance(spec_or_path, Spec):
        if variant is not None and variant != spec_or_path.variant:
            raise ValueError(f"the spec was compiled as variant {spec_or_path.variant!r}, not {variant!r}")
        if overrides:
            raise ValueError("overrides apply to a spec file, not a compiled Spec")
        return spec_or_path
    return load(spec_or_path, variant=variant, overrides=overrides)


def summary(
    spec_or_path: Spec | str | Path,
    depth: int | None = None,
    *,
    variant: str | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Static summary: params, MACs, output shape and one row per layer."""
    from archc.tables import as_dict

    return as_dict(_spec(spec_or_path, variant, overrides), depth)


def build(
    spec_or_path: Spec | str | Path,
    *,
    seed: int | None = None,
    variant: str | None = None,
    max_memory: int | str | None = "auto",
    fuse: bool = False,
    channels_last: bool = False,
    overrides: Sequence[str] = (),
    weights: str | Path | Any = None,
    strict: bool = True,
    freeze: Sequence[str] = (),
):
    """A live, initialised `torch.nn.Module` for the spec (of a file: its `variant`, with
    `overrides` like `--set`'s KEY=VALUE strings).

    `weights` (a checkpoint file, or a state_dict / checkpoint dict) is loaded into it, see
    `load_weights`; tensors whose shapes differ keep the spec's init (under `seed`,
    reproducibly). The load report is the model's `load_report` attribute.

    Before anything is allocated, the memory the model needs (parameters, buffers, and the
    activations of a forward pass at batch 1) is estimated statically; over `max_memory`
    (bytes, a size like "8GiB", "auto" for half this machine's memory, or None for no limit)
    it raises `archc.resources.ResourceError` instead of running into the OOM killer.

    `freeze` names modules to freeze (paths or glob patterns, as the spec's `freeze:` does, on
    top of it): their parameters get `requires_grad=False`, and the model's `train()` keeps them
    in eval mode, so their batch norms keep their running statistics. A pattern that matches no
    module raises `archc.UsageError`.

    `variant` picks one of a spec file's `variants:` (`variant="efficientnet_b3"`).
    `fuse=True` gives an inference model (see `archc.fuse`); `channels_last=True` puts its
    parameters and inputs in the channels-last memory format.
    """
    from archc import resources

    spec = _spec(spec_or_path, variant, overrides)
    if freeze:
        from archc.freeze import with_frozen

        spec = with_frozen(spec, freeze)
    resources.check(spec, max_memory)
    from archc.backends.torch_backend import build as build_module

    if weights is not None:
        from archc.weights import read_state_dict

        weights = read_state_dict(weights)  # a missing or broken file fails before the build
    model = build_module(spec, seed=seed)
    report = None
    if weights is not None:
        from archc.weights import load_weights as load_into

        report = load_into(model, spec, weights, strict=strict, reinitialise=False)  # fresh: init'd
    if fuse or channels_last:
        from archc.backends.fuse import fuse as fuse_model
        from archc.backends.fuse import to_channels_last

        model = (
            fuse_model(model, spec, channels_last=channels_last, inplace=True)
            if fuse
            else to_channels_last(model)
        )
    if report is not None:
        model.load_report = report
    return model


def load_weights(model, spec_or_path: Spec | str | Path, source, *, strict: bool = True):
    """Load a checkpoint file (or a state_dict / checkpoint dict) into `model`, built from the
    spec, and return an `archc.weights.LoadReport` (loaded, re-initialised, missing,
    unexpected, with shapes). Tensors whose shapes differ are re-initialised by the spec's init
    rules; with `strict` (the default) a missing or unexpected key raises
    `archc.weights.WeightsError` naming them and nothing is loaded."""
    from archc.weights import load_weights as load_into

    return load_into(model, _spec(spec_or_path), source, strict=strict)


def fuse(model, spec_or_path: Spec | str | Path | None = None, *, channels_last: bool = False):
    """An eval-mode inference copy of `model`: batch norms folded into the convolutions before
    them, activations (ReLU, ReLU6, SiLU, Hardswish, GELU) run in the epilogue of the convolution
    or linear layer before them, weights packed once for oneDNN on CPU. `model` is left
    untouched; outputs equal its eval-mode outputs to float rounding. With the spec, what to fuse
    comes from the compiled tree (so it also fits generated code); without, from the modules.
    """
    from archc.backends.fuse import fuse as fuse_model

    spec = None if spec_or_path is None else _spec(spec_or_path)
    return fuse_model(model, spec, channels_last=channels_last)


def codegen(
    spec_or_path: Spec | str | Path, *, variant: str | None = None, overrides: Sequence[str] = ()
) -> str:
    """Standalone PyTorch source for the spec."""
    from archc.backends.codegen import generate

    return generate(_spec(spec_or_path, variant, overrides))


def draw(
    spec_or_path: Spec | str | Path,
    *,
    variant: str | None = None,
    overrides: Sequence[str] = (),
    **options: Any,
):
    """A `graphviz.Digraph` of the spec (see `archc draw --help` for the options)."""
    from archc.backends.graphviz_backend import digraph

    return digraph(_spec(spec_or_path, variant, overrides), **options)


__all__ = [
    "Spec",
    "load",
    "loads",
    "summary",
    "build",
    "load_weights",
    "fuse",
    "codegen",
    "draw",
    "ArchcError",
    "SpecError",
    "UsageError",
]

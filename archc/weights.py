"""Load weights into a built model: a state_dict or a training checkpoint, with a load report.

A checkpoint is a plain state_dict, or a dict holding one under `state_dict`, `model` or
`model_state_dict` (what torchvision's, timm's and PyTorch's tutorial training scripts save);
the `module.` prefix DDP adds (and `_orig_mod.` from `torch.compile`) is stripped. Tensors whose
shapes differ from the model's (a new head: `--set params.num_classes=2`) are not loaded: they
get the spec's init rules instead, and the report lists them with both shapes. Loading is strict
by default: a key the model has and the checkpoint lacks, or the other way round, is an error
naming the keys (pass `strict=False` / `--no-strict` to load what matches).

Files are read with `torch.load(weights_only=True)`: tensors and plain containers, no code.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from archc.compiler import Spec
from archc.errors import ArchcError, shown

Shape = tuple[int, ...]
NESTED_KEYS = ("state_dict", "model", "model_state_dict")
PREFIXES = ("module.", "_orig_mod.")
SHOWN_KEYS = 5  # keys named in an error


class WeightsError(ArchcError):
    """A weights file archc cannot load: printed as `FILE: error: ...`, exit 1."""

    def __init__(self, source: str, message: str):
        super().__init__(message)
        self.source = source
        self.message = message

    def format(self) -> str:
        return f"{shown(self.source)}: error: {shown(self.message)}"


@dataclass
class LoadReport:
    """What `load_weights` did, tensor by tensor (shapes as `(key, shape)` pairs).

    `loaded`: copied from the checkpoint. `reinitialised`: in both, shapes differ; the model's
    tensor got the spec's init rules (`(key, checkpoint shape, model shape)`). `missing`: in the
    model only (left as initialised). `unexpected`: in the checkpoint only (ignored).
    `dropped`: in the checkpoint only, of the layers `include_top: false` leaves out (ignored,
    never an error: a classifier's checkpoint loads into its feature extractor).
    """

    source: str
    loaded: list[tuple[str, Shape]] = field(default_factory=list)
    reinitialised: list[tuple[str, Shape, Shape]] = field(default_factory=list)
    missing: list[tuple[str, Shape]] = field(default_factory=list)
    unexpected: list[tuple[str, Shape]] = field(default_factory=list)
    # in the checkpoint only, of layers the spec's `include_top: false` leaves out (ignored)
    dropped: list[tuple[str, Shape]] = field(default_factory=list)
    stripped_prefix: str = ""
    nested_under: str = ""

    def format(self) -> str:
        """The report as the CLI prints it: counts, then every tensor not loaded."""
        where = f" (under {self.nested_under!r})" if self.nested_under else ""
        prefix = f", {self.stripped_prefix!r} prefix stripped" if self.stripped_prefix else ""
        lines = [f"weights: {self.source}{where}{prefix}: loaded {len(self.loaded)} tensors"
                 f" ({sum(_numel(s) for _, s in self.loaded):,} values)"]  # fmt: skip
        if self.reinitialised:
            lines.append(
                f"  re-initialised by the spec's init rules ({len(self.reinitialised)}, shapes differ):"
            )
            lines += [
                f"    {k}: checkpoint {_fmt(c)}, model {_fmt(m)}" for k, c, m in self.reinitialised
            ]
        if self.missing:
            lines.append(
                f"  missing from the checkpoint, left as initialised ({len(self.missing)}):"
            )
            lines += [f"    {k}: {_fmt(s)}" for k, s in self.missing]
        if self.dropped:
            more = f", ... ({len(self.dropped) - SHOWN_KEYS} more)" if len(self.dropped) > SHOWN_KEYS else ""
            some = ", ".join(k for k, _ in self.dropped[:SHOWN_KEYS]) + more
            lines.append(f"  of layers include_top: false leaves out, ignored ({len(self.dropped)}): {some}")
        if self.unexpected:
            lines.append(f"  in the checkpoint only, ignored ({len(self.unexpected)}):")
            lines += [f"    {k}: {_fmt(s)}" for k, s in self.unexpected]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


@dataclass(frozen=True)
class Checkpoint:
    """A state_dict as read: its tensors, the name shown for where it came from, the key it
    was nested under and the prefix stripped from its keys."""

    state: dict[str, torch.Tensor]
    name: str
    nested: str = ""
    stripped: str = ""


def read_state_dict(source: str | Path | Mapping | Checkpoint) -> Checkpoint:
    """The state_dict in a checkpoint file or dict; `WeightsError` when there is none."""
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, Mapping):
        name, data = "<state_dict>", source
    else:
        name = str(source)
        path = Path(source)
        if not path.exists():
            raise WeightsError(name, "no such weights file")
        if not path.is_file():
            raise WeightsError(name, "not a file (give a checkpoint saved with torch.save)")
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many kinds for a file that is not a checkpoint
            if not zipfile.is_zipfile(path):
                raise WeightsError(
                    name,
                    "not a PyTorch checkpoint: torch.save writes a zip archive and this file is not one",
                ) from None
            if "Weights only load failed" in str(exc):  # torch's refusal to unpickle objects
                raise WeightsError(
                    name,
                    "the checkpoint holds pickled objects (a whole model saved with torch.save(model)?), "
                    "which archc does not unpickle (it reads with weights_only=True): save model.state_dict() instead",
                ) from None
            reason = (
                str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            )
            raise WeightsError(
                name,
                f"a zip archive but not a checkpoint archc can read ({reason}); expected a file written by "
                "torch.save(model.state_dict(), ...) or a checkpoint dict holding one (read with weights_only=True)",
            ) from None
    if not isinstance(data, Mapping):
        raise WeightsError(
            name, f"not a state_dict: the file holds a {type(data).__name__}, not a dict of tensors"
        )
    nested = ""
    for key in NESTED_KEYS:
        if isinstance(data.get(key), Mapping):
            nested, data = key, data[key]
            break
    state = {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(
            name,
            "no tensors found: expected a state_dict, or a checkpoint with one under "
            + " or ".join(repr(k) for k in NESTED_KEYS)
            + (
                f" (top-level keys: {', '.join(map(str, list(data)[:SHOWN_KEYS]))})" if data else ""
            ),
        )
    if len(state) != len(data):
        odd = [str(k) for k, v in data.items() if not isinstance(v, torch.Tensor)]
        raise WeightsError(
            name,
            f"not a state_dict: {', '.join(odd[:SHOWN_KEYS])} {'is' if len(odd) == 1 else 'are'} not tensors",
        )
    stripped = ""
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
            stripped += prefix
    return Checkpoint(state, name, nested, stripped)


def load_weights(
    model: nn.Module,
    spec: Spec,
    source: str | Path | Mapping | Checkpoint,
    *,
    strict: bool = True,
    reinitialise: bool = True,
) -> LoadReport:
    """Load `source` (a checkpoint file, or a state_dict / checkpoint dict) into `model`, built
    from `spec`, and return the report. Tensors whose shapes differ get the spec's init rules
    (`reinitialise=False` leaves them as they are: a freshly built model has them already).
    Strict (the default): a missing or unexpected key raises `WeightsError` and nothing is loaded."""
    checkpoint = read_state_dict(source)
    state, name = checkpoint.state, checkpoint.name
    own = model.state_dict()
    report = LoadReport(name, stripped_prefix=checkpoint.stripped, nested_under=checkpoint.nested)
    for key, tensor in own.items():
        if key not in state:
            report.missing.append((key, tuple(tensor.shape)))
        elif tuple(state[key].shape) != tuple(tensor.shape):
            report.reinitialised.append((key, tuple(state[key].shape), tuple(tensor.shape)))
        else:
            report.loaded.append((key, tuple(tensor.shape)))
    extra = [(k, tuple(v.shape)) for k, v in state.items() if k not in own]
    left_out = tuple(f"{path}." for path in spec.dropped)  # `include_top: false`: not an error
    report.dropped = [(k, s) for k, s in extra if k.startswith(left_out)]
    report.unexpected = [(k, s) for k, s in extra if not k.startswith(left_out)]
    if strict and (report.missing or report.unexpected):
        raise WeightsError(name, _strict_message(report))
    if reinitialise and report.reinitialised:
        _reinitialise(model, spec, [key for key, _, _ in report.reinitialised])
    model.load_state_dict({k: state[k] for k, _ in report.loaded}, strict=False)
    return report


def _strict_message(report: LoadReport) -> str:
    def some(items: list[tuple[str, Shape]]) -> str:
        more = f" and {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else ""
        return ", ".join(f"{k} {_fmt(s)}" for k, s in items[:SHOWN_KEYS]) + more

    parts = []
    if report.missing:
        parts.append(
            f"{len(report.missing)} of the model's tensors are missing from the checkpoint: {some(report.missing)}"
        )
    if report.unexpected:
        parts.append(
            f"{len(report.unexpected)} of the checkpoint's tensors are not in the model: {some(report.unexpected)}"
        )
    return (
        "the checkpoint does not fit the spec: "
        + "; ".join(parts)
        + " (is it for another model or variant? --no-strict / strict=False loads the tensors that match)"
    )


def _reinitialise(model: nn.Module, spec: Spec, keys: list[str]) -> None:
    """Give the named tensors a fresh start: their module's own default init (as at build),
    then the spec's init rules for its kind. Other tensors of those modules are loaded after."""
    from archc.backends.torch_backend import initialise_module, module_kinds

    kinds = module_kinds(model, spec)
    by_module: dict[str, set[str]] = {}
    for key in keys:
        path, _, tensor = key.rpartition(".")
        by_module.setdefault(path, set()).add(tensor)
    with torch.no_grad():
        for path, tensors in by_module.items():
            module = model.get_submodule(path)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            elif hasattr(module, "reset_running_stats"):
                module.reset_running_stats()
            initialise_module(module, spec, kinds.get(path, ""), tensors, path)

"""`archc export`: the spec's model as ONNX, TorchScript or a torch.export ExportedProgram.
Imports torch; the static path never imports this module."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMATS = ("onnx", "torchscript", "exported-program")


def export(spec, fmt: str, path: Path, *, seed: int | None = 0) -> torch.nn.Module:
    """Write the model in `fmt` to `path`; returns the live (eval-mode) model it came from."""
    import archc

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    model = archc.build(spec, seed=seed).eval()
    example = torch.randn(1, *spec.input_shape)
    # written beside the target and renamed over it: a failed export leaves no half-written file
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "torchscript":
            torch.jit.trace(model, example, strict=not spec.taps).save(tmp)  # taps: a dict
        elif fmt == "exported-program":
            torch.export.save(torch.export.export(model, (example,)), tmp)
        else:
            names = list(spec.outputs) if spec.taps else ["output"]  # taps: one output each
            torch.onnx.export(model, (example,), tmp, input_names=["input"],
                              output_names=names, dynamo=False)  # fmt: skip
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return model

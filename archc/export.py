"""`archc export`: the spec's model as ONNX, TorchScript or a torch.export ExportedProgram.
Imports torch; the static path never imports this module."""

from __future__ import annotations

from pathlib import Path

import torch

FORMATS = ("onnx", "torchscript", "exported-program")


def export(spec, fmt: str, path: Path, *, seed: int | None = 0) -> torch.nn.Module:
    """Write the model in `fmt` to `path`; returns the live (eval-mode) model it came from."""
    import archc

    model = archc.build(spec, seed=seed).eval()
    example = torch.randn(1, *spec.input_shape)
    if fmt == "torchscript":
        torch.jit.trace(model, example).save(str(path))
    elif fmt == "exported-program":
        torch.export.save(torch.export.export(model, (example,)), str(path))
    elif fmt == "onnx":
        torch.onnx.export(model, (example,), str(path), input_names=["input"],
                          output_names=["output"], dynamo=False)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return model

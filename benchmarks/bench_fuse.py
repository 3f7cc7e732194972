"""The inference build (`archc build --fuse`) against torchvision's eager model, batch 1, CPU
(bench_compare.py puts it against torch.compile and onnxruntime)."""

from __future__ import annotations

import gc

import archc
from archc.backends.fuse import fuse
from benchmarks.config import Config
from benchmarks.harness import Row, Section, check, log, measure, probe, rounds_for
from benchmarks.models import spec_path, torchvision_ctor

TARGET = 1.15
TOLERANCE = 1e-4


def call(model, x):
    import torch

    def fn():
        with torch.inference_mode():
            model(x)

    return fn


def max_diff(a, b, x) -> float:
    """Largest output difference, relative to the output's largest magnitude when that is above 1."""
    import torch

    with torch.inference_mode():
        ya, yb = a(x), b(x)
    return ((ya - yb).abs().max() / yb.abs().max().clamp(min=1.0)).item()


def prepared(name: str):
    """spec, torchvision model, archc model with the same weights, input at batch 1 (all eval)."""
    import torch

    spec = archc.load(spec_path(name))
    theirs = torchvision_ctor(name)().eval()
    ours = archc.build(spec)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(1, *spec.input_shape, generator=torch.Generator().manual_seed(0))
    return spec, theirs, ours.eval(), x


def run(cfg: Config) -> Section:
    import torch

    torch.set_num_threads(cfg.threads)
    section = Section(
        "fuse",
        f"Inference build: `archc build --fuse`, batch 1, CPU, {cfg.threads} thread",
        "Eval-mode forward under `torch.inference_mode()` at the spec's input size, batch 1. "
        "`fused`: `archc.build(spec, fuse=True)` (batch norms folded into convolutions, "
        "activations in the epilogue of the convolution or linear layer before them, weights "
        "packed once for oneDNN); `+ channels_last` adds "
        "`channels_last=True`; `unfused` is the plain build. Speedup = torchvision eager time / "
        "archc time (higher is better).",
        f"fused ≥ {TARGET}x faster than torchvision eager, outputs within {TOLERANCE:g} of the unfused model",
        columns=("archc", "torchvision eager"),
        ratio_name="speedup",
    )
    for name in cfg.models():
        if spec_path(name) is None:
            section.add(Row(name, None, None, None, status="skipped: no spec"))
            continue
        try:
            spec, theirs, ours, x = prepared(name)
            fused = fuse(ours, spec)
            fused_cl = fuse(ours, spec, channels_last=True)
            diffs = {
                "fused": max_diff(fused, ours, x),
                "fused + channels_last": max_diff(fused_cl, ours, x),
            }
        except Exception as exc:  # a family the fuser cannot handle: a finding, not a crash
            section.add(Row(name, None, None, None, status=f"skipped: {type(exc).__name__}: {str(exc)[:200]}"))
            continue
        cases = {
            "torchvision": call(theirs, x),
            "unfused": call(ours, x),
            "fused": call(fused, x),
            "fused + channels_last": call(fused_cl, x),
        }
        once = sum(probe(fn) for fn in cases.values())
        number = max(1, int(0.25 * len(cases) / max(once, 1e-4)))
        rounds = 2 if cfg.quick else rounds_for(once * number, 20.0, 6, 12)
        log(f"fuse: {name} ({rounds} rounds of {number} calls)")
        timings = measure(cases, rounds=rounds, number=number, warmup=1, clock=cfg.clock)
        for case in ("unfused", "fused", "fused + channels_last"):
            ratio, q1, q3 = timings.ratio("torchvision", case)  # speedup: theirs / ours
            row = Row(
                f"{name}: {case}",
                timings.median(case),
                timings.median("torchvision"),
                ratio,
                (q1, q3),
            )
            if case == "unfused":
                row.status = "info"
            else:
                ok = diffs[case] <= TOLERANCE
                row.status = check(ratio, TARGET, at_least=True) if ok else "MISS"
                row.note = f"max diff {diffs[case]:.1e}"
            section.add(row)
        del theirs, ours, fused, fused_cl, cases
        gc.collect()
    section.notes.append(
        "Speedups come mostly from packing each convolution's weight once into oneDNN's blocked "
        "layout (eager PyTorch reorders it on every call, and at batch 1 runs 1x1 convolutions "
        "through its slow im2col path); folding batch norm saves one pass over each activation."
    )
    return section

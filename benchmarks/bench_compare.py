"""archc's inference build against other ways to run the same network at batch 1 on CPU:
torch.compile (inductor) of torchvision's model, and onnxruntime running archc's ONNX export."""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path

from archc.backends.fuse import fuse
from benchmarks.bench_fuse import call, max_diff, prepared
from benchmarks.config import Config
from benchmarks.harness import Row, Section, check, log, measure, probe, rounds_for
from benchmarks.models import spec_path

MODELS = ["resnet50", "mobilenet_v2"]
ORT_TARGET = 1.0  # archc fused at least as fast as onnxruntime on archc's own export


def onnxruntime_session(spec, threads: int, folder: Path):
    """(a callable running archc's ONNX export in onnxruntime, the model it was exported from),
    or (None, why not)."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return None, f"onnxruntime not installed ({exc})"
    from archc.export import export

    path = folder / f"{spec.name}.onnx"
    try:
        exported = export(spec, "onnx", path)
    except Exception as exc:  # the exporter's dependencies (onnx, onnxscript), an unsupported op
        return None, f"export failed: {type(exc).__name__}: {str(exc)[:200]}"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return (session, exported), None


def run(cfg: Config) -> Section:
    import torch

    torch.set_num_threads(cfg.threads)
    section = Section(
        "compare",
        f"Against torch.compile and onnxruntime, batch 1, CPU, {cfg.threads} thread",
        "Eval-mode inference at the spec's input size, batch 1, against torchvision's eager model "
        "(speedup = torchvision eager time / the case's time): archc's fused build "
        "(`archc.build(spec, fuse=True)`), `torch.compile` (inductor, default settings) of "
        "torchvision's model, and onnxruntime (all graph optimisations, CPU provider, "
        f"{cfg.threads} intra-op thread) running `archc export --format onnx` of the same spec. "
        "The `archc fused / onnxruntime` row is onnxruntime's time over archc's.",
        f"report; archc fused ≥ {ORT_TARGET}x of onnxruntime",
        columns=("time", "torchvision eager"),
        ratio_name="speedup",
    )
    if cfg.quick:
        section.add(
            Row("all", None, None, None, status="skipped: --quick (compiling and exporting take minutes here)")
        )
        return section
    folder = Path(tempfile.mkdtemp(prefix="archc-bench-compare-"))
    for name in cfg.models(MODELS):
        if spec_path(name) is None:
            section.add(Row(name, None, None, None, status="skipped: no spec"))
            continue
        spec, theirs, ours, x = prepared(name)
        cases = {"torchvision": call(theirs, x), "archc fused": call(fuse(ours, spec), x)}
        notes: dict[str, str] = {}

        log(f"compare: {name}: torch.compile(torchvision) ...")
        try:
            compiled = torch.compile(theirs)
            start = time.perf_counter()
            with torch.inference_mode():
                compiled(x)
            notes["torch.compile(torchvision)"] = (
                f"compile {time.perf_counter() - start:.0f} s, max diff {max_diff(compiled, theirs, x):.1e}"
            )
            cases["torch.compile(torchvision)"] = call(compiled, x)
        except Exception as exc:  # no C++ compiler, an inductor bug: say why
            section.add(Row(f"{name}: torch.compile(torchvision)", None, None, None,
                            status=f"skipped: {type(exc).__name__}: {str(exc)[:200]}"))  # fmt: skip

        log(f"compare: {name}: onnxruntime ...")
        found, why = onnxruntime_session(spec, cfg.threads, folder)
        if found is None:
            section.add(Row(f"{name}: onnxruntime", None, None, None, status=f"skipped: {why}"))
        else:
            session, exported = found
            feed = {session.get_inputs()[0].name: x.numpy()}
            with torch.inference_mode():
                expected = exported(x)
            got = torch.from_numpy(session.run(None, feed)[0])
            diff = ((got - expected).abs().max() / expected.abs().max().clamp(min=1.0)).item()
            notes["onnxruntime"] = f"archc's export, max diff {diff:.1e}"
            cases["onnxruntime"] = lambda session=session, feed=feed: session.run(None, feed)

        once = sum(probe(fn) for fn in cases.values())
        number = max(1, int(0.25 * len(cases) / max(once, 1e-4)))
        rounds = rounds_for(once * number, 20.0, 6, 12)
        log(f"compare: {name} ({rounds} rounds of {number} calls: {', '.join(cases)})")
        timings = measure(cases, rounds=rounds, number=number, warmup=1, clock=cfg.clock)
        for label in cases:
            if label == "torchvision":
                continue
            ratio, q1, q3 = timings.ratio("torchvision", label)
            section.add(Row(f"{name}: {label}", timings.median(label), timings.median("torchvision"),
                            ratio, (q1, q3), "info", notes.get(label, "")))  # fmt: skip
        if "onnxruntime" in cases:
            ratio, q1, q3 = timings.ratio("onnxruntime", "archc fused")
            section.add(Row(f"{name}: archc fused / onnxruntime", timings.median("archc fused"),
                            timings.median("onnxruntime"), ratio, (q1, q3),
                            check(ratio, ORT_TARGET, at_least=True),
                            "onnxruntime's time / archc fused's (the baseline column is onnxruntime's)"))  # fmt: skip
        del theirs, ours, cases
        gc.collect()
    return section

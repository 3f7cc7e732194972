"""`archc.build(spec file)` vs the torchvision constructor: one variant of every family (--full: all)."""

from __future__ import annotations

import gc
import resource

import archc
from benchmarks.config import Config
from benchmarks.harness import Row, Section, check, log, measure, probe, rounds_for
from benchmarks.models import spec_path, torchvision_ctor

TARGET = 1.05


def page_faults(build) -> int:
    """Minor page faults of one build: equal on both sides when every tensor gets fresh pages
    (see FRESH_PAGES in benchmarks/__main__.py), so a time difference is not memory placement."""
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    model = build()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del model
    return faults


def run(cfg: Config) -> Section:
    import torch

    torch.set_num_threads(cfg.threads)
    section = Section(
        "construct",
        "Construction time",
        "`archc.build(path)` (read + validate + expand + infer + build + init, the public API from a "
        "spec file) against `torchvision.models.NAME(weights=None)`, both allocating and "
        "initialising every weight; ratio = archc / torchvision.",
        f"≤ {TARGET}x",
        columns=("archc.build", "torchvision"),
    )
    names = cfg.models()
    archc.load(spec_path(names[0]))  # the built-in block library is read once per process
    for name in names:
        path = spec_path(name)
        ours = lambda path=path: archc.build(path)  # noqa: E731
        theirs = torchvision_ctor(name)
        per_round = probe(ours) + probe(theirs)
        rounds = 2 if cfg.quick else rounds_for(per_round, 6.0, 3, 7)
        log(f"construct: {name} ({rounds} rounds of {per_round:.2f} s)")
        timings = measure(
            {"archc": ours, "torchvision": theirs},
            rounds=rounds,
            warmup=0,
            setup=gc.collect,
            clock=cfg.clock,
        )
        load = measure(
            {"load": lambda path=path: archc.load(path)}, rounds=5, warmup=1, clock=cfg.clock
        )
        ratio, q1, q3 = timings.ratio("archc", "torchvision")
        load_s = load.median("load")
        without = (timings.median("archc") - load_s) / timings.median("torchvision")
        faults = {side: page_faults(fn) for side, fn in (("archc", ours), ("torchvision", theirs))}
        section.add(Row(
            name, timings.median("archc"), timings.median("torchvision"), ratio, (q1, q3),
            check(ratio, TARGET), f"load+infer {load_s * 1e3:.0f} ms; from a compiled Spec ≈{without:.2f}x; "
            f"page faults {faults['archc']:,} vs {faults['torchvision']:,}",
        ))  # fmt: skip
        gc.collect()
    section.notes.append(
        "load+infer: the part of archc.build that reads and compiles the spec (`archc.load`, "
        "median of 5); the rest is allocating and initialising the same tensors, in the same "
        "order, that torchvision does (same seed, same weights). `from a compiled Spec` is "
        "(archc.build - load+infer) / torchvision: `archc.build(spec)` with the Spec at hand. "
        "Page faults: one build's minor faults on each side (the same when both allocate the "
        "same tensors from fresh pages: what differs is then Python work, see ANALYSIS.md)."
    )
    return section

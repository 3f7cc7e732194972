"""The model from `archc codegen` against the live `archc.build`: construction, training, eval."""

from __future__ import annotations

import gc

import archc
from benchmarks import bench_models
from benchmarks.config import Config
from benchmarks.harness import Row, Section, check, log, measure, probe, rounds_for
from benchmarks.models import codegen_available, generated_factory, spec_path

TARGET = 1.02
MODELS = ["resnet50", "densenet121", "googlenet", "vgg16"]


def skipped(key: str, title: str, why: str) -> Section:
    section = Section(
        key,
        title,
        "Generated code against the live build.",
        f"≤ {TARGET}x",
        columns=("generated", "live build"),
    )
    section.add(Row("all", None, None, None, status=f"skipped: {why}"))
    return section


def construct(cfg: Config) -> Section:
    import torch

    torch.set_num_threads(cfg.threads)
    why = codegen_available()
    if why:
        return skipped("gen-construct", "Generated code: construction", why)
    section = Section(
        "gen-construct",
        "Generated code: construction",
        "The generated file's factory function against `archc.build(spec)` from the same compiled "
        "spec (so neither side reads YAML); ratio = generated / live.",
        f"≤ {TARGET}x",
        columns=("generated", "live build"),
    )
    for name in cfg.models(MODELS):
        path = spec_path(name)
        if path is None:
            section.add(Row(name, None, None, None, status="skipped: no spec"))
            continue
        spec = archc.load(path)
        try:
            factory = generated_factory(spec)
        except Exception as exc:  # a codegen failure is a finding, not a crash of the run
            section.add(
                Row(
                    name,
                    None,
                    None,
                    None,
                    status=f"skipped: codegen failed: {type(exc).__name__}: {exc}",
                )
            )
            continue
        cases = {"generated": factory, "live": lambda spec=spec: archc.build(spec)}
        per_round = probe(cases["generated"]) + probe(cases["live"])
        rounds = 2 if cfg.quick else rounds_for(per_round, 10.0, 3, 9)
        log(f"gen-construct: {name} ({rounds} rounds)")
        timings = measure(cases, rounds=rounds, warmup=0, setup=gc.collect, clock=cfg.clock)
        ratio, q1, q3 = timings.ratio("generated", "live")
        section.add(
            Row(
                name,
                timings.median("generated"),
                timings.median("live"),
                ratio,
                (q1, q3),
                check(ratio, TARGET),
            )
        )
    return section


def generated_pair(name: str):
    """(generated model, live model) with identical weights."""
    path = spec_path(name)
    if path is None:
        return None
    spec = archc.load(path)
    live = archc.build(spec)
    generated = generated_factory(spec)()
    generated.load_state_dict(live.state_dict(), strict=True)
    return generated, live


def train(cfg: Config) -> Section:
    why = codegen_available()
    if why:
        return skipped("gen-train", "Generated code: training step", why)
    return bench_models.train_section(
        cfg, generated_pair, key="gen-train", ours="generated", baseline="live build",
        title="Generated code: training step (as the training suite)", target=TARGET, budget=20.0,
    )  # fmt: skip


def evaluate(cfg: Config) -> Section:
    why = codegen_available()
    if why:
        return skipped("gen-eval", "Generated code: eval on a tiny input", why)
    return bench_models.eval_section(
        cfg, generated_pair, key="gen-eval", ours="generated", baseline="live build",
        title="Generated code: eval on a tiny input (as the eval suite)", target=TARGET,
    )  # fmt: skip

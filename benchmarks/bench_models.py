"""Running models: a training step (forward + backward) and eval on a tiny input.

Both sides hold the same weights (torchvision's state_dict loaded into archc's model, strict),
the same input, the same mode; only the module code differs.
"""

from __future__ import annotations

import gc

import archc
from benchmarks.config import Config
from benchmarks.harness import Row, Section, check, log, measure, probe, rounds_for
from benchmarks.models import spec_path, torchvision_ctor

TRAIN_TARGET = 1.02
EVAL_TARGET = 1.05
EVAL_SIZES = (32, 64, 96)
TRAIN_FALLBACK_SIZES = (224, 299)  # for a model that does not train at the suite's size  # the tiny input, or the smallest of these a model's pooling allows


def pair(name: str):
    """(archc model, torchvision model) with identical weights, or None when the spec is missing."""
    path = spec_path(name)
    if path is None:
        return None
    theirs = torchvision_ctor(name)()
    ours = archc.build(path)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours, theirs


def train_step(model, x, y):
    from benchmarks.models import train_loss

    def step():
        train_loss(model(x), y).backward()
        for p in model.parameters():
            p.grad = None

    return step


def eval_call(model, x):
    import torch

    def call():
        with torch.inference_mode():
            model(x)

    return call


def train_section(
    cfg: Config,
    models_for=pair,
    *,
    key="train",
    ours="archc",
    baseline="torchvision",
    title=None,
    target=TRAIN_TARGET,
    budget: float | None = None,
) -> Section:
    import torch

    torch.set_num_threads(cfg.threads)
    batch, size = (1, 64) if cfg.quick else (cfg.train_batch, cfg.train_size)
    section = Section(
        key,
        title or f"Training step, CPU (batch {batch}, {size}x{size}, {cfg.threads} thread)",
        "One forward + cross-entropy + backward, gradients cleared, model in train mode, same "
        f"weights and input on both sides; ratio = {ours} / {baseline}.",
        f"≤ {target}x",
        columns=(ours, baseline),
    )
    for name in cfg.models():
        try:
            models = models_for(name)
        except Exception as exc:  # e.g. generated code that does not build: a finding, not a crash
            section.add(Row(name, None, None, None, status=f"skipped: {type(exc).__name__}: {exc}"))
            continue
        if models is None:
            section.add(Row(name, None, None, None, status="skipped: no spec"))
            continue
        mine, theirs = (m.train() for m in models)
        for side in (size, *(s for s in TRAIN_FALLBACK_SIZES if s > size)):
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(batch, 3, side, side, generator=gen)
            y = torch.randint(0, 1000, (batch,), generator=gen)
            cases = {"ours": train_step(mine, x, y), "baseline": train_step(theirs, x, y)}
            try:
                per_round = probe(cases["ours"]) + probe(cases["baseline"])
                break
            except (RuntimeError, ValueError) as exc:  # e.g. Inception v3's aux head needs 299x299
                error = exc
        else:
            section.add(Row(name, None, None, None, status=f"skipped at {size}x{size}: {str(error)[:150]}"))
            continue
        rounds = 2 if cfg.quick else rounds_for(per_round, budget or cfg.train_budget, 7, 15)
        log(f"{key}: {name} ({rounds} rounds of {per_round:.2f} s)")
        timings = measure(cases, rounds=rounds, warmup=1, clock=cfg.clock)
        ratio, q1, q3 = timings.ratio("ours", "baseline")
        section.add(
            Row(
                name,
                timings.median("ours"),
                timings.median("baseline"),
                ratio,
                (q1, q3),
                check(ratio, target),
                note="" if side == size else f"{side}x{side}: its auxiliary head needs it",
            )
        )
        del mine, theirs, models, cases
        gc.collect()
    return section


def eval_section(
    cfg: Config,
    models_for=pair,
    *,
    key="eval",
    ours="archc",
    baseline="torchvision",
    title=None,
    target=EVAL_TARGET,
) -> Section:
    import torch

    torch.set_num_threads(cfg.threads)
    section = Section(
        key,
        title or f"Eval on a tiny input (1x3x{EVAL_SIZES[0]}x{EVAL_SIZES[0]}, {cfg.threads} thread)",
        "Forward in eval mode under `torch.inference_mode()`, where per-module Python overhead "
        f"weighs most; ratio = {ours} / {baseline}.",
        f"≤ {target}x",
        columns=(ours, baseline),
        unit="ms",
    )
    for name in cfg.models():
        try:
            models = models_for(name)
        except Exception as exc:  # e.g. generated code that does not build: a finding, not a crash
            section.add(Row(name, None, None, None, status=f"skipped: {type(exc).__name__}: {exc}"))
            continue
        if models is None:
            section.add(Row(name, None, None, None, status="skipped: no spec"))
            continue
        mine, theirs = (m.eval() for m in models)
        x = tiny_input(theirs)
        if x is None:
            section.add(Row(name, None, None, None, status=f"skipped: runs on none of {EVAL_SIZES}"))
            continue
        cases = {"ours": eval_call(mine, x), "baseline": eval_call(theirs, x)}
        once = probe(cases["ours"]) + probe(cases["baseline"])
        number = max(1, int(0.1 / max(once, 1e-4)))  # ~50 ms per sample: short, so pairs stay close
        rounds = 3 if cfg.quick else 40
        log(f"{key}: {name} ({rounds} rounds of {number} calls)")
        timings = measure(cases, rounds=rounds, number=number, warmup=2, clock=cfg.clock)
        ratio, q1, q3 = timings.ratio("ours", "baseline")
        section.add(
            Row(
                name,
                timings.median("ours"),
                timings.median("baseline"),
                ratio,
                (q1, q3),
                check(ratio, target),
                note="" if x.shape[-1] == EVAL_SIZES[0] else f"{x.shape[-1]}x{x.shape[-1]}: its pooling needs it",
            )
        )
        del mine, theirs, models, cases
        gc.collect()
    return section


def tiny_input(model):
    """A 1x3xSxS input with the smallest S of EVAL_SIZES the model runs on (AlexNet's pooling
    needs more than 32x32)."""
    import torch

    for size in EVAL_SIZES:
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        try:
            with torch.inference_mode():
                model(x)
        except RuntimeError:
            continue
        return x
    return None

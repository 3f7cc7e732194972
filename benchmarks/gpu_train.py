"""GPU training throughput: archc vs torchvision, bf16 autocast + channels_last.

    .venv/bin/python benchmarks/gpu_train.py            # resnet50 and densenet121, batch 128
    .venv/bin/python benchmarks/gpu_train.py --models resnet50 --batch 256 --steps 30 --output gpu.md

For each model, one training step is forward + cross-entropy + backward + SGD step, under
`torch.autocast("cuda", torch.bfloat16)`, with model and input in channels_last, 224x224. The two
models hold the same weights and run in interleaved rounds. Reported: images/s, the ratio
archc / torchvision, and the fraction of this GPU's measured bf16 matmul peak that the model's
MACs reach (3 x forward MACs per image for forward + backward, counted statically by archc).

Without CUDA it refuses cleanly (exit status 2) instead of measuring a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(ROOT))


def matmul_peak(torch, size: int = 8192, repeats: int = 20) -> float:
    """Measured bf16 matmul throughput in FLOP/s (best of a few timed bursts)."""
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        torch.cuda.synchronize()
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet50,densenet121")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--output", help="also write the markdown table here")
    args = p.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_train: no CUDA device here; run this on a machine with an NVIDIA GPU.",
            file=sys.stderr,
        )
        return 2
    import torchvision

    import archc
    from benchmarks.models import EXTRA_KWARGS, train_loss

    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.cuda.get_device_name(0)
    peak = matmul_peak(torch)
    print(f"# {device}: measured bf16 matmul peak {peak / 1e12:.1f} TFLOP/s", flush=True)

    lines = [
        f"GPU training, {device}, bf16 autocast + channels_last, batch {args.batch}, "
        f"{args.size}x{args.size}; torch {torch.__version__}, torchvision {torchvision.__version__}; "
        f"measured bf16 matmul peak {peak / 1e12:.1f} TFLOP/s.",
        "",
        "| model | archc img/s | torchvision img/s | archc / torchvision time | archc % of peak | torchvision % of peak |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in args.models.split(","):
        spec = archc.load(name)
        flops_per_image = (
            3
            * 2
            * spec.macs
            * (args.size / spec.input_shape[1])
            * (args.size / spec.input_shape[2])
        )
        theirs = getattr(torchvision.models, name)(weights=None, **EXTRA_KWARGS.get(name, {}))
        ours = archc.build(spec)
        ours.load_state_dict(theirs.state_dict(), strict=True)
        x = torch.randn(args.batch, 3, args.size, args.size, device="cuda").contiguous(
            memory_format=torch.channels_last
        )
        y = torch.randint(0, 1000, (args.batch,), device="cuda")
        steps = {}
        for label, model in (("archc", ours), ("torchvision", theirs)):
            model = model.cuda().to(memory_format=torch.channels_last).train()
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def step(model=model, opt=opt, x=x, y=y):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    loss = train_loss(model(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            steps[label] = step
        for fn in steps.values():
            for _ in range(args.warmup):
                fn()
        torch.cuda.synchronize()
        times = {label: [] for label in steps}
        for r in range(args.rounds):
            order = list(steps) if r % 2 == 0 else list(steps)[::-1]
            for label in order:
                torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.steps):
                    steps[label]()
                torch.cuda.synchronize()
                times[label].append((time.perf_counter() - start) / args.steps)
        ratio = statistics.median(a / b for a, b in zip(times["archc"], times["torchvision"]))
        ips = {label: args.batch / statistics.median(t) for label, t in times.items()}
        frac = {label: ips[label] * flops_per_image / peak for label in ips}
        lines.append(
            f"| {name} | {ips['archc']:.0f} | {ips['torchvision']:.0f} | {ratio:.3f}x "
            f"| {frac['archc']:.1%} | {frac['torchvision']:.1%} |"
        )
        print(lines[-1], flush=True)
        del ours, theirs, steps
        torch.cuda.empty_cache()
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`archc train`: a plain, deterministic training loop for a spec's model, run as is on one
device or under torchrun (DDP: DistributedSampler, gloo on CPU, nccl on CUDA). Only rank 0
writes files and prints. Imports torch; nothing else in the static path imports this module."""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

SYNTHETIC_SIZE = 256  # images in the synthetic smoke-run set


@dataclass
class Options:
    data: str
    output: Path
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 0
    resume: bool = False
    stop_after: int | None = None  # stop (as if interrupted) after this many epochs
    val_fraction: float = 0.2
    workers: int = 0
    build_options: dict = field(default_factory=dict)


def _dist() -> tuple[int, int]:
    """(rank, world size); starts the process group when torchrun launched us."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _dataset(data: str, shape: tuple[int, int, int], seed: int, val_fraction: float):
    """(train, val) datasets: an ImageFolder tree split deterministically, or synthetic tensors."""
    channels, height, width = shape
    if data == "synthetic":
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(SYNTHETIC_SIZE, channels, height, width, generator=g)
        y = torch.randint(0, 2, (SYNTHETIC_SIZE,), generator=g)
        x[y == 1] += 1.0  # learnable
        full: Dataset = TensorDataset(x, y)
    else:
        from torchvision import datasets, transforms

        tf = transforms.Compose([
            transforms.Grayscale(1) if channels == 1 else transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.Resize((height, width)),
            transforms.ToTensor(),
        ])
        full = datasets.ImageFolder(data, transform=tf)
    n = len(full)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(n * val_fraction)) if n > 1 else 0
    return torch.utils.data.Subset(full, order[n_val:]), torch.utils.data.Subset(full, order[:n_val])


def param_checksum(model: torch.nn.Module) -> float:
    return float(sum(p.detach().double().sum() for p in model.parameters()))


def _log(rank: int, text: str) -> None:
    if rank == 0:
        print(text, file=sys.stderr, flush=True)


def train(spec, opts: Options) -> dict:
    """Train `spec`'s model; returns the metrics of every epoch (rank 0 writes them)."""
    import archc

    rank, world = _dist()
    torch.manual_seed(opts.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    model = archc.build(spec, seed=opts.seed, **opts.build_options).to(device)
    model = model.to(memory_format=torch.channels_last)
    train_set, val_set = _dataset(opts.data, tuple(spec.input_shape), opts.seed, opts.val_fraction)
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=opts.seed) if world > 1 else None
    val_sampler = DistributedSampler(val_set, world, rank, shuffle=False) if world > 1 else None
    per_rank = max(1, opts.batch_size // world)
    g = torch.Generator().manual_seed(opts.seed)
    loader = DataLoader(train_set, batch_size=per_rank, sampler=sampler, shuffle=sampler is None,
                        generator=g, num_workers=opts.workers, drop_last=False)
    val_loader = DataLoader(val_set, batch_size=per_rank, sampler=val_sampler, shuffle=False)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    params = [p for p in model.parameters() if p.requires_grad]
    if opts.optimizer == "adamw":
        optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    else:
        optim = torch.optim.SGD(params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay)
    steps = opts.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / max(1, steps))))
    ckpt = opts.output / "checkpoint.pt"
    history: list[dict] = []
    start = 0
    if opts.resume:
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = state["epoch"], state["history"]
        torch.set_rng_state(state["rng"])
    if rank == 0:
        opts.output.mkdir(parents=True, exist_ok=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    for epoch in range(start, opts.epochs if opts.stop_after is None else opts.stop_after):
        if sampler is not None:
            sampler.set_epoch(epoch)
        g.manual_seed(opts.seed + epoch)  # the same shuffle whether resumed or not
        net.train()
        total = correct = 0
        loss_sum = 0.0
        t0 = time.perf_counter()
        for i, (x, y) in enumerate(loader):
            x = x.to(device, memory_format=torch.channels_last)
            y = y.to(device)
            with autocast:
                out = net(x)
                loss = F.cross_entropy(out.float(), y, label_smoothing=opts.label_smoothing)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            total += len(y)
            correct += int((out.argmax(1) == y).sum())
            if rank == 0 and (i % 10 == 0 or i == len(loader) - 1):
                rate = total * world / max(time.perf_counter() - t0, 1e-9)
                print(f"epoch {epoch + 1}/{opts.epochs} step {i + 1}/{len(loader)} "
                      f"loss {loss_sum / total:.4f} acc {correct / total:.3f} {rate:.0f} img/s",
                      file=sys.stderr, flush=True)
        stats = torch.tensor([loss_sum, correct, total], dtype=torch.float64, device=device)
        val = _evaluate(net, val_loader, device, autocast)
        if world > 1:
            dist.all_reduce(stats)
            dist.all_reduce(val)
        row = {"epoch": epoch + 1, "train_loss": float(stats[0] / stats[2]),
               "train_acc": float(stats[1] / stats[2]),
               "val_loss": float(val[0] / max(val[2], 1)), "val_acc": float(val[1] / max(val[2], 1)),
               "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0}
        history.append(row)
        _log(rank, f"epoch {epoch + 1}: " + " ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
        if rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optim.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": history,
                        "rng": torch.get_rng_state()}, ckpt)
            _write_metrics(opts.output, history)
    print(f"rank {rank}: param checksum {param_checksum(model):.10e}", file=sys.stderr, flush=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return {"history": history, "checksum": param_checksum(model)}


def _evaluate(net, loader, device, autocast) -> torch.Tensor:
    net.eval()
    stats = torch.zeros(3, dtype=torch.float64, device=device)
    with torch.no_grad(), autocast:
        for x, y in loader:
            x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
            out = net(x).float()
            stats += torch.tensor([F.cross_entropy(out, y, reduction="sum").item(),
                                   int((out.argmax(1) == y).sum()), len(y)], dtype=torch.float64, device=device)
    return stats


def _write_metrics(folder: Path, history: list[dict]) -> None:
    (folder / "metrics.json").write_text(json.dumps(history, indent=2) + "\n")
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)

"""`archc train`: a plain, deterministic training loop for a spec's model, run as is on one
device or under torchrun (DDP: DistributedSampler, gloo on CPU, nccl on CUDA). Only rank 0
writes files and prints. Imports torch; nothing else in the static path imports this module."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from archc.errors import ArchcError
from archc.outputs import MARKER, check_replaceable, with_zip_comment, write_atomic

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
    force: bool = False  # replace a checkpoint.pt archc did not write
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
    if getattr(model, "load_report", None) is not None:
        _log(rank, model.load_report.format())
    if spec.frozen:
        total = sum(p.numel() for p in model.parameters())
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        _log(rank, f"frozen: {', '.join(spec.frozen)} ({total - trainable:,} parameters; "
                   f"{trainable:,} of {total:,} trainable; frozen batch norms keep their statistics)")
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
    if not opts.resume:
        check_replaceable(ckpt, force=opts.force)  # refuse a stranger's file now, not after an epoch
    else:
        state = torch.load(ckpt, map_location=device, weights_only=True)  # tensors and plain data only
        if list(state.get("frozen", [])) != list(spec.frozen):
            raise ArchcError(
                f"{ckpt}: the checkpoint was trained with {_listed(state.get('frozen', []))} frozen, this run "
                f"freezes {_listed(spec.frozen)}: resume with the same freeze: and --freeze"
            )
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = state["epoch"], state["history"]
        torch.set_rng_state(state["rng"])
    if rank == 0:
        opts.output.mkdir(parents=True, exist_ok=True)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    progress = Progress(sys.stderr if rank == 0 else None)
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
            progress.step(f"epoch {epoch + 1}/{opts.epochs}", i + 1, len(loader),
                          f"loss {loss_sum / total:.4f} acc {correct / total:.3f} "
                          f"{total * world / max(time.perf_counter() - t0, 1e-9):.0f} img/s")  # fmt: skip
        train_seconds = time.perf_counter() - t0
        progress.clear()
        stats = torch.tensor([loss_sum, correct, total], dtype=torch.float64, device=device)
        val = _evaluate(net, val_loader, device, autocast)
        if world > 1:
            dist.all_reduce(stats)
            dist.all_reduce(val)
        row = {"epoch": epoch + 1, "train_loss": float(stats[0] / stats[2]),
               "train_acc": float(stats[1] / stats[2]),
               "val_loss": float(val[0] / max(val[2], 1)), "val_acc": float(val[1] / max(val[2], 1)),
               "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - t0,
               "images_per_second": float(stats[2]) / max(train_seconds, 1e-9)}
        history.append(row)
        _log(rank, f"epoch {epoch + 1}/{opts.epochs}: loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} "
                   f"val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.3f} lr {row['lr']:.3g} "
                   f"{row['images_per_second']:.0f} img/s {row['seconds']:.1f} s")
        if rank == 0:
            _save_checkpoint(ckpt, spec, opts.force, {
                "model": model.state_dict(), "optimizer": optim.state_dict(),
                "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": history,
                "rng": torch.get_rng_state(), "frozen": list(spec.frozen)})  # fmt: skip
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


def _listed(paths) -> str:
    return ", ".join(paths) if paths else "nothing"


def _save_checkpoint(path: Path, spec, force: bool, state: dict) -> None:
    """The checkpoint, written through a temporary file and a rename (an interrupted save
    leaves the previous epoch's), marked as archc's in the zip comment; plain torch.load reads it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    note = f"{MARKER}: an archc train checkpoint of {spec.name} (epoch {state['epoch']}); --resume continues it"
    write_atomic(path, with_zip_comment(buffer.getvalue(), note), force=force)


def _write_metrics(folder: Path, history: list[dict]) -> None:
    """metrics.json and metrics.csv, each written whole (temporary file and rename); JSON and
    CSV have no room for archc's marker, so they replace what is there (`force`)."""
    write_atomic(folder / "metrics.json", json.dumps(history, indent=2) + "\n", force=True)
    table = io.StringIO()
    w = csv.DictWriter(table, fieldnames=list(history[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_atomic(folder / "metrics.csv", table.getvalue(), force=True)


class Progress:
    """A progress bar on a terminal: one line (cut to the terminal's width, so it never wraps)
    redrawn in place, at most every REDRAW seconds and at the last step, cleared before the
    epoch's summary line. Off a terminal (a log file, a pipe, CI) and on ranks other than 0 it
    prints nothing: the per-epoch lines say it all."""

    REDRAW = 0.1  # seconds
    WIDTH = 24  # characters of bar

    def __init__(self, stream):
        self.stream = stream if stream is not None and _is_tty(stream) else None
        self.drawn = 0  # characters on the line now
        self.last = 0.0

    def step(self, what: str, done: int, total: int, figures: str) -> None:
        now = time.perf_counter()
        if self.stream is None or (done < total and now - self.last < self.REDRAW):
            return
        self.last = now
        filled = self.WIDTH * done // max(total, 1)
        bar = "=" * filled + (">" if filled < self.WIDTH else "") + " " * (self.WIDTH - filled - 1)
        line = f"{what} [{bar}] {done}/{total} {figures}"[: shutil.get_terminal_size().columns - 1]
        self.stream.write("\r" + line.ljust(self.drawn))
        self.stream.flush()
        self.drawn = len(line)

    def clear(self) -> None:
        if self.stream is not None and self.drawn:
            self.stream.write("\r" + " " * self.drawn + "\r")
            self.stream.flush()
            self.drawn = 0


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False

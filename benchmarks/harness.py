"""Timing and reporting shared by the benchmark suites.

Every figure is a ratio of two (or more) cases measured side by side in one process, in
interleaved rounds whose order alternates (A B, B A, A B, ...), so drift and other load on the
machine hit both sides alike. A case's time is the median over rounds; a ratio is the median of
the per-round ratios, reported with its interquartile range as the noise estimate.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


@dataclass
class Timings:
    """Seconds per call of each case, one entry per round (rounds aligned across cases)."""

    times: dict[str, list[float]]

    def median(self, case: str) -> float:
        return statistics.median(self.times[case])

    def ratios(self, case: str, baseline: str) -> list[float]:
        return [a / b for a, b in zip(self.times[case], self.times[baseline])]

    def ratio(self, case: str, baseline: str) -> tuple[float, float, float]:
        """Median of per-round ratios case/baseline, with its quartiles."""
        values = sorted(self.ratios(case, baseline))
        if len(values) < 4:
            return statistics.median(values), values[0], values[-1]
        q1, _, q3 = statistics.quantiles(values, n=4)
        return statistics.median(values), q1, q3


def children_cpu() -> float:
    """CPU time (user + system) of the child processes that have ended."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# "children": the CPU time of subprocesses a case runs (the CLI suite's clock for "cpu")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time, "children": children_cpu}


def measure(
    cases: dict[str, Callable[[], object]],
    *,
    rounds: int,
    number: int = 1,
    warmup: int = 1,
    setup: Callable[[], object] | None = None,
    clock: str = "wall",
) -> Timings:
    """Time each case `rounds` times (each time the mean of `number` calls), interleaved.

    clock "wall" is elapsed time; "cpu" is this process's CPU time (user + system), which on a
    shared machine leaves out the time slices other processes get while this one waits.
    """
    now = CLOCKS[clock]
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if setup is not None:
                setup()
            fn = cases[name]
            start = now()
            for _ in range(number):
                fn()
            times[name].append((now() - start) / number)
    return Timings(times)


def rounds_for(seconds_per_round: float, budget: float, lo: int, hi: int) -> int:
    """How many rounds fit a time budget, within [lo, hi]."""
    if seconds_per_round <= 0:
        return hi
    return max(lo, min(hi, int(budget / seconds_per_round)))


def probe(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---- results ------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    ours: float | None  # seconds (or another unit, see Section.unit)
    baseline: float | None
    ratio: float | None  # ours / baseline, or baseline / ours for speedups (Section.speedup)
    spread: tuple[float, float] | None = None  # interquartile range of the ratio
    status: str = ""  # met / MISS / info / skipped: why
    note: str = ""


@dataclass
class Section:
    key: str
    title: str
    what: str  # what is measured, against what
    target: str  # in words, e.g. "≤ 1.10x"
    columns: tuple[str, str] = ("archc", "baseline")
    unit: str = "ms"
    ratio_name: str = "ratio"
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time the suite took
    stamp: str = ""  # when, at what load average and commit it was measured

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row


def check(ratio: float, limit: float, *, at_least: bool = False) -> str:
    ok = ratio >= limit if at_least else ratio <= limit
    return "met" if ok else "MISS"


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "ms":
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "s":
        return f"{value:.3g} s"
    if unit == "us":
        return f"{value * 1e6:.3g} µs"
    return f"{value:.4g} {unit}".strip()


def fmt_ratio(row: Row) -> str:
    if row.ratio is None:
        return "–"
    text = f"{row.ratio:.3f}x"
    if row.spread is not None:
        text += f" [{row.spread[0]:.3f}–{row.spread[1]:.3f}]"
    return text


def markdown(section: Section) -> str:
    ours, base = section.columns
    lines = [
        f"### {section.title}",
        "",
        f"{section.what} Target: **{section.target}**.",
        "",
        f"| case | {ours} | {base} | {section.ratio_name} [IQR] | status |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in section.rows:
        status = row.status + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {row.case} | {fmt_value(row.ours, section.unit)} | {fmt_value(row.baseline, section.unit)} "
            f"| {fmt_ratio(row)} | {status} |"
        )
    if section.notes:
        lines.append("")
        lines.extend(f"- {note}" for note in section.notes)
    lines.append("")
    stamp = f"; {section.stamp}" if section.stamp else ""
    lines.append(f"_(suite took {section.seconds:.0f} s{stamp})_")
    lines.append("")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    """The machine and the versions the figures were measured with."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "cores (nproc)": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        load = os.getloadavg()
        info["load average at start"] = f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch threads used"] = str(torch.get_num_threads())
        info["CUDA"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    except ImportError:
        info["torch"] = "not installed"
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=10,
        ).stdout.strip()
        if commit:
            info["archc commit"] = commit + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

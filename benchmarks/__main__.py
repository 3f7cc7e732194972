"""`python -m benchmarks`: run the suites, print progress, write RESULTS.md."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks.config import Config
from benchmarks.harness import ROOT, Row, Section, commit, load_average, log, machine, markdown

HERE = Path(__file__).resolve().parent


def suites() -> dict[str, Callable[[Config], Section]]:
    from benchmarks import (
        bench_cli,
        bench_compare,
        bench_construct,
        bench_fuse,
        bench_generated,
        bench_models,
        bench_scaling,
    )

    return {
        "cli": bench_cli.run,
        "scaling": bench_scaling.run,
        "construct": bench_construct.run,
        "train": lambda cfg: bench_models.train_section(cfg),
        "eval": lambda cfg: bench_models.eval_section(cfg),
        "fuse": bench_fuse.run,
        "compare": bench_compare.run,
        "gen-construct": bench_generated.construct,
        "gen-train": bench_generated.train,
        "gen-eval": bench_generated.evaluate,
    }


# Construction allocates hundreds of MB per model. glibc raises its mmap threshold as large
# blocks are freed, so in alternating rounds one side can get the pages the other just freed
# (no page faults) while the other faults its own in: a 15% bias either way, depending on the
# order. These suites run in a child interpreter with a fixed threshold, where every tensor
# comes fresh from the OS, as in a process that builds one model.
FRESH_PAGES = {"MALLOC_MMAP_THRESHOLD_": "131072"}
ISOLATED = {"construct": FRESH_PAGES, "gen-construct": FRESH_PAGES}


def run_isolated(name: str, args: argparse.Namespace) -> Section:
    argv = [sys.executable, "-m", "benchmarks", "--child", name]
    argv += ["--threads", str(args.threads), "--clock", args.clock]
    if args.quick:
        argv.append("--quick")
    if args.full:
        argv.append("--full")
    if args.specs:
        argv += ["--specs", args.specs]
    env = {**os.environ, **ISOLATED[name]}
    result = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"child run of {name} failed (exit {result.returncode})")
    return from_dict(json.loads(result.stdout.strip().splitlines()[-1]))


def summary_table(sections: list[Section]) -> list[str]:
    lines = [
        "| suite | target | worst case | status |",
        "| --- | --- | --- | --- |",
    ]
    for s in sections:
        measured = [r for r in s.rows if r.ratio is not None and r.status in ("met", "MISS")]
        skipped = [r for r in s.rows if r.status.startswith("skipped")]
        if measured:
            speedup = s.ratio_name == "speedup"
            worst = (
                min(measured, key=lambda r: r.ratio)
                if speedup
                else max(measured, key=lambda r: r.ratio)
            )
            misses = sum(r.status == "MISS" for r in measured)
            status = f"{misses} of {len(measured)} miss" if misses else f"all {len(measured)} met"
            if skipped:
                status += f", {len(skipped)} skipped"
            lines.append(
                f"| [{s.title}](#{anchor(s.title)}) | {s.target} | {worst.case}: {worst.ratio:.3f}x | {status} |"
            )
        elif skipped and len(skipped) == len(s.rows):
            lines.append(
                f"| [{s.title}](#{anchor(s.title)}) | {s.target} | – | {skipped[0].status} |"
            )
        else:
            lines.append(f"| [{s.title}](#{anchor(s.title)}) | {s.target} | – | info |")
    return lines


def anchor(title: str) -> str:
    keep = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return keep.replace(" ", "-")


def stored(output: Path) -> dict[str, Section]:
    """The sections of earlier runs, kept beside the report (RESULTS.json)."""
    try:
        data = json.loads(output.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}
    return {key: from_dict(value) for key, value in data.items()}


def from_dict(data: dict) -> Section:
    rows = [
        Row(**{**r, "spread": tuple(r["spread"]) if r["spread"] else None}) for r in data.pop("rows")
    ]
    return Section(**{**data, "columns": tuple(data["columns"]), "rows": rows})


def in_order(sections: dict[str, Section]) -> list[Section]:
    order = list(suites())
    return sorted(sections.values(), key=lambda s: order.index(s.key) if s.key in order else len(order))


def report(sections: list[Section], info: dict[str, str], command: str, seconds: float) -> str:
    lines = [
        "# archc benchmarks",
        "",
        f"Written by `{command}` in {seconds / 60:.1f} min (suites this run did not measure are "
        "kept from earlier runs: each says when it was measured, at what load average and commit). "
        "Every figure is a ratio of cases measured "
        "side by side in one process, in interleaved rounds whose order alternates, so load from "
        "other processes falls on both sides; times are medians over rounds, ratios are medians "
        "of the per-round ratios, with their interquartile range in brackets.",
        "",
        "| machine | |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "## Summary",
        "",
        *summary_table(sections),
        "",
        "Where the time goes, what misses and by how much, with profiles: "
        "[ANALYSIS.md](ANALYSIS.md) (written by hand from these runs).",
        "",
        "GPU training (bf16 autocast + channels_last, batch 128): `python benchmarks/gpu_train.py` "
        "on a CUDA machine"
        + (" (no CUDA device on this one)." if info.get("CUDA") == "none" else "."),
        "",
        "## Results",
        "",
    ]
    for section in sections:
        lines.append(markdown(section))
    return "\n".join(lines)


def write(output: Path, sections: dict[str, Section], info, command: str, seconds: float, *, store: bool) -> None:
    """The report of this run's sections and, unless `store` is off (--quick), those stored by
    earlier (or concurrent) runs of other suites, re-read now."""
    if store:
        sections = {**stored(output), **sections}
    output.write_text(report(in_order(sections), info, command, seconds))
    if store:
        data = {key: asdict(section) for key, section in sections.items()}
        output.with_suffix(".json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    names = list(suites())
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 2 rounds, small inputs, no torch.compile"
    )
    p.add_argument(
        "--full", action="store_true",
        help="model suites: every variant of every family (default: one variant per family)",
    )  # fmt: skip
    p.add_argument("--only", help=f"comma-separated suites ({', '.join(names)})")
    p.add_argument("--skip", help="comma-separated suites to leave out")
    p.add_argument(
        "--specs",
        help="comma-separated spec names for the model suites (default: each suite's own)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu",
        help="in-process suites: process CPU time (default; robust to other load) or wall time",
    )  # fmt: skip
    p.add_argument("--child", help=argparse.SUPPRESS)  # run one suite, print it as JSON
    p.add_argument(
        "-o",
        "--output",
        help="markdown file to write (default benchmarks/RESULTS.md; --quick: a temporary file)",
    )
    args = p.parse_args(argv)

    chosen = args.only.split(",") if args.only else names
    skip = set(args.skip.split(",")) if args.skip else set()
    unknown = [n for n in [*chosen, *skip] if n not in names]
    if unknown:
        p.error(f"unknown suite(s): {', '.join(unknown)} (known: {', '.join(names)})")
    cfg = Config(
        quick=args.quick, full=args.full, threads=args.threads, clock=args.clock,
        specs=args.specs.split(",") if args.specs else None,
    )  # fmt: skip
    if args.output:
        output = Path(args.output)
    elif args.quick:  # a smoke run's figures are not results: keep them out of the tree
        output = Path(tempfile.gettempdir()) / "archc-benchmarks-quick.md"
    else:
        output = HERE / "RESULTS.md"

    import torch

    torch.set_num_threads(cfg.threads)
    if args.child:
        print(json.dumps(asdict(suites()[args.child](cfg))))
        return 0
    info = machine()
    info["allocator"] = (
        "construction suites run in a child process with MALLOC_MMAP_THRESHOLD_=131072, so every "
        "model gets fresh pages (see ISOLATED in benchmarks/__main__.py); the rest use the default"
    )
    info["clock (in-process suites)"] = (
        "process CPU time (user + system): on a shared machine it leaves out other processes' "
        "time slices; for these single-threaded runs it is what wall time is on an idle machine"
        if cfg.clock == "cpu" else "wall time"
    )  # fmt: skip
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    start = time.perf_counter()
    kept: dict[str, Section] = {}  # this run's; write() adds the other suites' stored ones
    sections: list[Section] = []
    table = suites()
    for name in chosen:
        if name in skip:
            continue
        log(f"== {name}")
        began, load = time.perf_counter(), load_average()
        try:
            section = run_isolated(name, args) if name in ISOLATED else table[name](cfg)
        except Exception as exc:  # one broken suite should not lose the others' figures
            traceback.print_exc()
            section = Section(name, name, "", "–")
            section.add(
                Row(
                    "all", None, None, None, status=f"skipped: crashed: {type(exc).__name__}: {exc}"
                )
            )
        section.seconds = time.perf_counter() - began
        section.stamp = (
            f"measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
            f"load average {load} → {load_average()} on {info['cores (nproc)']} cores, "
            f"{'--full, ' if cfg.full else ''}commit {commit()}"
        )
        sections.append(section)
        kept[section.key] = section
        print(markdown(section), flush=True)
        write(output, kept, info, command.strip(), time.perf_counter() - start, store=not args.quick)
    write(output, kept, info, command.strip(), time.perf_counter() - start, store=not args.quick)
    log(f"wrote {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

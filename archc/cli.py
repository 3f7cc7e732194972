"""The `archc` command line. Errors print as `FILE:LINE:COL: error: ...`; exit 1 (2 for usage)."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from archc.errors import ArchcError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[func.__name__.removeprefix("cmd_")] = func
    return func


@command
def cmd_validate(args: argparse.Namespace) -> int:
    from archc.compiler import load

    failed = 0
    for path in args.specs:
        try:
            spec = load(path)
        except ArchcError as exc:
            if args.debug:
                traceback.print_exc()
            print(exc.format(), file=sys.stderr)
            failed += 1
            continue
        if not args.quiet:
            print(f"{path}: ok ({spec.name}: {spec.param_count:,} params, {spec.macs / 1e9:.3f} GMACs)")
    return 1 if failed else 0


@command
def cmd_summary(args: argparse.Namespace) -> int:
    from archc.compiler import load
    from archc.tables import as_dict, table

    spec = load(args.spec)
    if args.json:
        print(json.dumps(as_dict(spec, args.depth), indent=2))
    else:
        print(table(spec, args.depth))
    return 0


@command
def cmd_build(args: argparse.Namespace) -> int:
    from archc.compiler import load
    from archc.tables import table

    spec = load(args.spec)
    from archc.backends import torch_backend

    model = torch_backend.build(spec, seed=args.seed)
    print(table(spec, args.depth))
    runtime = sum(p.numel() for p in model.parameters())
    print(f"built {type(model).__name__} with {runtime:,} parameters")
    if args.check:
        problems = torch_backend.check_shapes(model, spec)
        if problems:
            for problem in problems:
                print(f"{spec.file}: error: shape check failed: {problem}", file=sys.stderr)
            return 1
        nodes = sum(1 for _ in torch_backend.module_nodes(spec))
        print(f"check: runtime shapes equal static shapes for all {nodes} modules")
    if args.save:
        import torch

        torch.save(model.state_dict(), args.save)
        print(f"saved state_dict to {args.save}")
    return 0


@command
def cmd_codegen(args: argparse.Namespace) -> int:
    from archc.backends.codegen import write_all

    return write_all(args.specs, Path(args.output), force=args.force)


@command
def cmd_draw(args: argparse.Namespace) -> int:
    from archc.backends.graphviz_backend import render

    return render(args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="archc", description="Compile CNN architecture specs to PyTorch.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("validate", help="check specs statically (no torch)")
    s.add_argument("specs", nargs="+", metavar="SPEC")
    s.add_argument("-q", "--quiet", action="store_true")

    s = sub.add_parser("summary", help="per-layer shapes, params and MACs (no torch)")
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("--depth", type=int, default=None, help="levels of nesting to show")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("build", help="build the torch module and print its summary")
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("--check", action="store_true", help="verify runtime shapes against static ones")
    s.add_argument("--save", metavar="PATH", help="write the state_dict here")
    s.add_argument("--seed", type=int, default=None, help="seed for reproducible weights")
    s.add_argument("--depth", type=int, default=2, help="levels of nesting in the summary")

    s = sub.add_parser("codegen", help="write standalone PyTorch source")
    s.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or folders")
    s.add_argument("-o", "--output", default="generated", metavar="DIR")
    s.add_argument("--force", action="store_true", help="overwrite files archc did not write")

    s = sub.add_parser("draw", help="render a Graphviz diagram")
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("-o", "--output", metavar="FILE", help=".dot, .svg, .png or .pdf")
    s.add_argument("--depth", type=int, default=None, help="collapse below this depth")
    s.add_argument("--direction", choices=("TB", "LR"), default="TB")
    s.add_argument("--no-shapes", action="store_true", help="leave shapes off the edges")
    s.add_argument("--force", action="store_true", help="overwrite a file archc did not write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ArchcError as exc:
        if args.debug:
            traceback.print_exc()
        print(exc.format(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in archc, not in the spec
        if args.debug:
            raise
        print(f"archc: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)", file=sys.stderr)
        return 1

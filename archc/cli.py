"""The `archc` command line. Errors print as `FILE:LINE:COL: error: ...`; exit 1 (2 for usage)."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from archc.errors import ArchcError, SpecError, UsageError

if TYPE_CHECKING:
    from archc.compiler import Spec

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[func.__name__.removeprefix("cmd_")] = func
    return func


def each_model(arg: str, args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(spec, variant) pairs a command reads for `arg`: with --variants, every variant of a
    family spec (a spec without variants is itself), else the one --variant names."""
    if not getattr(args, "variants", False):
        return [(arg, args.variant)]
    from archc.registry import find, variants_of

    path, implied = find(arg)
    if implied is not None or arg == "-":
        return [(arg, None)]  # a variant's name is one model; stdin is read once
    return [(arg, v) for v in variants_of(Path(path))] or [(arg, None)]


def in_variant(exc: ArchcError, arg: str, variant: str | None) -> ArchcError:
    """`exc` with a note naming the variant it happened in (where the variant is written)."""
    if variant is None or not isinstance(exc, SpecError):
        return exc
    from archc.registry import find
    from archc.spec.loader import load_file

    try:
        where = load_file(find(arg)[0]).source.locate(("variants", variant))
    except ArchcError:
        where = None
    return exc.note(f"in variant {variant!r}", where)


@command
def cmd_validate(args: argparse.Namespace) -> int:
    from archc.compiler import load

    failed = 0
    for arg in args.specs:
        try:
            models = each_model(arg, args)
        except ArchcError as exc:
            print(exc.format(), file=sys.stderr)
            failed += 1
            continue
        for path, variant in models:
            try:
                spec = load(path, variant=variant, overrides=args.overrides)
            except ArchcError as exc:
                if isinstance(exc, UsageError):  # a bad --set: the same for every spec
                    raise
                if args.debug:
                    traceback.print_exc()
                print((in_variant(exc, path, variant) if args.variants else exc).format(), file=sys.stderr)
                failed += 1
                continue
            if not args.quiet:
                which = f" [{variant}]" if args.variants and variant else ""
                print(
                    f"{path}{which}: ok ({spec.name}: {spec.param_count:,} params, "
                    f"{spec.macs / 1e9:.3f} GMACs)"
                )
    return 1 if failed else 0


@command
def cmd_summary(args: argparse.Namespace) -> int:
    from archc.compiler import load
    from archc.tables import as_dict, compare, comparison, table

    models = [m for arg in args.specs for m in each_model(arg, args)]
    specs = []
    for path, variant in models:
        try:
            specs.append(frozen(load(path, variant=variant, overrides=args.overrides), args))
        except ArchcError as exc:
            raise (in_variant(exc, path, variant) if args.variants else exc) from None
    if len(specs) > 1 or args.variants:  # side by side, one row per model
        rows = compare(specs)
        print(json.dumps(rows, indent=2) if args.json else comparison(rows))
    elif args.json:
        print(json.dumps(as_dict(specs[0], args.depth), indent=2))
    else:
        print(table(specs[0], args.depth))
    return 0


@command
def cmd_build(args: argparse.Namespace) -> int:
    import archc
    from archc import resources
    from archc.compiler import load
    from archc.tables import table

    spec = frozen(load(args.spec, **spec_options(args)), args)
    save_to = save_path(args.save, spec, force=args.force) if args.save else None
    if args.check:  # the check's forward pass runs at batch 2: estimate that before building
        resources.check(spec, args.max_memory, batch=2)
    model = archc.build(
        spec,
        seed=args.seed,
        max_memory=args.max_memory,
        fuse=args.fuse,
        channels_last=args.channels_last,
        weights=args.weights,
        strict=not args.no_strict,
    )
    from archc.backends import fuse, torch_backend

    print(table(spec, args.depth))
    if args.weights:
        print(model.load_report.format())
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    split = f" ({trainable:,} trainable, {params - trainable:,} frozen)" if trainable < params and not args.fuse else ""
    print(f"built {type(model).__name__} with {params:,} parameters{split}")
    if args.fuse:
        done = fuse.summary(model)
        print(
            f"fused for inference: {done['batchnorms_folded']} batch norms folded and "
            f"{done['activations_fused']} activations fused into {done['convs']} convolutions "
            f"and {done['linears']} linear layers"
            + (", channels-last" if args.channels_last else "")
        )
    elif args.channels_last:
        print("channels-last memory format")
    if args.check:
        problems = torch_backend.check_shapes(model, spec)
        if problems:
            for problem in problems:
                print(f"{spec.file}: error: shape check failed: {problem}", file=sys.stderr)
            return 1
        nodes = sum(1 for _ in torch_backend.module_nodes(spec))
        print(f"check: runtime shapes equal static shapes for all {nodes} modules")
    if save_to is not None:
        from archc.outputs import write_atomic

        write_atomic(save_to, torch_backend.state_dict_file(model, spec), force=args.force)
        print(f"saved state_dict to {save_to}")
    return 0


@command
def cmd_train(args: argparse.Namespace) -> int:
    from archc.compiler import load

    spec = frozen(load(args.spec, **spec_options(args)), args)
    from archc.train import Options, train

    build_options = {}
    if args.weights is not None:
        build_options["weights"] = args.weights
    opts = Options(
        data=args.data, output=Path(args.output), epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, optimizer=args.optimizer, label_smoothing=args.label_smoothing, aux_weight=args.aux_weight,
        seed=args.seed, resume=args.resume, stop_after=args.stop_after, build_options=build_options,
        force=args.force,
    )  # fmt: skip
    train(spec, opts)
    return 0


@command
def cmd_export(args: argparse.Namespace) -> int:
    from archc.compiler import load
    from archc.outputs import check_replaceable

    spec = load(args.spec, **spec_options(args))
    target = Path(args.output)
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
        raise NotADirectoryError(  # printed as `archc: error: FILE: ...`, exit 1
            20, f"cannot write here: {target.parent} is not a writable folder", str(target))
    check_replaceable(target, force=args.force)  # exports carry no marker: replaced with --force
    from archc.export import export

    export(spec, args.format, target)
    print(f"wrote {target} ({args.format})")
    return 0


def save_path(arg: str, spec: Spec, *, force: bool) -> Path:
    """Where `--save ARG` writes: ARG, or `<spec name>.pt` inside it when ARG is a folder (an
    existing one, or any path ending in /). Checked before the build, so a refusal costs nothing."""
    from archc.outputs import check_replaceable, contained

    path = Path(arg)
    if arg.endswith(("/", os.sep)) or path.is_dir():
        path = contained(path, spec.name + ".pt")
    check_replaceable(path, force=force)
    return path


@command
def cmd_codegen(args: argparse.Namespace) -> int:
    from archc.backends.codegen import write_all

    result = write_all(args.specs, Path(args.output), force=args.force, **spec_options(args))
    for target in result.written:
        print(f"wrote {target}")
    for exc in result.errors:
        print(exc.format(), file=sys.stderr)
    return 1 if result.errors else 0


@command
def cmd_list(args: argparse.Namespace) -> int:
    from archc.registry import SPECS_DIR, catalogue, models

    if not models():
        raise ArchcError(f"no shipped specs in {SPECS_DIR} (this archc was installed without them)")
    rows = catalogue()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20} {'family':<14} {'params':>13} {'GMACs':>8}  input")
    for row in rows:
        shape = "×".join(map(str, row["input"]))
        print(f"{row['name']:<20} {row['family']:<14} {row['params']:>13,} {row['macs'] / 1e9:>8.3f}  {shape}")
    return 0


@command
def cmd_schema(args: argparse.Namespace) -> int:
    from archc.cache import cached

    def compute() -> str:
        from archc.jsonschema import dumps  # imports every model; the cache skips even that

        return dumps()

    sys.stdout.write(cached("schema", [], compute))  # it follows archc's source only
    return 0


@command
def cmd_draw(args: argparse.Namespace) -> int:
    from archc.backends.graphviz_backend import MAX_DRAWN_BOXES, render

    drawn = render(
        args.spec, args.output, depth=args.depth, direction=args.direction,
        shapes=not args.no_shapes, force=args.force, **spec_options(args),
    )  # fmt: skip
    if drawn.chosen_depth is not None:
        print(
            f"archc: note: collapsed to --depth {drawn.chosen_depth} to keep the diagram under "
            f"{MAX_DRAWN_BOXES:,} nodes; pass --depth to choose",
            file=sys.stderr,
        )
    print(f"wrote {drawn.path}")
    return 0


def frozen(spec: Spec, args: argparse.Namespace) -> Spec:
    """`spec` with the modules --freeze names frozen too (a pattern matching none: exit 2)."""
    from archc.freeze import with_frozen

    return with_frozen(spec, args.freeze)


def add_freeze_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--freeze", action="append", default=[], metavar="PATTERN",
                   help="freeze these modules (a path or glob pattern like 'layer[1-3]'; repeatable): "
                   "no gradients, batch norms keep their running statistics")  # fmt: skip


def spec_options(args: argparse.Namespace) -> dict:
    """--variant and --set, as `archc.load` takes them."""
    return {"variant": args.variant, "overrides": args.overrides}


def add_spec_options(p: argparse.ArgumentParser, every_variant: str = "") -> None:
    """--variant NAME and --set KEY=VALUE, on every command that reads specs (and --variants,
    every variant, where `every_variant` says what it does)."""
    which = p.add_mutually_exclusive_group() if every_variant else p
    which.add_argument("--variant", metavar="NAME", help="use this one of the spec's variants")
    if every_variant:
        which.add_argument("--variants", action="store_true", help=every_variant)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set a value in the spec, e.g. params.num_classes=10 (repeatable)")  # fmt: skip


def _depth(text: str) -> int:
    """--depth N for summary, build and draw: levels of nesting shown, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"{text} is not a depth: give a whole number of at least 1"
        )
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not -(2**63) <= value < 2**64:  # what torch.manual_seed takes
        raise argparse.ArgumentTypeError(f"{text} is out of range: a seed fits in 64 bits")
    return value


def _memory_limit(text: str) -> int | str | None:
    from archc.resources import parse_size

    if text == "auto":
        return text
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="archc", description="Compile CNN architecture specs to PyTorch."
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("validate", help="check specs statically (no torch)")
    s.add_argument("specs", nargs="+", metavar="SPEC")
    s.add_argument("-q", "--quiet", action="store_true")
    add_spec_options(s, every_variant="validate every variant of a family spec")

    s = sub.add_parser(
        "summary",
        help="per-layer shapes, params and MACs (no torch); several specs or --variants: side by side",
    )
    s.add_argument("specs", nargs="+", metavar="SPEC")
    s.add_argument("--depth", type=_depth, default=None, help="levels of nesting to show")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    add_freeze_option(s)
    add_spec_options(s, every_variant="compare every variant of a family spec side by side")

    s = sub.add_parser("build", help="build the torch module and print its summary")
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("--check", action="store_true", help="verify runtime shapes against static ones")
    s.add_argument(
        "--save", metavar="PATH", help="write the state_dict here (a folder: <spec name>.pt in it)"
    )
    s.add_argument(
        "--force", action="store_true", help="let --save overwrite a file archc did not write"
    )
    s.add_argument("--seed", type=_seed, default=None, help="seed for reproducible weights")
    s.add_argument("--weights", metavar="FILE",
                   help="load a state_dict or checkpoint (tensors whose shapes differ get the spec's init)")  # fmt: skip
    s.add_argument("--no-strict", action="store_true",
                   help="with --weights: load what matches, ignoring missing and unexpected keys")  # fmt: skip
    s.add_argument("--depth", type=_depth, default=2, help="levels of nesting in the summary")
    s.add_argument("--fuse", action="store_true",
                   help="inference build: fold batch norms into convolutions, fuse ReLUs, pack weights (eval mode)")  # fmt: skip
    s.add_argument("--channels-last", action="store_true", help="channels-last memory format")
    add_freeze_option(s)
    add_spec_options(s)
    s.add_argument(
        "--max-memory", type=_memory_limit, default="auto", metavar="SIZE",
        help="refuse models estimated to need more (e.g. 8GiB, 512MiB, none; "
        "default: auto, half of this machine's memory)",
    )  # fmt: skip

    s = sub.add_parser("codegen", help="write standalone PyTorch source")
    s.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or folders")
    s.add_argument("-o", "--output", default="generated", metavar="DIR")
    s.add_argument("--force", action="store_true", help="overwrite files archc did not write")
    add_spec_options(s)

    s = sub.add_parser("draw", help="render a Graphviz diagram")
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("-o", "--output", metavar="FILE", help=".dot, .svg, .png or .pdf")
    s.add_argument("--depth", type=_depth, default=None,
                   help="collapse below this depth (default: all, or what keeps a huge graph drawable)")  # fmt: skip
    s.add_argument("--direction", choices=("TB", "LR"), default="TB")
    s.add_argument("--no-shapes", action="store_true", help="leave shapes off the edges")
    add_spec_options(s)
    s.add_argument("--force", action="store_true", help="overwrite a file archc did not write")

    s = sub.add_parser("train", help="train on an ImageFolder dataset (torchrun for DDP)")
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("--data", required=True, metavar="DIR", help="ImageFolder root, or 'synthetic'")
    s.add_argument("-o", "--output", default="runs", metavar="DIR", help="checkpoint and metrics")
    s.add_argument("--epochs", type=int, default=10)
    s.add_argument("--batch-size", type=int, default=32, help="global batch (split over ranks)")
    s.add_argument("--lr", type=float, default=0.01)
    s.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    s.add_argument("--label-smoothing", type=float, default=0.0)
    s.add_argument("--aux-weight", type=float, default=0.3, metavar="W",
                   help="weight of each auxiliary head's loss (GoogLeNet, Inception v3) in train mode")
    s.add_argument("--seed", type=_seed, default=0)
    s.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint.pt")
    s.add_argument("--stop-after", type=int, metavar="N", help="stop after epoch N (resume later)")
    s.add_argument("--force", action="store_true", help="replace an OUTPUT/checkpoint.pt archc did not write")
    s.add_argument("--weights", metavar="FILE",
                   help="start from these weights (a state_dict or checkpoint; a new head keeps the spec's init)")
    add_freeze_option(s)
    add_spec_options(s)

    s = sub.add_parser("export", help="write the model as ONNX, TorchScript or an ExportedProgram")
    s.add_argument("spec", metavar="SPEC")
    s.add_argument("--format", required=True, choices=("onnx", "torchscript", "exported-program"))
    s.add_argument("-o", "--output", required=True, metavar="FILE")
    s.add_argument("--force", action="store_true", help="replace an existing file")
    add_spec_options(s)

    sub.add_parser("schema", help="print the JSON Schema of the spec format (for editors)")

    s = sub.add_parser("list", help="the shipped models: name, family, params, MACs, input (no torch)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    return p


# Commands that run no torch, start no thread and leave no file open: run as the program
# (`archc`, `python -m archc`) they end with os._exit once their output is flushed, skipping
# the interpreter's teardown (freeing every module and object one by one: ~20 ms, 10% of a
# `validate`). build, train and export end normally (torch's exit handlers run).
# They also run with the cycle collector's first generation at QUICK_GC_THRESHOLD allocations
# instead of 700: what they allocate (imported modules, classes, the spec's tree) stays alive
# until the end and makes almost no cycles, so the frequent collections only rescanned it
# (~12 ms of a `validate`, a third of a 10,000-block one). Garbage cycles are still collected.
QUICK_EXIT = frozenset({"validate", "summary", "codegen", "draw", "list", "schema"})
QUICK_GC_THRESHOLD = 100_000


def main(argv: list[str] | None = None, *, program: bool = False) -> int:
    """Run a command; `program`: this is the whole process (archc.__main__), which a quick
    command then runs with fewer collections and ends itself (QUICK_EXIT)."""
    thresholds = gc.get_threshold()
    if program:
        gc.set_threshold(QUICK_GC_THRESHOLD, *thresholds[1:])
    try:
        args = parser().parse_args(argv)  # --max-memory's parser imports the compiler
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.command not in QUICK_EXIT:  # build, train, export: Python's usual collector
        gc.set_threshold(*thresholds)
    code = _run(args)
    if program and args.command in QUICK_EXIT:
        _exit_now(code)
    return code


def _exit_now(code: int) -> NoReturn:
    """End the process with `code` once standard output and error are flushed."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (`archc summary SPEC | head`): as in the command
        code = code or 1
    except OSError:  # nowhere to write it: let Python's own exit report that
        raise SystemExit(code) from None
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def _run(args: argparse.Namespace) -> int:
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
    except BrokenPipeError:  # e.g. `archc summary SPEC | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:  # the file system said no: a missing folder, permissions, a full disk
        if args.debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"archc: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except MemoryError:
        if args.debug:
            raise
        print("archc: error: out of memory (see --max-memory for archc build)", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug in archc, not in the spec
        if args.debug:
            raise
        text = f": {str(exc).strip().splitlines()[0][:300]}" if str(exc).strip() else ""
        print(
            f"archc: internal error: {type(exc).__name__}{text} (rerun with --debug for a traceback)",
            file=sys.stderr,
        )
        return 1

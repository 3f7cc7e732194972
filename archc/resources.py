"""Static memory estimates, so `build` refuses a model that cannot fit instead of being killed.

Everything here reads the inferred tree (pure Python, no torch) and is exact where it can be:

- parameters: every trainable element (the same count as `Spec.param_count`), float32;
- buffers: what each primitive says it keeps (`Primitive.buffer_bytes`: batch norm's running
  statistics and batch counter);
- activations: the tensors a training forward pass keeps for backward, estimated as the input
  plus the output of every layer that makes a new tensor (each primitive whose `new_tensor`
  is set: all but identity and flatten, which are views), plus what each combinator makes
  (`Combinator.activations`: a residual sum, a concatenation, a gate's product), times the batch size,
  float32. In-place activations are counted as if they were not (an upper bound); a forward
  pass under `torch.no_grad()` needs less, since it frees tensors as it goes;
- working memory: temporaries a layer allocates besides its output (`Primitive.working_elements`,
  e.g. local response norm's padded copy of its input). They live only while their layer runs,
  so the largest one is added to the activations, not their sum.

The default limit is half of this machine's memory (physical memory, or the container's
memory limit when that is lower), read with `os.sysconf` and the cgroup files, no psutil.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from archc.combinators import COMBINATORS
from archc.compiler import Spec
from archc.errors import SpecError
from archc.ir import Node
from archc.primitives import PRIMITIVES

BYTES_PER_VALUE = 4  # float32
DEFAULT_FRACTION = 0.5  # of this machine's memory
FALLBACK_MEMORY = 8 << 30  # when the machine's memory cannot be read


@dataclass(frozen=True)
class Estimate:
    """Bytes a model needs: to exist (parameters, buffers) and to run a forward pass."""

    params: int  # parameter elements
    buffer_bytes: int
    activations: int  # activation elements for one sample
    batch: int = 1
    working: int = 0  # elements of the largest temporary one layer allocates, per sample

    @property
    def param_bytes(self) -> int:
        return self.params * BYTES_PER_VALUE

    @property
    def activation_bytes(self) -> int:
        return (self.activations + self.working) * self.batch * BYTES_PER_VALUE

    @property
    def build_bytes(self) -> int:
        """What constructing the module allocates: parameters and buffers."""
        return self.param_bytes + self.buffer_bytes

    @property
    def total_bytes(self) -> int:
        return self.build_bytes + self.activation_bytes

    def describe(self) -> str:
        return (
            f"about {human(self.total_bytes)} (parameters {human(self.param_bytes)}, "
            f"buffers {human(self.buffer_bytes)}, activations {human(self.activation_bytes)} "
            f"at batch {self.batch})"
        )


def human(n: int | float) -> str:
    """Bytes for people: 1.5 GiB, 320 MiB, 12 KiB, 7 B (huge values in powers of ten)."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            if value >= 10_000:
                mantissa, exponent = f"{value:.2e}".split("e")
                return f"{mantissa}e{int(exponent)} {unit}"
            return f"{value:.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{int(n)} B"


def _elements(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _costs(node: Node) -> tuple[int, int, int, int]:
    """(parameter elements, buffer bytes, activation elements per sample, the largest
    primitive's temporaries per sample) of a node's subtree, in one walk (`build` runs it
    before every build)."""
    params = buffers = activations = working = 0
    stack = [node]
    while stack:
        node = stack.pop()
        prim = PRIMITIVES.get(node.kind)
        if prim is None:
            activations += COMBINATORS[node.kind].activations(node)
            stack += node.children
            continue
        params += node.param_count
        buffers += prim.buffer_bytes(node.params, node.in_shape)
        if prim.new_tensor:
            activations += _elements(node.out_shape)
        working = max(working, prim.working_elements(node.params, node.in_shape))
    return params, buffers, activations, working


def node_cost(node: Node) -> tuple[int, int, int]:
    """(parameter elements, buffer bytes, activation elements per sample) of a node's subtree."""
    return _costs(node)[:3]


def estimate(spec: Spec, batch: int = 1) -> Estimate:
    """Memory to build `spec` and to run one training forward pass at `batch`."""
    params, buffers, activations, working = _costs(spec.tree)
    return Estimate(params, buffers, activations + _elements(spec.input_shape), batch, working)


def working_elements(node: Node) -> int:
    """Elements of the temporaries a primitive allocates while it runs, per sample."""
    return node.primitive.working_elements(node.params, node.in_shape) if node.is_primitive else 0


def _cgroup_limit() -> int | None:
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # "max" or a huge number: no limit
            return int(text)
    return None


def machine_memory() -> int | None:
    """Bytes of memory this process can use: physical memory, or a lower cgroup limit."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        physical = None
    if physical is not None and physical <= 0:
        physical = None
    limits = [m for m in (physical, _cgroup_limit()) if m is not None]
    return min(limits) if limits else None


def default_limit() -> int:
    memory = machine_memory()
    return int(memory * DEFAULT_FRACTION) if memory else FALLBACK_MEMORY


def default_limit_reason() -> str:
    memory = machine_memory()
    if memory is None:
        return "the default when this machine's memory cannot be read"
    return f"half of this machine's {human(memory)}"


_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_UNLIMITED = ("none", "unlimited", "off", "inf")


def parse_size(text: str) -> int | None:
    """'8GiB', '512M', '2.5 GB', '1000000' (bytes) -> bytes; 'none' / 'unlimited' -> None.

    K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024; KB/MB/GB/TB are powers of 1000.
    """
    if text.strip().lower() in _UNLIMITED:
        return None
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not a size like 8GiB, 512MiB, 2GB or 'none'")
    value = float(match.group(1)) * _UNITS[unit]
    if value < 1 or not math.isfinite(value):
        raise ValueError(f"{text!r} is not a positive size")
    return int(value)


class ResourceError(SpecError):
    """A model that would not fit in the memory limit (exit status 1)."""


def _leaf_bytes(leaf: Node, batch: int) -> int:
    params, buffers, activations = node_cost(leaf)
    per_sample = activations + working_elements(leaf)
    return params * BYTES_PER_VALUE + buffers + per_sample * batch * BYTES_PER_VALUE


def _largest(node: Node, batch: int) -> Node | None:
    """The primitive layer needing the most memory, to point the error at."""
    best, best_bytes = None, -1
    for leaf in node.walk():
        if not leaf.is_primitive:
            continue
        size = _leaf_bytes(leaf, batch)
        if size > best_bytes:
            best, best_bytes = leaf, size
    return best


def check(spec: Spec, limit: int | str | None = "auto", *, batch: int = 1) -> Estimate:
    """Raise ResourceError if building `spec` (and a forward pass at `batch`) needs more than
    `limit` bytes. `limit`: "auto" (half this machine's memory), bytes, a size string like
    "8GiB", or None for no limit. Returns the estimate."""
    auto = limit == "auto"
    if isinstance(limit, str):
        limit = default_limit() if auto else parse_size(limit)
    found = estimate(spec, batch)
    if limit is None or found.total_bytes <= limit:
        return found
    why = default_limit_reason() if auto else "the limit you set"
    largest = _largest(spec.tree, batch)
    where = ""
    if largest is not None and largest.path:
        size = _leaf_bytes(largest, batch)
        where = f"; its largest layer is {largest.path} ({human(size)})"
    message = (
        f"model {spec.name!r} needs {found.describe()}, more than the {human(limit)} limit "
        f"({why}){where}. Nothing was allocated; shrink the model or raise the limit with "
        "--max-memory (max_memory= in the API)"
    )
    location = largest.location if largest is not None else spec.tree.location
    field = largest.field_path if largest is not None else spec.tree.field_path
    raise ResourceError(message, location, field)

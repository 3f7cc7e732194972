"""Python's cycle collector paused while archc builds a large structure of live objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """Expansion and code generation allocate many objects that all stay alive until the work
    is done, and make (almost) no garbage cycles. The collector, triggered by the allocations,
    would only rescan them: at 10,000 blocks its full collections over the growing structures
    took 40% of codegen's time, a share that grows with the network (time grows faster than
    linearly). Paused, the work stays linear; cycles made meanwhile are collected by the next
    collection after it."""
    if not gc.isenabled():  # paused already (nested), or by the caller: leave it so
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()

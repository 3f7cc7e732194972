"""Python's cycle collector paused while archc builds a large structure of live objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache


@contextmanager
def paused(*, keep: bool = False) -> Iterator[None]:
    """Expansion and code generation allocate many objects that all stay alive until the work
    is done, and make (almost) no garbage cycles. The collector, triggered by the allocations,
    would only rescan them: at 10,000 blocks its full collections over the growing structures
    took 40% of codegen's time, a share that grows with the network (time grows faster than
    linearly). Paused, the work stays linear; cycles made meanwhile are collected by the next
    collection after it.

    `keep`: what the work made is kept (the compiled tree outlives the call). Resumed, the
    collector would scan every object made meanwhile at its next young collection, then again
    in the middle generation, only to find them alive (at 10,000 blocks: 210,000 objects, a
    third of `archc.loads`' time); they are moved to the oldest generation instead (`promote`),
    where only full collections look at them, as they would at every long-lived object."""
    if not gc.isenabled():  # paused already (nested), or by the caller: leave it so
        yield
        return
    gc.disable()
    try:
        yield
        if keep:
            promote()
    finally:
        gc.enable()


def promote() -> None:
    """Move every object the collector tracks to its oldest generation, unscanned (gc.freeze
    moves them all to the permanent generation, gc.unfreeze from there to the oldest) and
    restart the young generation's count. Left alone when the program uses the permanent
    generation itself (`gc.freeze()` before forking workers): unfreezing would undo that, and
    on a free-threaded build, whose collector has no generations (freezing there marks every
    object of the heap, not a constant-time move of lists)."""
    if gc.get_freeze_count() or _free_threaded():
        return
    gc.freeze()
    gc.unfreeze()


@lru_cache(maxsize=1)
def _free_threaded() -> bool:
    import sysconfig  # here, not at import: `archc` starts without it

    return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
